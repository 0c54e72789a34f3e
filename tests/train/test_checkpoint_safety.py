"""Hostile and damaged checkpoints and training data, as ``metaclip-train`` users meet them.

Every case is a real file crafted on disk: a pickle that would create a directory when
unpickled (it must not appear), a ``latest`` marker that points outside the run, a flipped
byte, a truncated file, an unreadable or empty training shard. Each must end in one line
``error: ...`` and exit status 2, never a traceback, a silent success or a hang.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from click.testing import CliRunner
from conftest import free_port, subprocess_env, tiny_config

from metaclip.train.cli import cli
from metaclip.train.config import config_from_dict
from metaclip.train.data import write_shard
from metaclip.train.train import run

STEP = "step_00000002"


class Evil:
    """Unpickling this creates the directory ``path`` (a stand-in for running any code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> Path:
    """A finished two-step run with its checkpoint (copy it before changing anything)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(config_from_dict(tiny_config(shapes, out, steps=2)))
    assert (out / "checkpoints" / STEP).is_dir()
    return out


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out, symlinks=True)
    (out / "open_clip_model.pt").unlink()
    return out


def _config(shapes, out: Path, path: Path, **over) -> str:
    path.write_text(json.dumps(tiny_config(shapes, out, **{"steps": 2, **over})))
    return str(path)


def _train(shapes, out: Path, tmp_path: Path, **over):
    return CliRunner().invoke(cli, ["train", _config(shapes, out, tmp_path / "cfg.json", **over)])


def _one_line_error(res, *needles: str) -> str:
    """The command failed the way a user should see it: ``error: ...``, status 2, no traceback."""
    text = res.output
    assert res.exit_code == 2, f"exit {res.exit_code}, {res.exception!r}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr[-3000:]
    line = errors[0]
    for needle in needles:
        assert needle in line, line
    return line


def _reseal(ckpt: Path) -> None:
    """Recompute the checksums a checkpoint lists (an attacker controls every file), so a
    test reaches the parser instead of stopping at the checksum."""
    manifest = ckpt / "manifest.json"
    if not manifest.exists():
        return
    doc = json.loads(manifest.read_text())
    for name, entry in doc["files"].items():
        data = (ckpt / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest.write_text(json.dumps(doc))


def _flip(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _shard_file(ckpt: Path) -> Path:
    return max(ckpt.glob("*.distcp"), key=lambda p: p.stat().st_size)


# --- code execution --------------------------------------------------------------------------


def test_pickled_metadata_is_not_executed(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Evil(marker)))
    res = _train(shapes, run_dir, tmp_path)
    assert not marker.exists(), "unpickling the checkpoint metadata ran code"
    _one_line_error(res, str(ckpt / ".metadata"), "damaged")


def test_pickled_metadata_is_never_read(shapes, run_dir, tmp_path):
    """Even with matching checksums, DCP's pickled .metadata is not what we load from."""
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Evil(marker)))
    _reseal(ckpt)
    res = _train(shapes, run_dir, tmp_path, steps=3)
    assert not marker.exists(), "unpickling the checkpoint metadata ran code"
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["start_step"] == 2


