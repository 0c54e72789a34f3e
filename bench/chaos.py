"""Kill `metaclip-curate run` at random moments, resume it, and check nothing was lost.

    python bench/chaos.py                 # 20 kills on a ~10 s pool, 3 concurrent pairs
    python bench/chaos.py --smoke         # a small pool, 3 kills, 1 pair: checks it works

Each trial starts a real `metaclip-curate run` into a fresh folder, sends SIGKILL after a
random delay (uniform over the length of an uninterrupted run, so kills land in every
stage), checks that a datacard in place describes the subset beside it, then reruns the
same command to the end and compares the outputs with an uninterrupted run's: the subset
files byte for byte, the datacard, and the rows. Then pairs of runs are started together
into one folder: one must finish, the other stop at once naming the first (the lock), and
the outputs must equal the uninterrupted run's. Prints a table; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_bench import make_pool


def curate(pool: Path, md: Path, out: Path, args) -> list[str]:
    return [
        sys.executable, "-m", "metaclip.cli", "run", str(pool), "-m", str(md), "-o", str(out),
        "--t", str(args.t), "--workers", str(args.workers), "--rows-per-file",
        str(args.rows_per_file), "-q",
    ]  # fmt: skip


def outputs(out: Path) -> tuple[dict[str, str], dict | None, int]:
    """(sha256 of each subset file, the datacard, rows in the subset files)."""
    import pyarrow.parquet as pq

    files = sorted((out / "subset").glob("*.parquet"))
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    card_path = out / "datacard.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else None
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return digests, card, rows


def stage_of(out: Path) -> str:
    """Where a killed run was, from what it left in its work folder."""
    work = out / "_work"
    if (out / "datacard.json").exists():
        return "done"
    if (work / "publish.json").exists():
        return "publish"
    if list(work.glob("sample-*/subset-*.tmp")):
        return "write"
    if list(work.glob("sample-*/*.npz")):
        return "sample"
    if list(work.glob("sample-*/probs.npy")):
        return "balance"
    if list(work.glob("match-*/counts.npz")):
        return "count"
    if list(work.glob("match-*/*.json")):
        return "match"
    return "start-up"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=3, help="concurrent runs into one folder")
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--texts", type=int, default=3_000_000)
    ap.add_argument("--shards", type=int, default=30)
    ap.add_argument("--t", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows-per-file", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true", help="200k texts, 3 kills, 1 pair")
    args = ap.parse_args()
    if args.smoke:
        args.entries, args.texts, args.shards, args.kills, args.pairs = 3_000, 200_000, 8, 3, 1
        args.rows_per_file = 20_000
    rng = random.Random(args.seed)
    md, pool = make_pool(args.root, args.entries, args.texts, args.shards)
    work = args.root / "chaos"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    t0 = time.perf_counter()
    subprocess.run(curate(pool, md, work / "ref", args), check=True, stdout=subprocess.DEVNULL)
    length = time.perf_counter() - t0
    ref = outputs(work / "ref")
    print(f"pool: {args.texts:,} texts in {args.shards} shards; an uninterrupted run takes "
          f"{length:.1f} s; subset {ref[2]:,} rows in {len(ref[0])} files")  # fmt: skip

    stages: Counter[str] = Counter()
    identical = lost = torn = 0
    for i in range(args.kills):
        out = work / f"kill-{i:03d}"
        proc = subprocess.Popen(curate(pool, md, out, args), stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, length * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stages[stage_of(out)] += 1
        _, card, rows = outputs(out)
        if card is not None and card["subset"]["size"] != rows:
            torn += 1  # a datacard beside another run's (or a partial) subset
        subprocess.run(curate(pool, md, out, args), check=True, stdout=subprocess.DEVNULL)
        got = outputs(out)
        identical += got[:2] == ref[:2]
        lost += max(0, ref[2] - got[2])
        shutil.rmtree(out)

    pair_ok = pair_refused = 0
    for i in range(args.pairs):
        out = work / f"pair-{i:03d}"
        procs = [
            subprocess.Popen(
                curate(pool, md, out, args),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = sorted((p.wait(), p.stderr.read()) for p in procs)  # type: ignore[union-attr]
        codes = [c for c, _ in results]
        refused = codes == [0, 2] and "another metaclip run" in results[1][1]
        pair_refused += refused
        # One refused at once, or (a run that ended before the other started) one after
        # the other; either way the outputs must be those of one run.
        if (refused or codes == [0, 0]) and outputs(out)[:2] == ref[:2]:
            pair_ok += 1
        else:
            print(f"pair {i}: exit statuses {codes}; stderr: {[e[-300:] for _, e in results]}")
        shutil.rmtree(out)

    rows = [
        ("kills tried", args.kills),
        ("  landed in (stage: kills)", ", ".join(f"{k}: {v}" for k, v in sorted(stages.items()))),
        ("byte-identical after resume", f"{identical} of {args.kills}"),
        ("datacard beside another subset after a kill", torn),
        ("rows lost", lost),
        ("concurrent pairs ending with one run's bytes", f"{pair_ok} of {args.pairs}"),
        ("  of which the second was refused (lock)", pair_refused),
    ]
    for name, value in rows:
        print(f"{name:52} {value}")
    if args.json:
        figures = {
            "kills": args.kills, "stages": dict(stages), "identical": identical,
            "torn": torn, "rows_lost": lost, "pairs": args.pairs, "pairs_ok": pair_ok,
            "pairs_refused": pair_refused, "run_s": length,
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    ok = identical == args.kills and torn == 0 and lost == 0 and pair_ok == args.pairs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
