"""Shards, streams per (rank, worker), resumable positions, transforms, curation in the loader."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaclip.train import images as images_mod
from metaclip.train.config import ConfigError
from metaclip.train.data import (
    DataError,
    ResumableLoader,
    ShardStream,
    expand_shards,
    keep_mask,
    pick_text,
    write_shard,
)
from metaclip.train.images import decode, normalize
from metaclip.train.samples import read_samples
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


def _stream(pattern, rank, world, workers, batch=2, state=None, probs=None, **kw):
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
        **kw,
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


def test_read_samples_groups_members_by_key(tmp_path):
    write_shard(tmp_path / "x.tar", [("a", _png(), "png", {"texts": ["t"]})])
    [smp], skipped = read_samples(str(tmp_path / "x.tar"))
    assert smp.key == "a" and smp.meta == {"texts": ["t"]} and smp.image == _png()
    assert smp.texts == ["t"] and smp.entry_ids is None and not skipped


def test_expand_shards_passes_urls_through():
    assert expand_shards("pipe:cat x-{0..1}.tar,s3://b/y.tar") == [
        "pipe:cat x-0.tar",
        "pipe:cat x-1.tar",
        "s3://b/y.tar",
    ]


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


def test_the_three_layouts_are_read_as_they_are(tmp_path):
    img = _png()
    _tar(
        tmp_path / "x.tar",
        [
            # ours: several texts, entry ids and language per text
            ("a.jpg", img),
            (
                "a.json",
                json.dumps(
                    {"texts": ["x", "y"], "entry_ids": [[1], [2, 3]], "lang": ["en", "de"]}
                ).encode(),
            ),
            # img2dataset: caption in the json (and a .txt), saved columns beside it
            ("000000001.jpg", img),
            ("000000001.txt", b"from txt"),
            (
                "000000001.json",
                json.dumps({"caption": "cap", "entry_ids": [4, 5], "lang": "en"}).encode(),
            ),
            # open_clip / LAION: image + txt only
            ("b.png", img),
            ("b.txt", b"ein Bild"),
        ],
    )
    got, skipped = read_samples(str(tmp_path / "x.tar"))
    assert not skipped
    a, i2d, b = got
    assert (a.texts, a.entry_ids, a.langs) == (["x", "y"], [[1], [2, 3]], ["en", "de"])
    assert (i2d.key, i2d.texts, i2d.entry_ids, i2d.langs) == (
        "000000001",
        ["cap"],
        [[4, 5]],
        ["en"],
    )
    assert (b.texts, b.entry_ids, b.ext) == (["ein Bild"], None, "png")


def test_streams_partition_shards_across_ranks_and_workers(tmp_path):
    pattern = _shards(tmp_path, n_shards=8, per_shard=4)
    seen = []
    for rank in range(2):  # in one process a rank serves its 2 streams in turn
        it = iter(_stream(pattern, rank, 2, 2, batch=2))
        batches = [next(it) for _ in range(8)]  # one pass of each stream: 2 shards = 4 batches
        assert [b["stream"] for b in batches] == [0, 1] * 4
        seen += [_keys(b) for b in batches]
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
    ev = decode(data, 24, None)
    assert ev.shape == (3, 24, 24) and ev.dtype == torch.uint8
    assert (ev[0] == 255).all() and (ev[1:] == 0).all()
    red = (1.0 - 0.48145466) / 0.26862954
    x = normalize(ev[None])
    assert x.dtype == torch.float32 and torch.allclose(
        x[0, 0], torch.full((24, 24), red), atol=1e-4
    )
    tr = decode(data, 24, np.random.default_rng(0))
    assert tr.shape == (3, 24, 24)
    a = decode(data, 24, np.random.default_rng(1))
    assert torch.equal(a, decode(data, 24, np.random.default_rng(1)))  # seeded


def _jpeg(size=(640, 480), seed=0):
    rng = np.random.default_rng(seed)
    arr = (rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_jpeg_draft_decode_stays_close_to_a_full_decode():
    data = _jpeg()
    fast = decode(data, 64, None).float()
    img = Image.open(io.BytesIO(data)).convert("RGB")  # full decode, same crop and resize
    full = img.resize((64, 64), Image.Resampling.BICUBIC, box=(80, 0, 560, 480))
    ref = torch.from_numpy(np.asarray(full).transpose(2, 0, 1).astype(np.float32))
    assert (fast - ref).abs().mean() < 4.0  # DCT-domain downscale: a few levels of 255


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


def _bad_shard(path: Path) -> dict:
    """A shard with one good sample after each kind of bad one; returns the skips."""
    good = _png()
    jpeg = _jpeg((64, 48))
    _tar(
        path,
        [
            ("s0_0.png", good),
            ("s0_0.json", b'{"texts": ["s0_0"]}'),
            ("s0_1.jpg", jpeg[: len(jpeg) // 2]),  # truncated JPEG
            ("s0_1.json", b'{"texts": ["s0_1"]}'),
            ("s0_2.png", good),
            ("s0_2.json", b'{"texts": []}'),  # no text
            ("s0_3.png", b""),  # zero-byte member
            ("s0_3.json", b'{"texts": ["s0_3"]}'),
            ("s0_4.png", b"not an image at all"),
            ("s0_4.json", b'{"texts": ["s0_4"]}'),
            ("s0_5.png", good),
            ("s0_5.json", b"{not json"),
            ("s0_6.json", b'{"texts": ["s0_6"]}'),  # no image
            ("s0_7.png", good),
            ("s0_7.json", b'{"texts": ["s0_7"]}'),
        ],
    )
    return {"bad_image": 3, "no_text": 1, "bad_json": 1, "no_image": 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_samples_are_skipped_and_counted(tmp_path, workers):
    want = _bad_shard(tmp_path / "d-00.tar")
    write_shard(tmp_path / "d-01.tar", [("s1_0", _png(), "png", {"texts": ["s1_0"]})])
    loader = ResumableLoader(
        _stream(str(tmp_path / "d-*.tar"), 0, 1, workers, batch=1, streams=2), workers
    )
    got = [k for _ in range(8) for k in _keys(next(loader))]  # two passes of d-00
    assert got == ["s0_0", "s1_0", "s0_7", "s1_0"] * 2
    assert loader.skipped == {k: 2 * v for k, v in want.items()}
    assert loader.state_dict()["skipped"] == dict(sorted(loader.skipped.items()))
    loader.close()


def test_a_cut_shard_is_used_up_to_the_cut_and_counted(tmp_path):
    write_shard(
        tmp_path / "d-00.tar",
        [(f"s0_{i}", _png(), "png", {"texts": [f"s0_{i}"]}) for i in range(4)],
    )
    data = (tmp_path / "d-00.tar").read_bytes()
    with tarfile.open(tmp_path / "d-00.tar") as tf:
        third = next(m for m in tf.getmembers() if m.name == "s0_2.png")
    (tmp_path / "d-00.tar").write_bytes(data[: third.offset_data + 10])  # cut mid-member
    loader = ResumableLoader(_stream(str(tmp_path / "d-00.tar"), 0, 1, 0, batch=1), 0)
    got = [k for _ in range(4) for k in _keys(next(loader))]
    assert got == ["s0_0", "s0_1"] * 2
    assert loader.skipped == {"cut_shard": 2}


def test_a_tar_cut_at_a_header_boundary_is_counted(tmp_path):
    write_shard(
        tmp_path / "d.tar", [(f"s0_{i}", _png(), "png", {"texts": [f"s0_{i}"]}) for i in range(3)]
    )
    with tarfile.open(tmp_path / "d.tar") as tf:
        last = tf.getmembers()[-1]
    data = (tmp_path / "d.tar").read_bytes()
    (tmp_path / "d.tar").write_bytes(data[: last.offset])  # stops right before a header
    loader = ResumableLoader(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1), 0)
    assert [k for _ in range(3) for k in _keys(next(loader))] == ["s0_0", "s0_1", "s0_0"]
    # s0_2's image was read, its json was not: the sample has no text
    assert loader.skipped["cut_shard"] >= 1


def test_too_many_pixels_is_counted_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 100)
    write_shard(tmp_path / "d.tar", [("s0_0", _png(), "png", {"texts": ["s0_0"]})])
    it = iter(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1))
    batch = next(it)
    assert "error" in batch and "too_large 1" in batch["error"]


def test_most_shards_unreadable_stops_cleanly(tmp_path):
    for i in range(3):
        (tmp_path / f"d-{i}.tar").write_bytes(b"this is not a tar file\n" * 100)
    write_shard(tmp_path / "d-3.tar", [("s0_0", _png(), "png", {"texts": ["s0_0"]})])
    loader = ResumableLoader(_stream(str(tmp_path / "d-*.tar"), 0, 1, 0, batch=1), 0)
    with pytest.raises(DataError, match="cannot be read"):
        for _ in range(10):
            next(loader)


def test_one_unreadable_shard_is_skipped(tmp_path):
    (tmp_path / "d-0.tar").write_bytes(b"this is not a tar file\n" * 100)
    for i in (1, 2):
        write_shard(tmp_path / f"d-{i}.tar", [(f"s{i}_0", _png(), "png", {"texts": [f"s{i}_0"]})])
    loader = ResumableLoader(_stream(str(tmp_path / "d-*.tar"), 0, 1, 0, batch=1), 0)
    assert sorted(k for _ in range(2) for k in _keys(next(loader))) == ["s1_0", "s2_0"]
    assert loader.skipped == {"bad_shard": 1}


def test_same_batches_for_one_and_two_workers(tmp_path):
    pattern = _shards(tmp_path, n_shards=6, per_shard=5)
    runs = []
    for workers in (0, 1, 2):
        loader = ResumableLoader(_stream(pattern, 0, 1, workers, batch=3, streams=2), workers)
        runs.append([_keys(next(loader)) for _ in range(12)])
        loader.close()
    assert runs[0] == runs[1] == runs[2]
    assert len({k for b in runs[0][:10] for k in b}) == 30  # one pass: every sample once


def test_window_mixes_shards_and_resumes_mid_epoch(tmp_path):
    pattern = _shards(tmp_path, n_shards=4, per_shard=6)
    loader = ResumableLoader(_stream(pattern, 0, 1, 0, batch=4, shuffle_window=3), 0)
    first = _keys(next(loader)) + _keys(next(loader))
    assert len({k.split("_")[0] for k in first}) > 1  # drawn from several open shards
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint stores it
    tail = [_keys(next(loader)) for _ in range(8)]  # into the next pass
    again = ResumableLoader(_stream(pattern, 0, 1, 0, batch=4, shuffle_window=3, state=state), 0)
    assert [_keys(next(again)) for _ in range(8)] == tail


def test_text_picked_per_epoch_among_matched_texts(tmp_path):
    texts = ["s0_0", "s0_1", "s0_2", "s0_3"]
    ids = [[0], [], [1], [2]]
    write_shard(tmp_path / "d.tar", [("s0_0", _png(), "png", {"texts": texts, "entry_ids": ids})])
    it = iter(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1))
    picked = [_keys(next(it))[0] for _ in range(40)]
    assert "s0_1" not in picked  # it matched nothing
    assert set(picked) == {"s0_0", "s0_2", "s0_3"}  # a new pick per pass


def test_online_curation_picks_the_text_the_curation_picks(tmp_path):
    probs = np.array([0.9, 0.3, 0.6])
    samples = []
    for i in range(30):
        ids = [[i % 3], [], [(i + 1) % 3]]
        samples.append(
            (f"s0_{i}", _png(), "png", {"texts": [f"s0_{i}", "s9_9", f"s1_{i}"], "entry_ids": ids})
        )
    write_shard(tmp_path / "d.tar", samples)
    it = iter(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1, probs=probs))
    for epoch in range(2):
        want = []
        for key, _, _, meta in samples:
            t = pick_text(key, meta["entry_ids"], probs, 0, epoch)
            if t is not None:
                want.append(meta["texts"][t])
        got = [_keys(next(it))[0] for _ in range(len(want))]
        assert sorted(got) == sorted(want) and "s9_9" not in got


def test_online_curation_that_keeps_nothing_stops(tmp_path):
    write_shard(
        tmp_path / "d.tar", [("s0_0", _png(), "png", {"texts": ["s0_0"], "entry_ids": [0]})]
    )
    it = iter(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1, probs=np.zeros(1)))
    batch = next(it)
    assert "error" in batch and "online curation" in batch["error"]


def test_online_curation_without_entry_ids_is_counted(tmp_path):
    write_shard(tmp_path / "d.tar", [("s0_0", _png(), "png", {"texts": ["s0_0"]})])
    batch = next(iter(_stream(str(tmp_path / "d.tar"), 0, 1, 0, batch=1, probs=np.ones(1))))
    assert "no_entry_ids 1" in batch["error"]


def test_language_offsets_map_ids_into_the_probabilities(tmp_path):
    meta = {"texts": ["s0_0"], "entry_ids": [0], "lang": "de"}
    write_shard(tmp_path / "d.tar", [("s0_0", _png(), "png", meta)])
    probs = np.array([1.0, 0.0])  # en 0, de 1: de's entry 0 is global id 1, never kept
    offsets = {"en": 0, "de": 1}
    batch = next(
        iter(
            _stream(
                str(tmp_path / "d.tar"), 0, 1, 0, batch=1, probs=probs, language_offsets=offsets
            )
        )
    )
    assert "error" in batch
    probs = np.array([0.0, 1.0])
    batch = next(
        iter(
            _stream(
                str(tmp_path / "d.tar"), 0, 1, 0, batch=1, probs=probs, language_offsets=offsets
            )
        )
    )
    assert _keys(batch) == ["s0_0"]


def test_remote_shards_through_pipe_and_fsspec(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    write_shard(tmp_path / "d.tar", [("s0_0", _png(), "png", {"texts": ["s0_0"]})])
    with fsspec.open("memory://bucket/d.tar", "wb") as f:  # an fsspec filesystem, in memory
        f.write((tmp_path / "d.tar").read_bytes())
    for url in (f"pipe:cat {tmp_path / 'd.tar'}", "memory://bucket/d.tar"):
        batch = next(iter(_stream(url, 0, 1, 0, batch=1)))
        assert _keys(batch) == ["s0_0"], url
    for url in ("memory://bucket/nothing.tar", "pipe:exit 3"):
        batch = next(iter(_stream(url, 0, 1, 0, batch=1)))
        assert "error" in batch and "cannot be read" in batch["error"], url


def test_batches_do_not_depend_on_the_folder_of_the_shards(tmp_path):
    for folder in ("a", "b"):  # the same shards in two folders
        (tmp_path / folder).mkdir()
        for k in range(2):
            samples = [
                (f"s{k}_{i}", _jpeg((64, 48), seed=i), "jpg", {"texts": [f"s{k}_{i}"]})
                for i in range(3)
            ]
            write_shard(tmp_path / folder / f"d-{k}.tar", samples)
    runs = []
    for folder in ("a", "b"):
        it = iter(_stream(str(tmp_path / folder / "d-{0..1}.tar"), 0, 1, 0, batch=2))
        runs.append([next(it) for _ in range(3)])
    for x, y in zip(*runs, strict=True):  # the same crops: augmentation is keyed by name
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["tokens"], y["tokens"])