def _evil_dcp(ckpt: Path, marker: Path) -> None:
    """Rewrite the checkpoint with one model tensor replaced by a pickled object: DCP stores
    non-tensors as pickled bytes, which its default planner loads with weights_only=False."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    full = ckpt.parent / "full.pt"
    dcp_to_torch_save(str(ckpt), str(full))  # our own, trusted file
    state = torch.load(full, weights_only=False)
    full.unlink()
    victim = next(iter(state["model"]))
    state["model"][victim] = Evil(marker)
    for old in ckpt.glob("*.distcp"):
        old.unlink()
    dcp.save(state, checkpoint_id=str(ckpt), no_dist=True)
    _reseal(ckpt)


def test_pickled_tensor_bytes_are_not_executed(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    _evil_dcp(ckpt, marker)
    assert not marker.exists()
    res = _train(shapes, run_dir, tmp_path)
    assert not marker.exists(), "loading the checkpoint unpickled an object"
    _one_line_error(res, str(ckpt))


def test_export_does_not_execute_pickles(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    _evil_dcp(ckpt, marker)
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out.pt")])
    assert not marker.exists(), "export unpickled an object"
    _one_line_error(res, str(ckpt))
    assert not (tmp_path / "out.pt").exists()


def test_pickled_object_in_a_tensor_record_is_refused(shapes, run_dir, tmp_path):
    """A record that holds a pickled object instead of a tensor: torch.load(weights_only=True)
    refuses it."""
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    shard = _shard_file(ckpt)
    blob = io.BytesIO()
    torch.save(Evil(marker), blob)
    start = shard.stat().st_size
    with shard.open("ab") as f:
        f.write(blob.getvalue())
    index = json.loads((ckpt / "tensors.json").read_text())
    record = next(r for r in index["records"] if r["file"] == shard.name)
    record.update(start=start, length=len(blob.getvalue()))
    (ckpt / "tensors.json").write_text(json.dumps(index))
    _reseal(ckpt)
    res = _train(shapes, run_dir, tmp_path)
    assert not marker.exists(), "loading a tensor record unpickled an object"
    _one_line_error(res, str(ckpt), "pickled object", "mkdir")


def _huge(index: dict) -> str:
    key = next(k for k in index["tensors"] if k.startswith("model."))
    index["tensors"][key].update(size=[10**12], chunks=[[[0], [10**12]]])
    return "declares more tensor data"


def _elsewhere(index: dict) -> str:
    index["records"][0]["file"] = "../../../etc/passwd"
    return "etc/passwd"


def _not_a_dtype(index: dict) -> str:
    next(iter(index["tensors"].values()))["dtype"] = "manual_seed"
    return "not a checkpoint tensor index"


def _past_the_end(index: dict) -> str:
    index["records"][0]["start"] = 10**9
    return "past the end"


@pytest.mark.parametrize("tamper", [_huge, _elsewhere, _not_a_dtype, _past_the_end])
def test_tampered_tensor_index_is_refused(run_dir, tmp_path, tamper):
    ckpt = run_dir / "checkpoints" / STEP
    index = json.loads((ckpt / "tensors.json").read_text())
    needle = tamper(index)
    (ckpt / "tensors.json").write_text(json.dumps(index))
    _reseal(ckpt)
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out.pt")])
    _one_line_error(res, "tensors.json", needle)


def test_export_never_reads_pickled_metadata(trained, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Evil(marker)))
    _reseal(ckpt)
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out.pt")])
    assert not marker.exists(), "export unpickled the metadata"
    assert res.exit_code == 0, res.output


def test_export_matches_the_training_export(trained, tmp_path):
    out = tmp_path / "out.pt"
    res = CliRunner().invoke(cli, ["export", str(trained / "checkpoints" / STEP), str(out)])
    assert res.exit_code == 0, res.output
    a = torch.load(out, weights_only=True)
    b = torch.load(trained / "open_clip_model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- where `latest` may point ----------------------------------------------------------------


def test_latest_pointing_outside_the_run_is_refused(shapes, run_dir, tmp_path):
    # a complete checkpoint outside the output folder, reachable by ../../
    outside = tmp_path / "x"
    shutil.copytree(run_dir / "checkpoints" / STEP, outside)
    (run_dir / "checkpoints" / "latest").write_text("../../x\n")
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "latest", "outside")


def test_latest_through_a_symlink_outside_the_run_is_refused(shapes, run_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(run_dir / "checkpoints" / STEP, outside)
    (run_dir / "checkpoints" / "step_00000009").symlink_to(outside)
    (run_dir / "checkpoints" / "latest").write_text("step_00000009\n")
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "latest", "outside")


def test_latest_naming_a_missing_checkpoint_is_one_line(shapes, run_dir, tmp_path):
    (run_dir / "checkpoints" / "latest").write_text("step_00000077\n")
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "step_00000077")


def test_a_failed_write_of_latest_keeps_the_previous_one(shapes, trained, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(trained, out, symlinks=True)
    real = Path.write_text

    def failing(self, data, *a, **kw):
        if "latest" in self.name:  # the disk fills up half-way through the marker
            real(self, data[:3], *a, **kw)
            raise OSError(28, "No space left on device")
        return real(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError, match="No space left"):
        run(config_from_dict(tiny_config(shapes, out, steps=3)))
    monkeypatch.undo()
    marker = out / "checkpoints" / "latest"
    assert marker.read_text() == f"{STEP}\n"
    assert sorted(p.name for p in marker.parent.iterdir()) == sorted(
        [STEP, "latest", "step_00000003"]
    )


# --- damaged checkpoints ---------------------------------------------------------------------


def test_flipped_byte_in_a_shard_is_detected(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    shard = _shard_file(ckpt)
    _flip(shard)
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, shard.name, "checksum")


def test_nan_written_into_a_shard_is_detected(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    shard = _shard_file(ckpt)
    data = bytearray(shard.read_bytes())
    i = len(data) // 2
    data[i : i + 64] = b"\xff" * 64  # NaN float32s in the middle of some tensor
    shard.write_bytes(bytes(data))
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, shard.name)


def test_truncated_metadata_is_one_line(shapes, run_dir, tmp_path):
    meta = run_dir / "checkpoints" / STEP / ".metadata"
    meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, ".metadata")


def test_truncated_shard_is_one_line(shapes, run_dir, tmp_path):
    shard = _shard_file(run_dir / "checkpoints" / STEP)
    shard.write_bytes(shard.read_bytes()[:1000])
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, shard.name)


def test_export_of_a_damaged_checkpoint_is_one_line(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    _flip(_shard_file(ckpt))
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out.pt")])
    _one_line_error(res, "checksum")
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_without_manifest_is_refused(shapes, run_dir, tmp_path):
    """An interrupted save, or a checkpoint in the old pickled format."""
    ckpt = run_dir / "checkpoints" / STEP
    (ckpt / "manifest.json").unlink(missing_ok=True)
    res = _train(shapes, run_dir, tmp_path, steps=3, resume=str(ckpt))
    _one_line_error(res, "manifest.json")


def test_garbage_manifest_is_one_line(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    (ckpt / "manifest.json").write_text('{"files": [1, 2')
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "manifest.json")


def test_manifest_naming_a_file_outside_the_checkpoint_is_refused(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    (tmp_path / "secret").write_text("x")
    doc = json.loads((ckpt / "manifest.json").read_text())
    doc["files"]["../../../secret"] = {"bytes": 1, "sha256": "0" * 64}
    (ckpt / "manifest.json").write_text(json.dumps(doc))
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "secret")


def test_tampered_rank_state_is_one_line(shapes, run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / STEP
    (ckpt / "rank_0.json").write_text('{"data": 5, "rng": null}')
    _reseal(ckpt)
    res = _train(shapes, run_dir, tmp_path, steps=3)
    _one_line_error(res, "rank_0.json")


def test_the_loader_refuses_pickled_values_even_past_the_metadata_check(tmp_path):
    """DCP's default planner would ``torch.load(weights_only=False)`` a pickled value."""
    import io

    from metaclip.train.checkpoint_format import CheckpointError, _TensorsOnlyPlanner

    marker = tmp_path / "pwned"
    blob = io.BytesIO()
    torch.save(Evil(marker), blob)
    blob.seek(0)

    class Item:
        class dest_index:
            fqn = "model.x"

    with pytest.raises(CheckpointError, match="pickled"):
        _TensorsOnlyPlanner().load_bytes(Item(), blob)
    assert not marker.exists()


