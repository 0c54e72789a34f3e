"""bench/chaos.py --smoke: real kills at random moments, then resumes; the bench exits 0
only when every resumed run has the uninterrupted run's bytes and no row was lost."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
HANG_GUARD_S = 1800  # not a time limit: only a hang gets near it


def test_chaos_smoke(tmp_path):
    report = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--root", str(tmp_path), "--json", str(report)],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    figures = json.loads(report.read_text())
    assert figures["kills"] == 3 and figures["identical"] == 3
    assert figures["rows_lost"] == 0 and figures["torn"] == 0
    assert figures["pairs_ok"] == figures["pairs"] == 1
    assert sum(figures["stages"].values()) == 3
    assert "byte-identical after resume" in proc.stdout
