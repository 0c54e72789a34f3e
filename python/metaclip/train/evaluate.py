"""Zero-shot classification and image<->text retrieval, plus the metrics log.

Class embedding = mean of the L2-normalized embeddings of every (name, template) prompt,
renormalized; logits = 100 * image @ W. A class may have several names (synonyms or
languages) and templates may be in any language: all prompts of a class are averaged.

The eval set is streamed, never held whole: rank ``r`` of ``W`` reads shards ``r::W`` (every
``W``-th sample of each shard when there are fewer shards than ranks), DataLoader workers
split a rank's part again, and images are encoded a batch at a time. Zero-shot sums its hits
over ranks; retrieval gathers the (small) normalized features. FSDP needs every rank in every
forward, so a rank that runs out of batches runs dummy ones until all ranks are done. Every
rank builds the same classifier (its text forwards are the same on all ranks).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from metaclip.train.data import DataError, expand_shards
from metaclip.train.distributed import this_rank, world_size
from metaclip.train.images import BadImage, decode, normalize
from metaclip.train.samples import SKIPS, iter_samples

log = logging.getLogger(__name__)

Unit = tuple[str, int, int]  # (shard url, first sample, step): samples first, first+step, ...


def split_units(units: Sequence[Unit], parts: int, part: int) -> list[Unit]:
    """Part ``part`` of ``parts``: whole shards when there are at least ``parts`` of them,
    else every ``parts``-th sample of each (the parts are disjoint and cover all)."""
    if parts == 1:
        return list(units)
    if len(units) >= parts:
        return list(units[part::parts])
    return [(url, first + part * step, step * parts) for url, first, step in units]


class EvalSamples(torch.utils.data.IterableDataset):
    """One rank's part of an eval set: dicts with the ``key``, the center-cropped uint8
    ``image``, the ``label`` (or None) and ``texts``; or ``{"skip": reason}`` per sample
    skipped."""

    def __init__(self, shards: str, image_size: int, rank: int = 0, world: int = 1) -> None:
        urls = expand_shards(shards)
        self.units = split_units([(u, 0, 1) for u in urls], world, rank)
        self.image_size = image_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        units = self.units if info is None else split_units(self.units, info.num_workers, info.id)
        for url, first, step in units:
            skipped: Counter = Counter()
            seen: Counter = Counter()
            for i, s in enumerate(iter_samples(url, skipped)):
                mine = i >= first and (i - first) % step == 0
                if s is None:  # counted by iter_samples: report it once, by its owner
                    if mine:
                        yield from ({"skip": r} for r in (skipped - seen).elements())
                    seen = skipped.copy()
                    continue
                if not mine:
                    continue
                try:
                    image = decode(s.image, self.image_size, None)
                except BadImage as e:
                    yield {"skip": e.reason}
                    continue
                label = s.meta.get("label")
                yield {"key": s.key, "image": image, "label": label, "texts": s.texts}
            if first == 0:  # a shard that cannot be read or is cut short: counted once
                yield from ({"skip": r} for r in (skipped - seen).elements())


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [x for x in items if "image" in x]
    return {
        "images": torch.stack([x["image"] for x in good]) if good else None,
        "labels": [x["label"] for x in good],
        "texts": [x["texts"] for x in good],
        "skipped": Counter(x["skip"] for x in items if "skip" in x),
    }


def eval_batches(
    shards: str,
    image_size: int,
    batch_size: int,
    rank: int,
    world: int,
    workers: int = 0,
    start_method: str = "forkserver",
) -> Iterable[dict[str, Any]]:
    """This rank's batches: ``images`` (uint8 or None when all were skipped), ``labels``,
    ``texts`` per image and the ``skipped`` counts."""
    dataset = EvalSamples(shards, image_size, rank, world)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        multiprocessing_context=start_method if workers > 0 else None,
    )


def _sum(x: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(x)
    return x


def lockstep(items: Iterable[Any], device) -> Iterator[Any]:
    """This rank's items, then None until every rank has run out (one all-reduce per item)."""
    it = iter(items)
    while True:
        item = next(it, None)
        more = torch.tensor([int(item is not None)], device=device)
        if world_size() > 1:
            dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not more.item():
            return
        yield item


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order (ranks may hold different numbers of rows)."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    most = int(max(c.item() for c in counts))
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(c.item())] for o, c in zip(out, counts, strict=True)])