def test_two_ranks_agree_on_a_damaged_checkpoint(shapes, tmp_path):
    """The ranks share the checksum work; a file only rank 1 checks stops both ranks."""
    out = tmp_path / "run"
    cfg = _config(shapes, out, tmp_path / "cfg.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [f"--master_port={free_port()}", "-m", "metaclip.train", "train", cfg]
    first = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = out / "checkpoints" / STEP
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["world"] == 2 and {"__0_0.distcp", "__1_0.distcp"} <= manifest["files"].keys()
    names = sorted(manifest["files"])
    # rank r checks names[r::2]: damage one that rank 1 checks
    victim = next(n for n in names[1::2] if n.endswith(".distcp"))
    _flip(ckpt / victim)
    cmd[-1] = _config(shapes, out, tmp_path / "cfg3.json", steps=3)
    second = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode != 0
    errors = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 2 and all(victim in e for e in errors), second.stderr[-3000:]
    # the ranks print no traceback (torchrun prints its own launcher's, and may report a
    # rank torn down by a signal after it printed its error)
    frames = [x for x in second.stderr.splitlines() if x.strip().startswith("File ")]
    assert not any("metaclip" in x for x in frames), second.stderr[-3000:]
    assert not (out / "checkpoints" / "step_00000003").exists()


# --- training data ---------------------------------------------------------------------------


def test_no_shard_matches(shapes, tmp_path):
    res = _train(shapes, tmp_path / "out", tmp_path, **{"data.train_shards": "/nonexistent/*.tar"})
    _one_line_error(res, "no shards match")


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_shard(shapes, tmp_path, workers):
    for i in range(2):
        (tmp_path / f"bad-{i}.tar").write_bytes(b"this is not a tar file\n" * 100)
    res = _train(
        shapes,
        tmp_path / "out",
        tmp_path,
        **{"data.train_shards": str(tmp_path / "bad-*.tar"), "data.num_workers": workers},
    )
    _one_line_error(res, "bad-", ".tar")


def test_a_shard_cut_inside_a_member_is_used_and_counted(shapes, tmp_path):
    good = Path(shapes["train"].replace("{000..003}", "000"))
    with tarfile.open(good) as tf:
        members = tf.getmembers()
    cut = members[len(members) // 2]
    data = good.read_bytes()[: cut.offset_data + cut.size // 2]  # the copy stopped mid-file
    (tmp_path / "cut.tar").write_bytes(data)
    out = tmp_path / "out"
    res = _train(shapes, out, tmp_path, steps=7, **{"data.train_shards": str(tmp_path / "cut.tar")})
    assert res.exit_code == 0, res.output[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # 90 whole samples a pass at 16 a batch: the cut is met in step 6
    assert rows[-1]["step"] == 7 and rows[-1]["data/skipped_cut_shard"] == 1
    assert rows[0]["data/skipped_cut_shard"] == 0


def test_shards_without_samples_stop_instead_of_hanging(shapes, tmp_path):
    # valid tars, but no sample is complete (a json without an image): nothing to train on
    write_shard(tmp_path / "empty-0.tar", [])
    write_shard(tmp_path / "empty-1.tar", [("k", b"text", "txt", {"texts": ["a circle"]})])
    cfg = _config(
        shapes,
        tmp_path / "out",
        tmp_path / "cfg.json",
        **{"data.train_shards": str(tmp_path / "empty-*.tar"), "data.num_workers": 0},
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "metaclip.train", "train", cfg],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("metaclip-train hung on shards that hold no sample")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "empty-" in last, last


@pytest.mark.parametrize("content", [None, b"not an npy file", "pickle"])
def test_unreadable_probabilities_file(shapes, tmp_path, content):
    path = tmp_path / "probs.npy"
    if content == "pickle":  # an object array: np.load would need allow_pickle
        import numpy as np

        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content is not None:
        path.write_bytes(content)
    res = _train(shapes, tmp_path / "out", tmp_path, **{"data.probabilities": str(path)})
    _one_line_error(res, "data.probabilities", str(path))
