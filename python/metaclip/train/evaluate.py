"""Zero-shot classification and image<->text retrieval, plus the metrics log.

Class embedding = mean of the L2-normalized embeddings of every (name, template) prompt,
renormalized; logits = 100 * image @ W. A class may have several names (synonyms or
languages) and templates may be in any language: all prompts of a class are averaged.
Every rank runs the same evaluation (FSDP needs all ranks in each forward); rank 0 logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metaclip.train.data import DataError, expand_shards
from metaclip.train.images import BadImage, decode, normalize
from metaclip.train.samples import read_samples

log = logging.getLogger(__name__)


def load_eval_set(shards: str, image_size: int) -> tuple[torch.Tensor, list[dict]]:
    """Every usable sample of the shards, center-cropped: ``(uint8 images [N, 3, S, S],
    metas)``; each meta gains ``texts``. Skipped samples are logged with their counts."""
    images, metas = [], []
    skipped: Counter = Counter()
    for path in expand_shards(shards):
        samples, bad = read_samples(path)
        skipped += bad
        for s in samples:
            try:
                images.append(decode(s.image, image_size, None))
            except BadImage as e:
                skipped[e.reason] += 1
                continue
            metas.append({**s.meta, "texts": s.texts})
    if skipped:
        log.warning("evaluation set %s: skipped %s", shards, dict(sorted(skipped.items())))
    if not images:
        raise DataError(f"no usable evaluation sample in {shards}")
    return torch.stack(images), metas


def _prompts(name: str | Sequence[str], templates: Sequence[str]) -> list[str]:
    names = [name] if isinstance(name, str) else list(name)
    return [t.replace("{c}", n).replace("{}", n) for n in names for t in templates]


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device, batch_size: int = 256):
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = torch.from_numpy(tokenizer(texts[i : i + batch_size])).to(device)
        out.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(out)


@torch.no_grad()
def encode_images(model, images: torch.Tensor, device, dtype, batch_size: int = 256):
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device)).to(dtype)
        out.append(model.encode_image(x, normalize=True).float())
    return torch.cat(out)


@torch.no_grad()
def zero_shot_classifier(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """``[embed_dim, num_classes]`` classifier weights."""
    cols = []
    for name in classnames:
        emb = encode_texts(model, tokenizer, _prompts(name, templates), device).mean(0)
        cols.append(F.normalize(emb, dim=-1))
    return torch.stack(cols, dim=1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    out = {}
    for k in ks:
        k_ = min(k, logits.shape[1])
        hit = (logits.topk(k_, dim=1).indices == labels[:, None]).any(dim=1)
        out[f"top{k}"] = hit.float().mean().item()
    return out


def retrieval_metrics(
    img: torch.Tensor, txt: torch.Tensor, txt_to_img: torch.Tensor, ks=(1, 5, 10)
) -> dict[str, float]:
    """R@k both ways; ``txt_to_img[j]`` is the image of text ``j`` (an image may have many)."""
    sim = img @ txt.T  # [I, T]
    out = {}
    ranks_t2i = sim.T.argsort(dim=1, descending=True)  # per text, images by score
    pos_t2i = (ranks_t2i == txt_to_img[:, None]).float().argmax(dim=1)
    ranks_i2t = sim.argsort(dim=1, descending=True)  # per image, texts by score
    owner = txt_to_img[ranks_i2t]  # image owning each ranked text
    mine = owner == torch.arange(img.shape[0], device=img.device)[:, None]
    pos_i2t = mine.float().argmax(dim=1)  # rank of the first correct text
    for k in ks:
        out[f"text_to_image_R@{k}"] = (pos_t2i < k).float().mean().item()
        out[f"image_to_text_R@{k}"] = (pos_i2t < k).float().mean().item()
    return out


def evaluate(model, tokenizer, cfg, device, dtype=torch.float32) -> dict[str, float]:
    """Run the evaluations configured in ``cfg.eval``; returns a flat metrics dict."""
    ev, size = cfg.eval, cfg.model.vision.image_size
    metrics: dict[str, float] = {}
    was_training = model.training
    model.eval()
    if ev.zeroshot_shards:
        spec = json.loads(Path(ev.classnames).read_text())
        images, metas = load_eval_set(ev.zeroshot_shards, size)
        labels = torch.tensor([int(m["label"]) for m in metas], device=device)
        w = zero_shot_classifier(model, tokenizer, spec["classnames"], spec["templates"], device)
        feats = encode_images(model, images, device, dtype, ev.batch_size)
        acc = topk_accuracy(100.0 * feats @ w, labels)
        metrics.update({f"zeroshot/{k}": v for k, v in acc.items()})
        metrics["zeroshot/chance"] = 1.0 / len(spec["classnames"])
    if ev.retrieval_shards:
        images, metas = load_eval_set(ev.retrieval_shards, size)
        texts, owner = [], []
        for i, m in enumerate(metas):
            for t in m["texts"]:
                texts.append(t)
                owner.append(i)
        img = encode_images(model, images, device, dtype, ev.batch_size)
        txt = encode_texts(model, tokenizer, texts, device, ev.batch_size)
        r = retrieval_metrics(img, txt, torch.tensor(owner, device=device))
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
