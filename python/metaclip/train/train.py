"""The training loop: build everything from a :class:`TrainConfig`, train, evaluate, save.

Launch with ``torchrun --nproc_per_node N -m metaclip.train train config.toml --set k=v``;
a plain ``python -m metaclip.train ...`` is a world of one on the same code path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from metaclip.exceptions import MetaclipError
from metaclip.train import checkpoint as ckpt
from metaclip.train import naflex, siglip2
from metaclip.train.config import (
    ConfigError,
    LossConfig,
    OptimConfig,
    TrainConfig,
    config_to_dict,
    local_crop_size,
)
from metaclip.train.data import ResumableLoader, ShardStream, auto_workers, expand_shards
from metaclip.train.distributed import (
    all_reduce_mean,
    full_tensor,
    init_distributed,
    parallelize,
    shutdown,
    world_size,
)
from metaclip.train.evaluate import MetricsLogger, evaluate
from metaclip.train.images import normalize
from metaclip.train.loss import clamp_logit_scale, clip_loss
from metaclip.train.model import build_model, param_groups
from metaclip.train.samples import SKIPS
from metaclip.train.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


class NonFiniteLossError(MetaclipError, FloatingPointError):
    """The loss became NaN or infinite; the run stops instead of training on garbage."""


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def reconcile_text_config(cfg: TrainConfig, tokenizer) -> TrainConfig:
    """Make the text tower agree with the tokenizer (pooling, EOS and pad ids, vocab size)."""
    text = cfg.model.text
    if tokenizer.vocab_size > text.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} ids but model.text."
            f"vocab_size is {text.vocab_size}"
        )
    if text.pool == "eos" and text.eos_id not in (None, tokenizer.eos_id):
        log.warning(
            "text.eos_id %s replaced by the tokenizer's EOS id %d", text.eos_id, tokenizer.eos_id
        )
    text = dataclasses.replace(
        text, pool=tokenizer.pool, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id
    )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text=text))


def forward_backward(
    model,
    micro: list[tuple],
    kind: str,
    aux: list[siglip2.AuxInputs] | None = None,
    weights: LossConfig | None = None,
):
    """Loss over the union of the (images, tokens) micro-batches, gradients accumulated.

    One micro-batch is the plain step. Several follow GradCache: a no-grad forward of each
    caches its features; the loss over all of them (gathered over ranks as usual) gives the
    gradient of every feature; then each micro-batch is forwarded again with grad and
    back-propagates its slice of those feature gradients. Scale and bias enter the loss once,
    so their gradient is passed back through the first re-forward only. The result equals the
    full batch's gradients (the model has no dropout) with one micro-batch's activations held.

    ``aux`` (:func:`siglip2.split_aux`, one per micro-batch) adds the auxiliary losses,
    weighted by ``weights``: they are per sample, each part divided by the whole batch's
    count, so each re-forward back-propagates its own and their sum is the whole batch's.
    """
    parts: list = aux or [None] * len(micro)

    def extra(out) -> torch.Tensor:  # the weighted auxiliary losses, if the model gave them
        if len(out) == 4:
            return torch.zeros((), device=out[0].device)
        return siglip2.aux_loss(out[4], weights).to(out[0].device)

    if len(micro) == 1:
        out = model(*micro[0], parts[0])
        loss = clip_loss(out[:4], kind) + extra(out)
        loss.backward()
        return loss.detach()
    with torch.no_grad():
        outs = [model(images, tokens) for images, tokens in micro]
    img, txt = (torch.cat([o[i] for o in outs]).requires_grad_() for i in (0, 1))
    scale = outs[0][2].detach().requires_grad_()
    bias = None if outs[0][3] is None else outs[0][3].detach().requires_grad_()
    loss = clip_loss((img, txt, scale, bias), kind)
    loss.backward()
    sizes = [tokens.shape[0] for _, tokens in micro]  # images may be packed (NaFlex)
    g_img, g_txt = img.grad.split(sizes), txt.grad.split(sizes)  # type: ignore[union-attr]
    total = loss.detach()
    for j, (images, tokens) in enumerate(micro):
        out = model(images, tokens, parts[j])
        own = extra(out)
        surrogate = (out[0] * g_img[j]).sum() + (out[1] * g_txt[j]).sum() + own
        if j == 0:
            surrogate = surrogate + (out[2] * scale.grad).sum()
            if bias is not None:
                surrogate = surrogate + (out[3] * bias.grad).sum()
        surrogate.backward()
        total = total + own.detach()
    return total


def _images(batch: dict, device, cls: bool):
    """The model's image input: normalized images, or packed patches (NaFlex)."""
    if "patches" in batch:
        return naflex.batch_input(batch, device, cls)
    return normalize(batch["images"].to(device, non_blocking=True))  # uint8 from the loader


