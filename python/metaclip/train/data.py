"""Training data: shard lists, streams with exact resume, and online curation.

Shards are dealt round-robin to ``streams`` per rank; DataLoader worker ``w`` of ``W``
serves streams ``w, w + W, …`` and batches come out in stream order, so the batches depend on
the stream count, not on the worker count (``streams`` must be a multiple of ``W``). A stream
walks its shards pass after pass ("epochs"), reading ``shuffle_window`` shards at once and
drawing each next sample from one of them at random (seeded): the shuffle across shards.
Samples are streamed from the tar (``samples.py``); a sample or shard that cannot be used is
skipped and counted, and the counts travel with the batches.

The position of a stream (pass, next shard, open shards with the samples read from each,
draws) is reported with every batch, so a checkpoint resumes exactly where it stopped.

Online curation: each pass redraws which samples are kept and which of a sample's texts is
used (MetaCLIP 2's image unit: one matched text per image), with the coins of the curation
itself (``core.sample_images``) — the one rule in spec §6.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import multiprocessing
import os
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaclip import core
from metaclip.exceptions import MetaclipError
from metaclip.train.config import ConfigError
from metaclip.train.images import BadImage, decode
from metaclip.train.naflex import choose_seq_len, decode_native, patchify
from metaclip.train.samples import Sample, iter_samples

LOCAL_SCALE = (0.05, 0.4)  # area share of a local crop (DINO/SILC)

log = logging.getLogger(__name__)


class DataError(MetaclipError, ValueError):
    """Training data that cannot be used: most shards unreadable, or no usable sample."""


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


def pick_text(
    key: str,
    ids: list[list[int]],
    probs: np.ndarray,
    seed: int,
    epoch: int,
) -> int | None:
    """Online curation of one sample: the text a pass uses (index into its texts), or None
    when the sample is not kept. MetaCLIP 2's unit: one matched text uniformly, then the
    keep rule on its entries (with one text, MetaCLIP 1's pair rule)."""
    offsets = np.cumsum([0, *map(len, ids)]).astype(np.int64)
    flat = np.fromiter((i for x in ids for i in x), dtype=np.uint32, count=int(offsets[-1]))
    empty = np.zeros(0, dtype=np.int64)
    matches = core.MatchResult(offsets=offsets, ids=flat, invalid=empty, null=empty)
    image_offsets = np.array([0, len(ids)], dtype=np.int64)
    keep, picked = core.sample_images([key], image_offsets, matches, probs, seed, epoch, 1)
    return int(picked[0]) if keep[0] else None


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


def is_remote(url: str) -> bool:
    """``pipe:CMD`` or ``scheme://…`` (not ``file://``): opened, never globbed or checked."""
    return url.startswith("pipe:") or ("://" in url and not url.startswith("file://"))


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard list from ``a.tar,b.tar``, ``dir/*.tar``, ``x-{000..099}.tar`` or URLs
    (``pipe:aws s3 cp s3://b/x-{000..009}.tar -``, ``s3://b/x-{000..009}.tar``)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in (p.strip() for p in parts if p.strip()):
        for pat in _expand_braces(part):
            local = not is_remote(pat)
            out += sorted(glob.glob(pat)) if local and any(c in pat for c in "*?[") else [pat]
    missing = [p for p in out if not is_remote(p) and not Path(p.removeprefix("file://")).is_file()]
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


def auto_workers(local_world: int = 1) -> int:
    """DataLoader workers per rank when ``data.num_workers`` is -1: the cores of this
    rank's share of the machine, less one for the trainer, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // max(1, local_world) - 1))


# --- streams ---------------------------------------------------------------------------------

_END = object()


class _Slot:
    """One open shard of a stream: its index in the pass, the samples read from it, and
    the skips it counted since they were last collected."""

    def __init__(self, index: int, url: str, consumed: int) -> None:
        self.index, self.consumed = index, consumed
        self.counts: Counter = Counter()
        self.it = iter_samples(url, self.counts)
        for _ in range(consumed):  # resumed: skip what was read (without decoding)
            if next(self.it, _END) is _END:
                break
        self.counts.clear()  # counted before the checkpoint


class ShardStream(torch.utils.data.IterableDataset):
    """Endless batches for one rank (see the module docstring)."""

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
        streams: int = 0,
        shuffle_window: int = 8,
        language_offsets: dict[str, int] | None = None,
        local_crops: int = 0,
        local_crop_size: int = 0,
        naflex_seq_lens: Sequence[int] = (),
        patch_size: int = 0,
    ) -> None:
        self.shards, self.rank, self.world = list(shards), rank, world
        self.num_workers = max(num_workers, 0)
        self.num_streams = streams or max(num_workers, 1)
        if self.num_workers and self.num_streams % self.num_workers:
            raise ConfigError(
                f"data.streams ({self.num_streams}) must be a multiple of data.num_workers "
                f"({self.num_workers})"
            )
        if len(self.shards) < world * self.num_streams:
            raise ConfigError(
                f"{len(self.shards)} shards cannot feed {world} ranks x "
                f"{self.num_streams} streams; use fewer streams (data.streams, "
                "data.num_workers) or more shards"
            )
        self.batch_size, self.tokenizer, self.image_size = batch_size, tokenizer, image_size
        self.seed, self.shuffle, self.augment = seed, shuffle, augment
        self.window = max(1, shuffle_window) if shuffle else 1
        self.probs = None if probs is None else np.ascontiguousarray(probs, dtype=np.float64)
        self.curation_seed = curation_seed
        self.language_offsets = language_offsets
        self.local_crops, self.local_crop_size = local_crops, local_crop_size
        # NaFlex: a length per batch; images as patches at their aspect ratio (naflex.py)
        self.naflex_seq_lens, self.patch_size = list(naflex_seq_lens), patch_size
        if self.naflex_seq_lens and patch_size < 1:
            raise ConfigError("NaFlex batches need the model's patch_size")
        state = state or {}
        self.rotation = int(state.get("next_stream", 0))
        self.positions: dict[int, dict] = {}
        for k, v in state.get("streams", {}).items():
            if not isinstance(v, dict):
                raise ConfigError(
                    "the checkpoint's data position was saved by an older loader; "
                    "start the run again (resume = 'none')"
                )
            self.positions[int(k)] = v

    def _stream_shards(self, stream: int, epoch: int) -> list[str]:
        g, total = self.rank * self.num_streams + stream, self.world * self.num_streams
        mine = self.shards[g::total]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, g]).permutation(len(mine))
            mine = [mine[i] for i in order]
        return mine

    def _global_ids(self, s: Sample) -> list[list[int]] | str:
        """The sample's entry ids per text as indices into ``probs``, or the skip reason."""
        if s.entry_ids is None:
            return "no_entry_ids"
        ids = s.entry_ids
        if self.language_offsets is not None:
            offsets = self.language_offsets
            langs = s.langs or [None] * len(ids)
            if any(lang is None or lang not in offsets for lang in langs):
                return "bad_entry_ids"
            ids = [[offsets[str(lg)] + i for i in x] for lg, x in zip(langs, ids, strict=True)]
        assert self.probs is not None
        if any(i < 0 or i >= len(self.probs) for x in ids for i in x):
            return "bad_entry_ids"
        return ids

    def _text(self, s: Sample, epoch: int, rng: np.random.Generator) -> int | str | None:
        """Index of the text this pass uses; None: curated out this pass; str: skip reason."""
        if self.probs is not None:
            ids = self._global_ids(s)
            if isinstance(ids, str):
                return ids
            # the curation's own key where the shard records it (`metaclip-curate shards`):
            # then pass e keeps what `metaclip-curate run --epoch e` keeps
            key = s.meta.get("key")
            key = key if isinstance(key, str) else s.key
            return pick_text(key, ids, self.probs, self.curation_seed, epoch)
        # without online curation, a text that matched (when known) is used, as MC2 does
        matched = [i for i, x in enumerate(s.entry_ids or []) if x] or range(len(s.texts))
        return matched[int(rng.integers(len(matched)))] if len(matched) > 1 else matched[0]

    def _batches(self, stream: int) -> Iterator[dict]:
        pos = self.positions.get(stream, {})
        epoch, nxt, draw = (int(pos.get(k, 0)) for k in ("epoch", "next", "draw"))
        resumed = [tuple(x) for x in pos.get("slots", [])]
        g = self.rank * self.num_streams + stream
        skipped: Counter = Counter()
        images: list[torch.Tensor] = []
        texts: list[str] = []
        local: list[torch.Tensor] = []
        grids: list[tuple[int, int]] = []
        seq_len = 0  # NaFlex: this batch's length, drawn before its first sample
        while True:
            shards = self._stream_shards(stream, epoch)
            slots = [_Slot(i, shards[i], n) for i, n in resumed]
            found = bool(resumed) or nxt > 0  # resumed inside a pass that found samples
            bad_shards, resumed = 0, []
            while True:
                while len(slots) < self.window and nxt < len(shards):
                    slots.append(_Slot(nxt, shards[nxt], 0))
                    nxt += 1
                if not slots:
                    break
                if self.naflex_seq_lens and not seq_len:
                    seq_len = choose_seq_len(self.naflex_seq_lens, self.seed, epoch, g, draw)
                k = 0
                if len(slots) > 1:
                    k = int(np.random.default_rng([self.seed, epoch, g, draw]).integers(len(slots)))
                draw += 1
                slot = slots[k]
                s = next(slot.it, _END)
                if slot.counts:
                    bad_shards += slot.counts["bad_shard"]
                    skipped.update(slot.counts)
                    slot.counts.clear()
                    if bad_shards * 2 > len(shards):
                        yield {"error": self._failing(shards, bad_shards)}
                        return
                if s is _END:
                    del slots[k]
                    continue
                slot.consumed += 1
                if s is None:
                    continue
                assert isinstance(s, Sample)
                # by the shard's file name, not its path: the same shards moved to another
                # folder (or read by URL) give the same augmentations and text picks
                name = shards[slot.index].rsplit("/", 1)[-1]
                rng = np.random.default_rng(
                    [self.seed, epoch, zlib.crc32(name.encode()), zlib.crc32(s.key.encode())]
                )
                t = self._text(s, epoch, rng)
                if t is None:
                    continue
                if isinstance(t, str):
                    skipped[t] += 1
                    continue
                try:
                    if seq_len:
                        image = decode_native(
                            s.image, self.patch_size, seq_len, rng if self.augment else None
                        )
                        p = self.patch_size
                        grids.append((image.shape[1] // p, image.shape[2] // p))
                        image = patchify(image, p)
                    else:
                        image = decode(s.image, self.image_size, rng if self.augment else None)
                except BadImage as e:
                    skipped[e.reason] += 1
                    continue
                found = True
                images.append(image)
                texts.append(s.texts[t])
                if self.local_crops:  # drawn after the image's crop: that one is unchanged
                    size = self.local_crop_size
                    crops = [
                        decode(s.image, size, rng, LOCAL_SCALE) for _ in range(self.local_crops)
                    ]
                    local.append(torch.stack(crops))
                if len(images) == self.batch_size:
                    extra: dict[str, Any] = {"local_images": torch.stack(local)} if local else {}
                    if seq_len:
                        extra["patches"] = torch.cat(images)
                        extra["grids"] = torch.tensor(grids, dtype=torch.long)
                        extra["seq_len"] = seq_len
                    else:
                        extra["images"] = torch.stack(images)
                    yield {
                        **extra,
                        "tokens": torch.from_numpy(self.tokenizer(texts)),
                        "stream": stream,
                        "position": {
                            "epoch": epoch,
                            "next": nxt,
                            "slots": [[x.index, x.consumed] for x in slots],
                            "draw": draw,
                        },
                        "skipped": dict(skipped),
                    }
                    skipped.clear()
                    images, texts, local, grids, seq_len = [], [], [], [], 0
            if not found:  # another pass would find nothing either: stop instead of spinning
                yield {"error": self._nothing(shards, skipped)}
                return
            epoch, nxt, draw = epoch + 1, 0, 0

    @staticmethod
    def _failing(shards: list[str], bad: int) -> str:
        return (
            f"{bad} of this stream's {len(shards)} training shards cannot be read (e.g. "
            f"{shards[0]}); stopping instead of training on the few left"
        )

    def _nothing(self, shards: list[str], skipped: Counter) -> str:
        names = ", ".join(shards[:3]) + (", ..." if len(shards) > 3 else "")
        why = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "no samples"
        kept = " kept by online curation or" if self.probs is not None else ""
        return (
            f"no usable training sample{kept} in a whole pass over {len(shards)} shard(s) "
            f"({names}); skipped: {why}"
        )

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = [
            (self.rotation + worker + workers * m) % self.num_streams
            for m in range(self.num_streams // workers)
        ]
        gens = [self._batches(s) for s in mine]
        while True:
            for gen in gens:
                batch = next(gen)
                yield batch
                if "error" in batch:
                    return


class ResumableLoader:
    """Iterates a :class:`ShardStream` through a DataLoader and tracks the positions and
    the skip counts (both saved with checkpoints)."""

    def __init__(
        self,
        dataset: ShardStream,
        num_workers: int,
        start_method: str = "forkserver",
        pin_memory: bool = False,
        skipped: dict | None = None,
    ) -> None:
        self.dataset, self.num_workers = dataset, num_workers
        self.positions = dict(dataset.positions)
        self.next_stream = dataset.rotation
        self.skipped: Counter = Counter(skipped or {})
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
            pin_memory=pin_memory,
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
        self.positions[batch["stream"]] = batch["position"]
        self.skipped.update(batch["skipped"])
        self.next_stream = (self.next_stream + 1) % self.dataset.num_streams
        return batch

    def close(self) -> None:
        """Stop the worker processes."""
        self._it = None
        self._loader = None

    def state_dict(self) -> dict:
        return {
            "streams": {str(k): v for k, v in self.positions.items()},
            "next_stream": self.next_stream,
            "num_streams": self.dataset.num_streams,
            "world": self.dataset.world,
            "skipped": dict(sorted(self.skipped.items())),
        }
