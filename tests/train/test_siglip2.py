"""SigLIP 2's options: MAP head, LocCa decoder, EMA self-distillation (config, model, step)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import tiny_config

from metaclip.train.checkpoint import to_open_clip
from metaclip.train.config import (
    ConfigError,
    DecoderConfig,
    DistillConfig,
    ModelConfig,
    config_from_dict,
    model_preset,
)
from metaclip.train.data import ShardStream, expand_shards
from metaclip.train.decoder import caption_loss
from metaclip.train.distill import distill_start, teacher_momentum
from metaclip.train.images import normalize
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model, param_groups
from metaclip.train.siglip2 import aux_loss, draw_aux
from metaclip.train.tokenizer import build_tokenizer
from metaclip.train.train import build_optimizer, lr_lambda, train_step


def tiny(pool: str = "cls", decoder: int = 0, distill: float = 0.0, **dec) -> ModelConfig:
    cfg = model_preset("test-tiny")
    return dataclasses.replace(
        cfg,
        loss="sigmoid",
        vision=dataclasses.replace(cfg.vision, pool=pool),
        text=dataclasses.replace(cfg.text, pool="eos", eos_id=3),
        decoder=DecoderConfig(layers=decoder, width=32, heads=2, **dec),
        distill=DistillConfig(start_fraction=distill),
    )


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- MAP head ------------------------------------------------------------------------------


def test_cls_default_is_unchanged():
    torch.manual_seed(0)
    model = build_model(model_preset("test-tiny"))
    keys = set(model.state_dict())
    assert not any(
        k.startswith(("decoder.", "teacher.", "visual.attn_pool", "mask_token")) for k in keys
    )
    assert model.visual.positional_embedding.shape == (17, 64)  # 16 patches + class token
    images = torch.randn(3, 3, 32, 32)
    pooled, tokens = model.visual.forward_tokens(images)
    assert tokens.shape == (3, 16, 64)
    torch.testing.assert_close(pooled, model.visual(images), rtol=1e-5, atol=1e-6)
    assert to_open_clip(model.state_dict()).keys() == keys


def test_map_head_shapes_and_parameter_count():
    w, patches = 64, 16
    cls_model, map_model = build_model(tiny("cls")), build_model(tiny("map"))
    # q, kv, out_proj (+biases), probe, LayerNorm, MLP (ratio 4); minus class token and
    # its position row
    head = (w * w + w) + (2 * w * w + 2 * w) + (w * w + w) + w + 2 * w
    head += (w * 4 * w + 4 * w) + (4 * w * w + w)
    assert n_params(map_model) - n_params(cls_model) == head - w - w
    assert n_params(map_model.visual.attn_pool) == head
    assert map_model.visual.class_embedding is None
    assert map_model.visual.positional_embedding.shape == (patches, w)
    images = torch.randn(2, 3, 32, 32)
    pooled, tokens = map_model.visual.forward_tokens(images)
    assert pooled.shape == (2, 32) and tokens.shape == (2, patches, w)
    torch.testing.assert_close(map_model.visual(images), pooled)
    # a smaller crop (local view) runs on the resized position grid
    small, small_tokens = map_model.visual.forward_tokens(torch.randn(2, 3, 16, 16))
    assert small.shape == (2, 32) and small_tokens.shape == (2, 4, w)
    # the probe pools over every token: changing one patch changes the embedding
    images2 = images.clone()
    images2[:, :, :8, :8] += 1
    assert not torch.allclose(map_model.visual(images2), pooled)


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"model.vision.pool": "mean"}, "vision.pool"),
        ({"model.decoder.layers": 1, "model.decoder.width": 30, "model.decoder.heads": 4}, "width"),
        ({"model.decoder.parallel_prob": 1.5}, "parallel_prob"),
        ({"model.distill.start_fraction": 0.2}, "local_crops"),
        ({"model.distill.mask_ratio": 1.0}, "mask_ratio"),
        ({"data.local_crops": 2, "data.local_crop_size": 12}, "local_crop_size"),
        ({"loss.caption_weight": -1.0}, "caption_weight"),
    ],
)
def test_bad_siglip2_values_are_config_errors(tmp_path, over, match):
    raw = tiny_config({"train": "x.tar", "tokenizer": "sp.model"}, tmp_path, **over)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


# --- decoder -------------------------------------------------------------------------------


def _reference_caption_loss(dec, memory, tokens, pad_id) -> torch.Tensor:
    """Teacher forcing with explicit loops: for each row and position t, run the decoder on
    the prefix [start, t_0 .. t_{t-1}] alone and score t_t at its last position."""
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        mem = dec.memory_proj(memory[b : b + 1])
        for t in range(tokens.shape[1]):
            target = int(tokens[b, t])
            if target == pad_id:
                continue
            x = torch.cat([dec.start_token[None], dec.token_embedding(tokens[b, :t])])
            x = (x + dec.positional_embedding[: t + 1])[None]
            causal = torch.ones(t + 1, t + 1, dtype=torch.bool).tril()
            for block in dec.resblocks:
                x = block(x, mem, causal)
            logits = dec.head(dec.ln_final(x))[0, -1]
            total = total - torch.log_softmax(logits, -1)[target]
            count += 1
    return total / count


def test_teacher_forcing_loss_equals_a_loop_reference():
    torch.manual_seed(0)
    model = build_model(tiny("map", decoder=2))
    dec = model.decoder
    assert dec is not None
    with torch.no_grad():  # a non-trivial head (it starts at zero)
        dec.head.weight.normal_(std=0.3)
    tokens = torch.randint(4, 999, (3, 16))
    tokens[0, 9:] = 0  # padding is ignored
    tokens[1, 4:] = 0
    memory = torch.randn(3, 16, 64)
    got = caption_loss(dec(memory, tokens), tokens, pad_id=0)
    ref = _reference_caption_loss(dec, memory, tokens, pad_id=0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert got.item() > 1.0  # not trivially zero
    # the zero-initialized head predicts uniformly: loss = ln(vocab)
    fresh = build_model(tiny("map", decoder=1)).decoder
    assert fresh is not None
    assert math.isclose(
        caption_loss(fresh(memory, tokens), tokens, 0).item(), math.log(1000), rel_tol=1e-5
    )


def test_parallel_rows_see_only_mask_tokens():
    torch.manual_seed(0)
    dec = build_model(tiny("cls", decoder=2)).decoder
    assert dec is not None
    with torch.no_grad():
        dec.head.weight.normal_(std=0.3)
    memory = torch.randn(2, 16, 64)
    a, b = torch.randint(4, 999, (2, 16)), torch.randint(4, 999, (2, 16))
    par = torch.tensor([True, False])
    la, lb = dec(memory, a, par), dec(memory, b, par)
    torch.testing.assert_close(la[0], lb[0])  # parallel row: independent of the caption
    assert not torch.allclose(la[1], lb[1])  # teacher-forced row: reads the caption


# --- distillation --------------------------------------------------------------------------


def test_momentum_schedule_and_start():
    d = DistillConfig(start_fraction=0.2, momentum=0.99)
    assert distill_start(d, 100) == 80
    assert math.isclose(teacher_momentum(d, 80, 100), 0.99)
    assert math.isclose(teacher_momentum(d, 99, 100), 1.0)
    assert 0.99 < teacher_momentum(d, 90, 100) < 1.0
    assert distill_start(DistillConfig(), 100) == 100  # off


def _loader(shapes, batch: int, local: int):
    tok = build_tokenizer(config_from_dict(tiny_config(shapes, "x")).tokenizer, 16)
    ds = ShardStream(
        expand_shards(shapes["train"]),
        rank=0,
        world=1,
        num_workers=0,
        batch_size=batch,
        tokenizer=tok,
        image_size=32,
        seed=0,
        local_crops=local,
        local_crop_size=16,
    )
    return iter(ds)


def _run_cfg(shapes, tmp_path, steps: int, **over):
    over = {
        "model.loss": "sigmoid",
        "model.vision.pool": "map",
        "model.decoder.layers": 1,
        "model.decoder.width": 64,
        "model.decoder.heads": 4,
        "model.distill.start_fraction": 1.0,
        "data.local_crops": 2,
        "data.local_crop_size": 16,
        "optim.lr": 2e-3,
        **over,
    }
    return config_from_dict(tiny_config(shapes, tmp_path, steps=steps, **over))


def test_teacher_has_no_gradient_and_follows_the_ema_rule(shapes, tmp_path):
    cfg = _run_cfg(shapes, tmp_path, steps=10)
    torch.manual_seed(0)
    model = build_model(
        dataclasses.replace(cfg.model, text=dataclasses.replace(cfg.model.text, pad_id=0))
    )
    optim = build_optimizer(model, cfg.optim, torch.device("cpu"))
    in_optim = {id(p) for g in optim.param_groups for p in g["params"]}
    assert model.teacher is not None
    assert not any(id(p) in in_optim for p in model.teacher.parameters())
    assert {id(p) for g in param_groups(model, 0.1) for p in g["params"]} == in_optim
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(2, cfg.steps, 0.0))
    it = _loader(shapes, 8, 2)
    with torch.no_grad():  # the teacher differs from the student before the phase starts
        for p in model.teacher.parameters():
            p.add_(0.5)
    for step in range(3):
        student_before = {k: v.clone() for k, v in model.visual.named_parameters()}
        teacher_before = {k: v.clone() for k, v in model.teacher.named_parameters()}
        train_step(model, [next(it)], optim, sched, cfg, torch.device("cpu"))
        m = teacher_momentum(cfg.model.distill, step, cfg.steps)
        assert m < 1.0
        for name, t in model.teacher.named_parameters():
            assert t.grad is None and not t.requires_grad
            s = dict(model.visual.named_parameters())[name]
            # step 0 starts the phase: the teacher is first a copy of the student
            base = student_before[name] if step == 0 else teacher_before[name]
            assert torch.equal(t, base.clone().mul_(m).add_(s, alpha=1 - m)), name
        moved = max(
            (s - student_before[k]).abs().max().item() for k, s in model.visual.named_parameters()
        )
        assert moved > 0
    assert model.mask_token is not None and model.mask_token.grad is not None


@torch.no_grad()
def _aux_losses(model, batch, cfg) -> dict[str, float]:
    images, tokens = normalize(batch["images"]), batch["tokens"]
    aux = draw_aux(model, images.shape[0], True, torch.Generator().manual_seed(123))
    aux.local_images = normalize(batch["local_images"])
    img, txt, scale, bias, losses = model(images, tokens, aux)
    out = {k: v.item() for k, v in losses.items()}
    out["sigmoid"] = clip_loss((img, txt, scale, bias), "sigmoid").item()
    out["total"] = out["sigmoid"] + aux_loss(losses, cfg.loss).item()
    return out


def test_map_decoder_and_distillation_losses_go_down(shapes, tmp_path):
    cfg = _run_cfg(shapes, tmp_path, steps=60, **{"data.batch_size": 32})
    torch.manual_seed(0)
    model = build_model(
        dataclasses.replace(cfg.model, text=dataclasses.replace(cfg.model.text, pad_id=0))
    )
    optim = build_optimizer(model, cfg.optim, torch.device("cpu"))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(2, cfg.steps, 0.0))
    it = _loader(shapes, 32, 2)
    held = next(it)
    before = _aux_losses(model, held, cfg)
    for _ in range(cfg.steps):
        train_step(model, [next(it)], optim, sched, cfg, torch.device("cpu"))
    after = _aux_losses(model, held, cfg)
    print(before, after)
    for k in ("sigmoid", "caption", "masked", "total"):
        assert after[k] < before[k], (k, before, after)


def test_two_rank_fsdp_with_auxiliary_losses_matches_single_process(tmp_path):
    import json
    from pathlib import Path

    from conftest import torchrun

    out = tmp_path / "aux.json"
    torchrun([str(Path(__file__).parent / "fsdp_siglip2_worker.py"), str(out)], nproc=2)
    r = json.loads(out.read_text())
    print(r)
    assert r["world"] == 2 and set(r["aux"]) == {"caption", "distill", "masked"}
    assert r["teacher_grads"] == 0  # neither run gives the teacher a gradient
    assert r["max_grad"] > 1e-3
    assert r["loss_diff"] < 1e-5 and r["max_grad_diff"] < 1e-5, r
    assert r["accum_loss_diff"] < 1e-5 and r["accum_max_grad_diff"] < 1e-5, r
    assert r["ema_diff"] < 1e-6, r


def test_siglip2_preset_and_example_config(shapes, tmp_path):
    from pathlib import Path

    from metaclip.train.config import load_config

    m = model_preset("ViT-B-16-siglip2")
    assert (m.loss, m.vision.pool, m.vision.patch_size) == ("sigmoid", "map", 16)
    assert m.decoder.layers > 0 and m.distill.start_fraction == 0.2
    example = Path(__file__).parents[2] / "docs/examples/siglip2-b16.toml"
    cfg = load_config(example, [f"data.train_shards={shapes['train']}"])
    assert cfg.model == m  # the example spells out the preset
    assert cfg.data.local_crops == 2 and cfg.loss.masked_weight == 0.25
    big = build_model(cfg.model, device="meta")
    assert big.teacher is not None and big.decoder is not None


# --- accumulation --------------------------------------------------------------------------


def _accum_setup(pool: str):
    """A model in its distillation phase (teacher apart from the student, decoder head not
    0) and two uint8 micro-batches whose captions differ in padding."""
    raw = tiny_config({"train": "x.tar", "tokenizer": "sp.model"}, "x", steps=10)
    over = {"model.loss": "sigmoid", "model.vision.pool": pool, "model.decoder.layers": 1}
    over |= {"model.decoder.width": 32, "model.decoder.heads": 2}
    over |= {"model.decoder.parallel_prob": 0.5, "model.distill.start_fraction": 1.0}
    over |= {"data.local_crops": 2, "data.local_crop_size": 16, "loss.masked_weight": 0.5}
    cfg = config_from_dict(raw, [f"{k}={v}" for k, v in over.items()])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.decoder.head.weight.normal_(std=0.1)
    g = torch.Generator().manual_seed(1)
    batches = []
    for pad_from in (3, 16):  # 4 x 3 targets, then 4 x 16: a plain 1/2 weighting is wrong
        tokens = torch.randint(1, 999, (4, 16), generator=g)
        tokens[:, pad_from:] = 0
        images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
        local = torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8, generator=g)
        batches.append({"images": images, "tokens": tokens, "local_images": local})
    return cfg, model, batches


def _accum_grads(cfg, model, batches, step: int = 3):
    from metaclip.train.siglip2 import step_aux
    from metaclip.train.train import forward_backward

    micro = [(normalize(b["images"]), b["tokens"]) for b in batches]
    aux = step_aux(model, batches, micro, cfg, step, torch.device("cpu"))
    loss = forward_backward(model, micro, cfg.model.loss, aux, cfg.loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("pool", ["cls", "map"])
def test_accumulation_with_decoder_and_distillation_equals_the_whole_batch(pool):
    """accum 2 x 4 == accum 1 x 8 with every auxiliary loss on (its draws made once)."""
    import copy

    cfg, model, batches = _accum_setup(pool)
    whole = [{k: torch.cat([b[k] for b in batches]) for k in batches[0]}]
    first_only = copy.deepcopy(model)
    want_loss, want = _accum_grads(cfg, copy.deepcopy(model), whole)
    got_loss, got = _accum_grads(cfg, model, batches)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert got.keys() == want.keys()
    assert not any(n.startswith("teacher.") for n in got)
    assert {"mask_token", "decoder.head.weight", "visual.conv1.weight"} <= got.keys()
    for name, g in got.items():
        torch.testing.assert_close(g, want[name], rtol=0, atol=1e-5, msg=name)
    # the comparison can fail: one micro-batch alone has other gradients
    _, half = _accum_grads(cfg, first_only, batches[:1])
    assert (half["decoder.head.weight"] - want["decoder.head.weight"]).abs().max() > 1e-3
