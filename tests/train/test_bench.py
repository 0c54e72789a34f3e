"""bench/train_throughput.py --smoke runs the real training step on CPU and reports figures."""

import json
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
    assert {r["activation_checkpointing"] for r in ok} == {False, True}
    flops = 3 * sum(forward_flops_per_pair(model_preset("test-tiny")))  # forward + backward
    for r in ok:
        assert r["train_tflop_per_pair"] * 1e12 == pytest.approx(flops)
        assert r["pairs_per_s"] * r["step_s"] == pytest.approx(r["batch"])
        assert r["mfu"] == pytest.approx(r["pairs_per_s"] * flops / peak)
        assert r["peak_mem_gib"] > 0
    # xformers never runs on CPU: reported as not usable, not silently replaced by SDPA
    assert all(r["status"].startswith("n/a") for r in rows if r["attention"] == "xformers")
