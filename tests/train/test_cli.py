"""End to end through the console entry point: ``torchrun -m metaclip.train train ...`` on two
CPU ranks (gloo), DCP checkpoint + resume on two ranks, offline export; a NaN loss stops."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_config, torchrun

from metaclip.train.cli import cli
from metaclip.train.config import config_from_dict
from metaclip.train.train import NonFiniteLossError, run


def _write(cfg: dict, path: Path) -> str:
    path.write_text(json.dumps(cfg))
    return str(path)


def test_two_rank_cli_run_checkpoint_resume_and_export(shapes, tmp_path):
    cfg = _write(tiny_config(shapes, tmp_path / "unused", steps=4), tmp_path / "run.json")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = torchrun(
        [
            "-m",
            "metaclip.train",
            "train",
            cfg,
            "--set",
            f"output_dir='{a}'",
            "--set",
            "checkpoint_every=2",
        ]
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["loss"] > 0
    assert (a / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    rows = [json.loads(x) for x in (a / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]

    # resume the second half on two ranks from the step-2 checkpoint of run a
    torchrun(
        [
            "-m",
            "metaclip.train",
            "train",
            cfg,
            "--set",
            f"output_dir='{b}'",
            "--set",
            f"resume='{a / 'checkpoints' / 'step_00000002'}'",
        ]
    )
    final_a = torch.load(a / "open_clip_model.pt")
    final_b = torch.load(b / "open_clip_model.pt")
    diff = max((final_a[k] - final_b[k]).abs().max().item() for k in final_a)
    assert diff <= 1e-6, diff

    # offline conversion of the sharded checkpoint == the export written at the end
    out = tmp_path / "export.pt"
    res = CliRunner().invoke(cli, ["export", str(a / "checkpoints" / "step_00000004"), str(out)])
    assert res.exit_code == 0, res.output
    offline = torch.load(out)
    assert offline.keys() == final_a.keys() and offline["logit_scale"].shape == ()
    assert all(torch.equal(offline[k], final_a[k]) for k in final_a)


def test_non_finite_loss_stops_the_run(shapes, tmp_path):
    cfg = tiny_config(shapes, tmp_path, steps=5, **{"optim.lr": 1e30, "optim.warmup_steps": 0})
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step \d"):
        run(config_from_dict(cfg))
    assert not (tmp_path / "open_clip_model.pt").exists()


def test_non_finite_loss_is_checked_at_log_and_checkpoint_steps(shapes, tmp_path):
    """The loss stays on the device between log steps (no host sync per step); the first
    non-finite step is remembered and reported, and no checkpoint is written after it."""
    over = {"optim.lr": 1e30, "optim.warmup_steps": 0}
    cfg = tiny_config(shapes, tmp_path / "a", steps=8, log_every=4, **over)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 .*seen at step 4"):
        run(config_from_dict(cfg))
    cfg = tiny_config(shapes, tmp_path / "b", steps=8, log_every=8, checkpoint_every=3, **over)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 .*seen at step 3"):
        run(config_from_dict(cfg))
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_resume_with_other_world_size_is_refused(shapes, tmp_path):
    base = tiny_config(shapes, tmp_path / "r", steps=2)
    run(config_from_dict(base))
    with pytest.raises(ValueError, match="data streams; resume with the same"):
        run(config_from_dict({**base, "steps": 4, "data": {**base["data"], "num_workers": 2}}))


@pytest.mark.slow
def test_two_rank_hsdp_run_evaluates_checkpoints_and_resumes(shapes, tmp_path):
    """The whole trainer on a (2, 1) HSDP mesh: eval on, a DCP checkpoint, a resume."""
    raw = tiny_config(
        shapes,
        tmp_path / "unused",
        steps=2,
        **{"distributed.mesh_shape": [2, 1], "eval.zeroshot_shards": shapes["eval"]},
    )
    raw["eval"].update(classnames=shapes["classnames"], retrieval_shards=shapes["eval"])
    cfg = _write(raw, tmp_path / "run.json")
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["-m", "metaclip.train", "train", cfg, "--set"]
    proc = torchrun([*base, f"output_dir='{a}'", "--set", "checkpoint_every=1"])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and 0 <= summary["eval"]["zeroshot/top1"] <= 1
    step1 = a / "checkpoints" / "step_00000001"
    torchrun([*base, f"output_dir='{b}'", "--set", f"resume='{step1}'"])
    final_a = torch.load(a / "open_clip_model.pt")
    final_b = torch.load(b / "open_clip_model.pt")
    assert max((final_a[k] - final_b[k]).abs().max().item() for k in final_a) <= 1e-6