def train_step(
    model, batches: list[dict], optimizer, scheduler, cfg: TrainConfig, device
) -> torch.Tensor:
    """One optimizer step over ``optim.accum_steps`` micro-batches; returns this rank's loss
    as a detached tensor (not synced to the host: see :class:`LossMonitor`)."""
    micro = [
        (
            _images(b, device, cfg.model.vision.pool == "cls"),
            b["tokens"].to(device, non_blocking=True),
        )
        for b in batches
    ]
    optimizer.zero_grad(set_to_none=True)
    step = scheduler.last_epoch  # steps done
    aux = None
    if siglip2.uses_aux(cfg):  # decoder / distillation
        aux = siglip2.step_aux(model, batches, micro, cfg, step, device)
    loss = forward_backward(model, micro, cfg.model.loss, aux, cfg.loss)
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    clamp_logit_scale(model)
    siglip2.after_step(model, cfg, step)
    return loss


class LossMonitor:
    """Remembers the first step with a non-finite loss without a host sync per step.

    :meth:`check` (at log and checkpoint steps) syncs once: all ranks agree, raise
    :class:`NonFiniteLossError` naming that step, and return the mean loss over ranks.
    So a NaN stops the run at the next log or checkpoint step, before anything is saved.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0 = none

    def update(self, loss: torch.Tensor, step: int) -> None:
        new = (self.first_bad == 0) & ~torch.isfinite(loss).all()
        self.first_bad = torch.where(new, step, self.first_bad)

    def check(self, loss: torch.Tensor, step: int) -> float:
        # 0 means "none", so the earliest bad step over ranks is the min of the others
        first = torch.where(self.first_bad == 0, step + 1, self.first_bad)
        if world_size() > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        value = all_reduce_mean(loss).item()
        if int(first.item()) <= step:
            raise NonFiniteLossError(
                f"loss is {value if not math.isfinite(value) else 'non-finite'} at step "
                f"{int(first.item())} (seen at step {step}): stopping. Lower optim.lr, raise "
                "optim.warmup_steps, set optim.grad_clip, or check the data."
            )
        return value


def build_optimizer(model, o: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the recipe's groups; the fused kernel on CUDA (one launch per step)."""
    return torch.optim.AdamW(
        param_groups(model, o.weight_decay),
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        fused=device.type == "cuda" or None,
    )