def _prompts(name: str | Sequence[str], templates: Sequence[str]) -> list[str]:
    names = [name] if isinstance(name, str) else list(name)
    return [t.replace("{c}", n).replace("{}", n) for n in names for t in templates]


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device, batch_size: int = 256):
    """Normalized text features (fp32); the same forwards on every rank."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = torch.from_numpy(tokenizer(texts[i : i + batch_size])).to(device)
        out.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(out)


@torch.no_grad()
def zero_shot_classifier(
    model, tokenizer, classnames, templates, device, batch_size: int = 256
) -> torch.Tensor:
    """``[embed_dim, num_classes]`` classifier weights; the prompts of all classes are
    encoded together in batches of ``batch_size``, then averaged per class."""
    prompts: list[str] = []
    owner: list[int] = []
    for c, name in enumerate(classnames):
        p = _prompts(name, templates)
        prompts += p
        owner += [c] * len(p)
    emb = encode_texts(model, tokenizer, prompts, device, batch_size)
    idx = torch.tensor(owner, device=emb.device)
    sums = emb.new_zeros(len(classnames), emb.shape[1]).index_add_(0, idx, emb)
    counts = torch.bincount(idx, minlength=len(classnames)).clamp_min(1)
    return F.normalize(sums / counts[:, None], dim=-1).T


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of rows whose label is among the top k, per k (float64)."""
    out = []
    for k in ks:
        k_ = min(k, logits.shape[1])
        hit = (logits.topk(k_, dim=1).indices == labels[:, None]).any(dim=1)
        out.append(hit.sum())
    return torch.stack(out).double()


def retrieval_metrics(
    img: torch.Tensor, txt: torch.Tensor, txt_to_img: torch.Tensor, ks=(1, 5, 10), tie=1e-6
) -> dict[str, float]:
    """R@k both ways; ``txt_to_img[j]`` is the image of text ``j`` (an image may have many).

    The rank of the right answer is the number of others scoring more than it by over
    ``tie``: a caption several images share (or float noise) is a tie that counts as found,
    so the metrics do not depend on the order of the set (nor on how ranks split it).
    """
    sim = img @ txt.T  # [I, T]
    cols = torch.arange(txt.shape[0], device=txt.device)
    right = sim[txt_to_img, cols]  # per text, its image's score
    pos_t2i = (sim > right[None, :] + tie).sum(dim=0)
    mine = txt_to_img[None, :] == torch.arange(img.shape[0], device=img.device)[:, None]
    best = sim.masked_fill(~mine, float("-inf")).amax(dim=1)  # per image, its best text
    pos_i2t = (sim > best[:, None] + tie).sum(dim=1)
    out = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = (pos_t2i < k).float().mean().item()
        out[f"image_to_text_R@{k}"] = (pos_i2t < k).float().mean().item()
    return out


def _log_skips(shards: str, skipped: Counter, device) -> None:
    counts = _sum(torch.tensor([float(skipped[k]) for k in SKIPS], device=device))
    total = {k: int(v) for k, v in zip(SKIPS, counts.tolist(), strict=True) if v}
    if total and this_rank() == 0:
        log.warning("evaluation set %s: skipped %s", shards, total)


