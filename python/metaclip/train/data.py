"""WebDataset-compatible tar shards, online curation and a resumable loader.

A shard holds ``{key}.jpg|png`` + ``{key}.json`` (``{"texts": [...], "entry_ids": [...]}``).
Shards are dealt round-robin to streams, one per (rank, worker). A stream walks its shards
pass after pass ("epochs"); its position ``(epoch, shard, sample)`` is reported with every
batch, so a checkpoint can resume exactly where it stopped.

Online curation: each pass redraws which samples are kept, with :func:`keep_mask` — the one
place where that decision is made (spec §6).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import multiprocessing
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from PIL import Image

from metaclip import core
from metaclip.exceptions import MetaclipError
from metaclip.train.config import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)  # OpenAI CLIP
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


class DataError(MetaclipError, ValueError):
    """Training data that cannot be used: an unreadable shard, or shards without any sample."""


def _unreadable(path: str, e: BaseException) -> str:
    if isinstance(e, tarfile.ReadError) and "opened successfully" in str(e):
        reason = "not a tar archive"  # tarfile lists every compression it tried, one a line
    else:
        reason = " ".join(str(e).split()) or type(e).__name__
    return f"cannot read training shard {path}: {reason}"


# --- online curation -------------------------------------------------------------------------


def keep_mask(
    keys: Sequence[str],
    offsets: np.ndarray,
    entry_ids: np.ndarray,
    probs: np.ndarray,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """Which samples a pass keeps. Sample ``i`` matched ``entry_ids[offsets[i]:offsets[i+1]]``;
    it is kept iff any entry ``e`` passes its coin: ``u(seed, key, e, epoch) < probs[e]``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    entry_ids = np.asarray(entry_ids, dtype=np.uint32)
    if len(offsets) != len(keys) + 1 or offsets[0] != 0 or offsets[-1] != len(entry_ids):
        raise ValueError("offsets must be a CSR index over entry_ids with len(keys) + 1 items")
    if len(entry_ids) and int(entry_ids.max()) >= len(probs):
        raise ConfigError(
            f"entry id {int(entry_ids.max())} outside the probabilities array "
            f"({len(probs)} entries)"
        )
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    empty = np.zeros(0, dtype=np.int64)
    matches = core.MatchResult(offsets=offsets, ids=entry_ids, invalid=empty, null=empty)
    return core.sample_pairs(list(keys), matches, probs, seed=seed, epoch=epoch, threads=1)


