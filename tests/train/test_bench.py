"""bench/train_throughput.py --smoke runs the real training step on CPU and reports figures."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S, subprocess_env

from metaclip.train.config import model_preset
from metaclip.train.model import forward_flops_per_pair

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pairs/s" in proc.stdout and "MFU" in proc.stdout
    report = json.loads(out.read_text())
    rows, peak = report["rows"], report["args"]["peak_tflops"] * 1e12
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["activation_checkpointing"] for r in ok} == {"off", "full", "selective"}
    flops = 3 * sum(forward_flops_per_pair(model_preset("test-tiny")))  # forward + backward
    for r in ok:
        assert r["train_tflop_per_pair"] * 1e12 == pytest.approx(flops)
        assert r["pairs_per_s"] * r["step_s"] == pytest.approx(r["batch"])
        assert r["mfu"] == pytest.approx(r["pairs_per_s"] * flops / peak)
        assert r["peak_mem_gib"] > 0
        assert r["graph_breaks"] == 0 and r["kernels"] == []  # not compiled; no CUDA profile
    # xformers never runs on CPU: reported as not usable, not silently replaced by SDPA
    assert all(r["status"].startswith("n/a") for r in rows if r["attention"] == "xformers")


def _row(model, attention, ac, pairs_s=None):
    row = {"model": model, "attention": attention, "activation_checkpointing": ac, "batch": 64}
    if pairs_s is None:
        return {**row, "status": "OOM"}
    return {**row, "status": "ok", "pairs_per_s": pairs_s, "mfu": 0.2, "peak_mem_gib": 70.0}


def test_table_compares_at_the_same_ac_and_survives_an_oom_baseline():
    sys.path.insert(0, str(BENCH.parent))
    from train_throughput import table

    rows = [
        _row("ViT-H-14", "sdpa", "off"),  # the no-AC baseline ran out of memory
        _row("ViT-H-14", "xformers", "off", 100.0),
        _row("ViT-H-14", "sdpa", "full", 80.0),
        _row("ViT-H-14", "xformers", "full", 100.0),
    ]
    lines = table(rows).splitlines()
    assert "nan" not in table(rows).lower()
    assert lines[2].split()[-1] == "OOM"
    assert lines[3].split()[5] == "-"  # no SDPA figure at AC off to compare with
    assert lines[5].split()[5] == "1.25x"  # xformers vs SDPA, both with full AC


GPU_CHECK = BENCH.parent / "gpu_check.sh"


def test_gpu_check_script_parses_and_uses_real_flags():
    assert os.access(GPU_CHECK, os.X_OK)
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    text = GPU_CHECK.read_text()
    assert "pip install" not in text.replace('`pip install -e ".[train]"`', "")
    helptext = subprocess.run(
        [sys.executable, str(BENCH), "--help"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = set(re.findall(r"\s(--[a-z][a-z-]+)", text)) - {"--cpu-smoke"}
    assert {"--models", "--kernels", "--compile", "--smoke"} <= used
    assert used <= set(re.findall(r"--[a-z][a-z-]+", helptext)), used


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    """The whole script on CPU: GPU tests skip, the benches run the tiny model."""
    env = {**subprocess_env(), "OUT_DIR": str(tmp_path)}
    proc = subprocess.run(
        [str(GPU_CHECK), "--cpu-smoke"], env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "recompiles (TORCH_LOGS=recompiles):" in proc.stdout
    assert json.loads((tmp_path / "eager.json").read_text())["rows"]