def _load_probabilities(path: str) -> tuple[np.ndarray, dict[str, int] | None]:
    """The entry probabilities for online curation (a 1-D ``.npy``; never a pickle), and
    the language offsets from the ``probs.json`` beside it, if there is one."""
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"cannot read data.probabilities {path}: {msg}") from None
    if not isinstance(probs, np.ndarray) or probs.ndim != 1 or probs.dtype.kind not in "fiu":
        raise ConfigError(f"data.probabilities {path} must hold a 1-D numeric array")
    side = Path(path).with_suffix(".json")
    if not side.exists():
        return probs, None
    try:
        offsets = json.loads(side.read_text())["language_offsets"]
        offsets = {str(k): int(v) for k, v in offsets.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot read {side} (language_offsets): {e}") from None
    return probs, offsets


def _skip_metrics(skipped: dict, device) -> dict[str, float]:
    """Samples and shards the loaders skipped, summed over ranks (one all-reduce)."""
    counts = torch.tensor([float(skipped.get(k, 0)) for k in SKIPS], device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    return {f"data/skipped_{k}": float(v) for k, v in zip(SKIPS, counts.tolist(), strict=True)}


def run(cfg: TrainConfig) -> dict:
    """Train as configured; returns a summary (final step, last loss, last eval metrics)."""
    info = init_distributed(cfg.device, mesh_shape=cfg.distributed.mesh_shape)
    try:
        return _run(cfg, info)
    finally:
        shutdown()


def _run(cfg: TrainConfig, info) -> dict:
    out = Path(cfg.output_dir)
    device = info.device
    tokenizer = build_tokenizer(cfg.tokenizer, cfg.model.text.context_length)
    cfg = reconcile_text_config(cfg, tokenizer)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))

    torch.manual_seed(cfg.seed)  # identical init on every rank before sharding
    model = build_model(cfg.model, device)
    if cfg.init_from:  # before sharding: every rank loads the whole file
        ckpt.load_init_from(model, cfg.init_from)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    model.set_attention_backend(cfg.model.attention, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.1fM parameters", cfg.model.preset, n_params / 1e6)
    parallelize(
        model,
        info.mesh,
        precision=cfg.precision,
        activation_checkpointing=cfg.activation_checkpointing,
        checkpoint_every=cfg.activation_checkpointing_every,
        compile=cfg.compile,
    )
    o = cfg.optim
    optimizer = build_optimizer(model, o, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(o.warmup_steps, cfg.steps, o.min_lr_ratio)
    )

    step, data_state = 0, None
    resume = (
        ckpt.find_latest(out)
        if cfg.resume == "auto"
        else (None if cfg.resume == "none" else Path(cfg.resume))
    )
    if resume is not None:
        step, data_state = ckpt.load(resume, model=model, optimizer=optimizer, scheduler=scheduler)
    d = cfg.data
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = d.num_workers if d.num_workers >= 0 else auto_workers(local_world)
    streams = d.streams or max(workers, 1)
    if data_state is not None and (data_state["world"], data_state["num_streams"]) != (
        info.world,
        streams,
    ):
        raise ConfigError(
            f"{resume} was saved with {data_state['world']} ranks x "
            f"{data_state['num_streams']} data streams; resume with the same (data.streams)"
        )
    probs, offsets = _load_probabilities(d.probabilities) if d.probabilities else (None, None)
    dataset = ShardStream(
        expand_shards(d.train_shards),
        rank=info.rank,
        world=info.world,
        num_workers=workers,
        batch_size=d.batch_size,
        tokenizer=tokenizer,
        image_size=cfg.model.vision.image_size,
        seed=cfg.seed,
        shuffle=d.shuffle,
        augment=d.augment,
        probs=probs,
        curation_seed=d.curation_seed,
        state=data_state,
        streams=streams,
        shuffle_window=d.shuffle_window,
        language_offsets=offsets,
        local_crops=d.local_crops,
        local_crop_size=local_crop_size(d, cfg.model.vision) if d.local_crops else 0,
        naflex_seq_lens=d.naflex_seq_lens or (),
        patch_size=cfg.model.vision.patch_size,
    )
    pin = device.type == "cuda"
    skipped = (data_state or {}).get("skipped")
    loader = ResumableLoader(dataset, workers, d.start_method, pin_memory=pin, skipped=skipped)
    log.info("data: %d workers, %d streams per rank", workers, streams)
    logger = MetricsLogger(out, enabled=info.is_main)
    has_eval = bool(cfg.eval.zeroshot_shards or cfg.eval.retrieval_shards)
    stop = cfg.stop_at or cfg.steps
    summary: dict = {"start_step": step, "loss": None, "eval": {}}
    saved_at, t0, pairs = step, time.time(), 0
    monitor = LossMonitor(device)

    def save(at: int) -> None:
        state = loader.state_dict()
        ckpt.save(
            out, model=model, optimizer=optimizer, scheduler=scheduler, step=at, data_state=state
        )

    try:
        model.train()
        while step < stop:
            batches = [next(loader) for _ in range(cfg.optim.accum_steps)]
            loss_t = train_step(model, batches, optimizer, scheduler, cfg, device)
            step += 1
            monitor.update(loss_t, step)
            pairs += sum(b["tokens"].shape[0] for b in batches) * info.world
            if step % cfg.log_every == 0 or step == stop:
                summary["loss"] = loss = monitor.check(loss_t, step)
                dt = time.time() - t0
                logger.log(
                    step,
                    {
                        "train/loss": loss,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/logit_scale": full_tensor(model.logit_scale).exp().item(),
                        "train/pairs_per_s": pairs / max(dt, 1e-9),
                        **_skip_metrics(loader.skipped, device),
                    },
                )
                log.info("step %d/%d loss %.4f (%.1f pairs/s)", step, cfg.steps, loss, pairs / dt)
                t0, pairs = time.time(), 0
            periodic = cfg.eval.every_steps and step % cfg.eval.every_steps == 0
            if has_eval and periodic and step != cfg.steps:
                summary["eval"] = evaluate(model, tokenizer, cfg, device, dtype)
                logger.log(step, summary["eval"])
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                monitor.check(loss_t, step)  # never save weights a NaN has touched
                save(step)
                saved_at = step
        if saved_at != step:
            save(step)
        if step == cfg.steps:
            if has_eval:
                summary["eval"] = evaluate(model, tokenizer, cfg, device, dtype)
                logger.log(step, summary["eval"])
                log.info("eval at step %d: %s", step, summary["eval"])
            if cfg.export:
                ckpt.export_consolidated(model, out / "open_clip_model.pt")
    finally:
        loader.close()
        logger.close()
    summary["step"] = step
    return summary