# --- shards ----------------------------------------------------------------------------------


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out += _expand_braces(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end() :])
    return out


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard list from ``a.tar,b.tar``, ``dir/*.tar`` or ``x-{000..099}.tar``."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in (p.strip() for p in parts if p.strip()):
        for pat in _expand_braces(part):
            hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
            out += hits
    missing = [p for p in out if not Path(p).is_file()]
    if not out or missing:
        raise ConfigError(f"no shards match {spec!r}" if not out else f"missing shard {missing[0]}")
    return out


def write_shard(path: str | Path, samples: Sequence[tuple[str, bytes, str, dict]]) -> None:
    """Write ``(key, image_bytes, image_ext, meta)`` samples as a WebDataset tar."""
    with tarfile.open(path, "w") as tf:
        for key, data, ext, meta in samples:
            for name, blob in ((f"{key}.{ext}", data), (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))


@dataclass
class Sample:
    key: str
    image: bytes
    meta: dict


def read_shard(path: str) -> list[Sample]:
    """All complete samples (an image and a json) of one tar, in file order."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r") as tf:
        for member in tf:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            # a regular file member always has a file object
            data = cast(IO[bytes], tf.extractfile(member)).read()
            groups.setdefault(key, {})[ext.lower()] = data
    out = []
    for key, parts in groups.items():
        image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
        if image is not None and "json" in parts:
            out.append(Sample(key, image, json.loads(parts["json"])))
    return out


def sample_texts(meta: dict) -> list[str]:
    texts = meta.get("texts", meta.get("text", meta.get("caption")))
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    return [t for t in texts if t]


# --- images ----------------------------------------------------------------------------------


def image_to_tensor(data: bytes, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """Decode and transform as in the recipe: train = RandomResizedCrop(scale 0.9-1, bicubic);
    eval (``rng`` None) = resize the short side + center crop. Then OpenAI mean/std."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if rng is not None:
        for _ in range(10):
            area = w * h * rng.uniform(0.9, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                break
        else:
            cw = ch = min(w, h)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    else:
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        x0, y0 = (nw - size) // 2, (nh - size) // 2
        img = img.crop((x0, y0, x0 + size, y0 + size))
    arr = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


# --- streams ---------------------------------------------------------------------------------


class ShardStream(torch.utils.data.IterableDataset):
    """Endless batches for one rank; DataLoader worker ``w`` serves stream
    ``(w + rotation) % num_streams`` so a resumed loader continues the same round-robin."""

    def __init__(
        self,
        shards: Sequence[str],
        *,
        rank: int,
        world: int,
        num_workers: int,
        batch_size: int,
        tokenizer,
        image_size: int,
        seed: int,
        shuffle: bool = True,
        augment: bool = True,
        probs: np.ndarray | None = None,
        curation_seed: int = 0,
        state: dict | None = None,
    ) -> None:
        self.shards, self.rank, self.world = list(shards), rank, world
        self.num_streams = max(num_workers, 1)
        if len(self.shards) < world * self.num_streams:
            raise ConfigError(
                f"{len(self.shards)} shards cannot feed {world} ranks x "
                f"{self.num_streams} workers; use fewer workers or more shards"
            )
        self.batch_size, self.tokenizer, self.image_size = batch_size, tokenizer, image_size
        self.seed, self.shuffle, self.augment = seed, shuffle, augment
        self.probs, self.curation_seed = probs, curation_seed
        state = state or {}
        self.rotation = int(state.get("next_stream", 0))
        self.positions = {int(k): tuple(v) for k, v in state.get("streams", {}).items()}

    def _stream_shards(self, stream: int, epoch: int) -> list[str]:
        g, total = self.rank * self.num_streams + stream, self.world * self.num_streams
        mine = self.shards[g::total]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, g]).permutation(len(mine))
            mine = [mine[i] for i in order]
        return mine

    def _kept(self, path: str, samples: list[Sample], epoch: int) -> list[int]:
        idx = list(range(len(samples)))
        if self.probs is not None:
            ids = [np.asarray(s.meta.get("entry_ids", []), dtype=np.uint32) for s in samples]
            offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids])])
            flat = np.concatenate(ids) if ids else np.zeros(0, np.uint32)
            keep = keep_mask(
                [s.key for s in samples], offsets, flat, self.probs, self.curation_seed, epoch
            )
            idx = [i for i in idx if keep[i]]
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, zlib.crc32(path.encode())])
            idx = [idx[i] for i in rng.permutation(len(idx))]
        return idx

    def _example(self, path: str, s: Sample, epoch: int) -> tuple[torch.Tensor, str]:
        rng = np.random.default_rng(
            [self.seed, epoch, zlib.crc32(path.encode()), zlib.crc32(s.key.encode())]
        )
        texts = sample_texts(s.meta)
        if not texts:
            raise ValueError(f"{path}: sample {s.key!r} has no text")
        text = texts[int(rng.integers(len(texts)))] if len(texts) > 1 else texts[0]
        image = image_to_tensor(s.image, self.image_size, rng if self.augment else None)
        return image, text

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        stream = (worker + self.rotation) % self.num_streams
        epoch, shard_i, sample_i = self.positions.get(stream, (0, 0, 0))
        images, texts = [], []
        while True:
            shards = self._stream_shards(stream, epoch)
            found = shard_i > 0 or sample_i > 0  # resumed inside a pass that found samples
            while shard_i < len(shards):
                path = shards[shard_i]
                try:
                    samples = read_shard(path)
                except (OSError, EOFError, tarfile.TarError, ValueError) as e:
                    # reported by the loader in the trainer's process, as one line
                    yield {"error": _unreadable(path, e)}
                    return
                found = found or bool(samples)
                order = self._kept(path, samples, epoch)
                while sample_i < len(order):
                    image, text = self._example(path, samples[order[sample_i]], epoch)
                    images.append(image)
                    texts.append(text)
                    sample_i += 1
                    if len(images) == self.batch_size:
                        yield {
                            "images": torch.stack(images),
                            "tokens": torch.from_numpy(self.tokenizer(texts)),
                            "stream": stream,
                            "position": (epoch, shard_i, sample_i),
                        }
                        images, texts = [], []
                shard_i, sample_i = shard_i + 1, 0
            if not found:  # another pass would find nothing either: stop instead of spinning
                names = ", ".join(shards[:3]) + (", ..." if len(shards) > 3 else "")
                yield {
                    "error": f"no usable training sample in {len(shards)} shard(s) ({names}): "
                    "none holds a complete sample (an image and its .json)"
                }
                return
            epoch, shard_i = epoch + 1, 0


class ResumableLoader:
    """Iterates a :class:`ShardStream` through a DataLoader and tracks the position."""

    def __init__(
        self, dataset: ShardStream, num_workers: int, start_method: str = "forkserver"
    ) -> None:
        self.dataset, self.num_workers = dataset, num_workers
        self.positions = dict(dataset.positions)
        self.next_stream = dataset.rotation
        ctx = None
        if num_workers > 0:
            # workers do not inherit the trainer's threads (gloo, OpenMP, rayon) when they
            # start from a clean forkserver; it preloads torch so they start fast
            ctx = multiprocessing.get_context(start_method)
            if start_method == "forkserver":
                ctx.set_forkserver_preload(["torch", "metaclip.train.data"])
        self._loader: torch.utils.data.DataLoader | None = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            prefetch_factor=2 if num_workers else None,
            multiprocessing_context=ctx,
        )
        self._it: Iterator[Any] | None = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            assert self._loader is not None, "the loader is closed"
            self._it = iter(self._loader)
        batch = next(self._it)
        if "error" in batch:
            raise DataError(batch["error"])
        if batch["stream"] != self.next_stream:
            raise RuntimeError(
                f"loader order broke: got stream {batch['stream']}, expected {self.next_stream}"
            )
        self.positions[batch["stream"]] = tuple(int(v) for v in batch["position"])
        self.next_stream = (self.next_stream + 1) % self.dataset.num_streams
        return batch

    def close(self) -> None:
        """Stop the worker processes."""
        self._it = None
        self._loader = None

    def state_dict(self) -> dict:
        return {
            "streams": {str(k): list(v) for k, v in self.positions.items()},
            "next_stream": self.next_stream,
            "num_streams": self.dataset.num_streams,
            "world": self.dataset.world,
        }
