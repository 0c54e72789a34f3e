"""Shards, streams per (rank, worker), resumable positions, transforms, curation in the loader."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaclip.train.config import ConfigError
from metaclip.train.data import (
    ResumableLoader,
    ShardStream,
    expand_shards,
    image_to_tensor,
    keep_mask,
    read_shard,
    write_shard,
)
from metaclip.train.tokenizer import SentencePieceTokenizer


def _png(size=(40, 30), colour=(255, 0, 0)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _shards(tmp_path: Path, n_shards=6, per_shard=5, entries=False):
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            key = f"s{s}_{i}"
            meta = {"texts": [f"text {key}"]}
            if entries:
                meta["entry_ids"] = [i % 3]
            samples.append((key, _png(), "png", meta))
        write_shard(tmp_path / f"d-{s:02d}.tar", samples)
    return str(tmp_path / f"d-{{00..{n_shards - 1:02d}}}.tar")


class Keys:
    """A stand-in tokenizer that returns key numbers, so batches can be traced to samples."""

    def __call__(self, texts):
        return np.array([[int(k) for k in t.split("s")[1].split("_")] for t in texts])


def _stream(pattern, rank, world, workers, batch=2, state=None, probs=None):
    return ShardStream(
        expand_shards(pattern),
        rank=rank,
        world=world,
        num_workers=workers,
        batch_size=batch,
        tokenizer=Keys(),
        image_size=16,
        seed=3,
        probs=probs,
        state=state,
    )


def _keys(batch):
    return [f"s{a}_{b}" for a, b in batch["tokens"].tolist()]


def test_expand_shards(tmp_path):
    pattern = _shards(tmp_path, 3, 1)
    assert [Path(p).name for p in expand_shards(pattern)] == ["d-00.tar", "d-01.tar", "d-02.tar"]
    assert expand_shards(str(tmp_path / "*.tar")) == expand_shards(pattern)
    with pytest.raises(ConfigError, match="missing shard"):
        expand_shards(str(tmp_path / "d-{00..03}.tar"))
    with pytest.raises(ConfigError, match="no shards"):
        expand_shards(str(tmp_path / "nothing-*.tar"))


def test_read_shard_groups_members_by_key(tmp_path):
    write_shard(tmp_path / "x.tar", [("a", _png(), "png", {"texts": ["t"]})])
    [s] = read_shard(str(tmp_path / "x.tar"))
    assert s.key == "a" and s.meta == {"texts": ["t"]} and s.image == _png()


def test_streams_partition_shards_across_ranks_and_workers(tmp_path):
    pattern = _shards(tmp_path, n_shards=8, per_shard=4)
    seen = []
    for rank in range(2):
        for worker in range(2):  # one pass of each (rank, worker) stream = 2 shards = 4 batches
            ds = _stream(pattern, rank, 2, 2, batch=2, state={"next_stream": worker})
            it = iter(ds)
            seen.append([k for _ in range(4) for k in _keys(next(it))])
    flat = [k for s in seen for k in s]
    assert len(flat) == 32 and len(set(flat)) == 32  # every sample once, streams disjoint
    with pytest.raises(ConfigError, match="cannot feed"):
        _stream(pattern, 0, 4, 4)


def test_loader_resumes_exactly_with_workers(tmp_path):
    pattern = _shards(tmp_path, n_shards=4, per_shard=5)
    loader = ResumableLoader(_stream(pattern, 0, 1, 2, batch=3), num_workers=2)
    head = [_keys(next(loader)) for _ in range(5)]
    state = loader.state_dict()
    tail = [_keys(next(loader)) for _ in range(6)]  # crosses into the second epoch
    resumed = ResumableLoader(_stream(pattern, 0, 1, 2, batch=3, state=state), num_workers=2)
    assert [_keys(next(resumed)) for _ in range(6)] == tail
    assert sum(len(b) for b in head + tail) == 33 and state["next_stream"] == 1


def test_online_curation_keeps_exactly_the_mask(tmp_path):
    pattern = _shards(tmp_path, n_shards=1, per_shard=40, entries=True)
    probs = np.array([0.5, 0.2, 1.0])
    it = iter(_stream(pattern, 0, 1, 0, batch=1, probs=probs))
    keys = [f"s0_{i}" for i in range(40)]
    ids = np.array([i % 3 for i in range(40)], dtype=np.uint32)
    offsets = np.arange(41)
    epochs = []
    for epoch in range(2):
        mask = keep_mask(keys, offsets, ids, probs, seed=0, epoch=epoch)
        got = {k for _ in range(int(mask.sum())) for k in _keys(next(it))}
        assert got == {k for k, m in zip(keys, mask, strict=True) if m}
        epochs.append(got)
    assert epochs[0] != epochs[1]  # each pass redraws
    assert all(f"s0_{i}" in epochs[0] for i in range(2, 40, 3))  # p = 1 always kept


def test_image_transforms():
    data = _png((64, 32))
    ev = image_to_tensor(data, 24, None)
    assert ev.shape == (3, 24, 24) and ev.dtype == torch.float32
    red = (1.0 - 0.48145466) / 0.26862954
    assert torch.allclose(ev[0], torch.full((24, 24), red), atol=1e-4)  # normalized
    rng = np.random.default_rng(0)
    tr = image_to_tensor(data, 24, rng)
    assert tr.shape == (3, 24, 24)
    a = image_to_tensor(data, 24, np.random.default_rng(1))
    assert torch.equal(a, image_to_tensor(data, 24, np.random.default_rng(1)))  # seeded


def test_loader_with_a_real_tokenizer(shapes):
    tok = SentencePieceTokenizer(shapes["tokenizer"], 16)
    ds = ShardStream(
        expand_shards(shapes["train"]),
        rank=0,
        world=1,
        num_workers=0,
        batch_size=8,
        tokenizer=tok,
        image_size=32,
        seed=0,
    )
    batch = next(iter(ds))
    assert batch["images"].shape == (8, 3, 32, 32)
    assert batch["tokens"].shape == (8, 16) and batch["tokens"].dtype == torch.int64
    assert ((batch["tokens"] == tok.eos_id).sum(1) == 1).all()