@torch.no_grad()
def _encode_split(model, shards: str, cfg, device, dtype, with_texts: bool):
    """This rank's image features, labels and texts, in lockstep with the other ranks."""
    ev, size = cfg.eval, cfg.model.vision.image_size
    batches = eval_batches(
        shards,
        size,
        ev.batch_size,
        this_rank(),
        world_size(),
        ev.num_workers,
        cfg.data.start_method,
    )
    dummy = torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device)
    feats: list[torch.Tensor] = []
    labels: list[Any] = []
    texts: list[list[str]] = []
    skipped: Counter = Counter()
    for batch in lockstep(batches, device):
        images = None if batch is None else batch["images"]
        x = dummy if images is None else images.to(device)
        f = model.encode_image(normalize(x).to(dtype), normalize=True).float()
        if images is not None:
            feats.append(f)
            labels += batch["labels"]
            texts += batch["texts"] if with_texts else []
        if batch is not None:
            skipped += batch["skipped"]
    _log_skips(shards, skipped, device)
    dim = cfg.model.embed_dim
    img = torch.cat(feats) if feats else torch.zeros(0, dim, device=device)
    n = int(_sum(torch.tensor([img.shape[0]], device=device)).item())
    if n == 0:
        raise DataError(f"no usable evaluation sample in {shards}")
    return img, labels, texts


@torch.no_grad()
def _encode_texts_lockstep(model, tokenizer, texts: list[str], cfg, device) -> torch.Tensor:
    bs = cfg.eval.batch_size
    chunks = (texts[i : i + bs] for i in range(0, len(texts), bs))
    out = [torch.zeros(0, cfg.model.embed_dim, device=device)]
    for chunk in lockstep(chunks, device):
        tokens = torch.from_numpy(tokenizer(chunk or [""])).to(device)
        f = model.encode_text(tokens, normalize=True).float()
        if chunk is not None:
            out.append(f)
    return torch.cat(out)


def evaluate(model, tokenizer, cfg, device, dtype=torch.float32) -> dict[str, float]:
    """Run the evaluations configured in ``cfg.eval`` (collective); returns the metrics,
    the same on every rank."""
    ev = cfg.eval
    metrics: dict[str, float] = {}
    was_training = model.training
    model.eval()
    if ev.zeroshot_shards:
        spec = json.loads(Path(ev.classnames).read_text())
        w = zero_shot_classifier(
            model, tokenizer, spec["classnames"], spec["templates"], device, ev.batch_size
        )
        img, labels, _ = _encode_split(model, ev.zeroshot_shards, cfg, device, dtype, False)
        if any(label is None for label in labels):
            raise DataError(f"{ev.zeroshot_shards}: a sample's json has no integer 'label'")
        y = torch.tensor([int(label) for label in labels], dtype=torch.long, device=device)
        hits = topk_hits(100.0 * img @ w, y)
        totals = _sum(torch.cat([hits, torch.tensor([len(y)], device=device).double()]))
        n = totals[-1].item()
        metrics["zeroshot/top1"] = totals[0].item() / n
        metrics["zeroshot/top5"] = totals[1].item() / n
        metrics["zeroshot/chance"] = 1.0 / len(spec["classnames"])
    if ev.retrieval_shards:
        img, _, per_image = _encode_split(model, ev.retrieval_shards, cfg, device, dtype, True)
        texts = [t for ts in per_image for t in ts]
        owner = torch.tensor(
            [i for i, ts in enumerate(per_image) for _ in ts], dtype=torch.long, device=device
        )
        txt = _encode_texts_lockstep(model, tokenizer, texts, cfg, device)
        # local image indices -> global: add the images of the ranks before this one
        counts = gather_rows(torch.tensor([img.shape[0]], device=device))
        owner = owner + counts[: this_rank()].sum()
        r = retrieval_metrics(gather_rows(img), gather_rows(txt), gather_rows(owner))
        metrics.update({f"retrieval/{k}": v for k, v in r.items()})
    model.train(was_training)
    return metrics


class MetricsLogger:
    """JSON lines (always) and TensorBoard (when installed); only rank 0 writes."""

    def __init__(self, output_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(output_dir) / "tb"))
            except ImportError:
                log.info("tensorboard not installed: metrics go to %s only", self.path)

    def log(self, step: int, metrics: Mapping[str, float | torch.Tensor]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **{k: _num(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _num(v):
    return float(v) if isinstance(v, np.floating | torch.Tensor) else v
