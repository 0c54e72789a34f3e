"""bench/loader_bench.py --smoke runs the real decoders and the real loader and reports figures."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import HANG_GUARD_S, subprocess_env

BENCH = Path(__file__).resolve().parents[2] / "bench" / "loader_bench.py"


def test_loader_bench_smoke(tmp_path):
    out = tmp_path / "loader.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out), "--simd-python", "none"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    plain = {r["size"]: r for r in report["decode"] if r["decoder"] == "PIL plain"}
    assert set(plain) == {"512x384", "1024x768"}
    assert all(r["status"] == "ok" and r["img_s"] > 0 and r["mad"] == 0 for r in plain.values())
    # draft mode changes pixels only where it scales (1024x768 -> 1/2), and only a little
    draft = {r["size"]: r for r in report["decode"] if r["decoder"] == "PIL draft"}
    assert draft["512x384"]["mad"] == 0 and 0 < draft["1024x768"]["mad"] < 2
    assert len(report["loader"]) == 4, report["loader"]  # 2 sizes x 1, 2 workers
    assert all(r["status"] == "ok" and r["img_s"] > 0 for r in report["loader"])
