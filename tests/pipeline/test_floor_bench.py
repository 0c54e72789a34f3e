"""bench/floor_bench.py --smoke: it runs the pipeline and prints a consistent table (no
time limit: the timeout only guards against a hang)."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "floor_bench.py"
HANG_GUARD_S = 1800  # not a time limit: a busy machine never gets near it


def test_floor_bench_prints_its_parts_and_their_sum(tmp_path):
    args = ["--smoke", "--cores", "2", "--root", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # 200,000 texts at 1M texts/s on 2 cores: 0.2 s, 0.4 CPU s
    assert "allows 0.20 s, at most 0.40 CPU s" in out
    heads = re.findall(r"t = ([\d,.e+]+) \((\d+)% kept\)", out)
    assert [t for t, _ in heads] == ["1", "1e+09"]
    assert int(heads[0][1]) < 100 and heads[1][1] == "100"  # t = 1e9 keeps every row

    def row(label: str) -> list[float]:
        line = next(x for x in out.splitlines() if x.startswith(label))
        return [float(v) for v in re.findall(r"\d+\.\d\d", line)[-2:]]

    read, match = row("read the pool"), row("match, 3,000 entries")
    whole = row("encode the subset: whole files")
    assert whole[1] > whole[0] >= 0  # every row re-encoded vs 1% of them
    for i in range(2):
        assert read[i] > 0 and match[i] > 0
        assert abs(row("read + match + encode")[i] - (read[i] + match[i] + whole[i])) < 0.015
    assert whole[1] >= row("encode the subset: text")[1]
    assert row("budget for the target") == [0.4, 0.4]
    assert not (tmp_path / "floor-run").exists()  # its pipeline output is removed
