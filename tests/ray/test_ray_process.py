"""`metaclip-curate --engine ray` as a user runs it: a real process that starts its own
local Ray. Quiet means quiet, and a driver killed with SIGKILL leaves no Ray process of
its session behind (Ray stops its head processes, not its agents and idle workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")

HANG_GUARD_S = 600  # not a time limit: only a hang gets near it


def pool(root: Path, shards: int, rows: int) -> tuple[Path, Path]:
    src = root / "pool"
    src.mkdir(parents=True)
    for s in range(shards):
        keys = [f"k{s}-{i}" for i in range(rows)]
        pq.write_table(
            pa.table({"key": keys, "text": ["a dog and a cat"] * rows}), src / f"{s}.parquet"
        )
    md = root / "md.json"
    md.write_text(json.dumps(["dog", "cat"]))
    return src, md


def curate(src: Path, md: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "metaclip.cli", "run", str(src), "-m", str(md), "-o",
            str(out), "--engine", "ray", "-q"]  # fmt: skip


def owned_by(pid: int) -> list[int]:
    """Processes started for the Ray session of driver ``pid`` (see ray_watchdog)."""
    marker = f"METACLIP_RAY_OWNER={pid}-".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e.startswith(marker) for e in env):
                found.append(int(proc.name))
    return found


def test_quiet_ray_run_prints_nothing_on_stderr(tmp_path):
    src, md = pool(tmp_path, 2, 500)
    done = subprocess.run(
        curate(src, md, tmp_path / "out"), capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


def test_a_killed_driver_leaves_no_ray_process_of_its_session(tmp_path):
    """Ray's agents outlive a killed driver for about a minute; the watchdog the driver
    started stops them: once it has exited, nothing of the session is left."""
    src, md = pool(tmp_path, 16, 100_000)
    driver = subprocess.Popen(
        curate(src, md, tmp_path / "out"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + HANG_GUARD_S
    owner = f"\0{driver.pid}-".encode()  # the watchdog's last argument: driver pid-token
    watchdogs: list[int] = []
    while time.time() < deadline and not watchdogs and driver.poll() is None:
        time.sleep(0.2)  # the driver starts its watchdog once Ray is up
        watchdogs = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and b"ray_watchdog" in cmdline(int(p.name))
            and owner in cmdline(int(p.name))
        ]  # fmt: skip
    assert driver.poll() is None, "the run ended before it could be killed"
    assert len(watchdogs) == 1 and owned_by(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    while time.time() < deadline and Path(f"/proc/{watchdogs[0]}").exists():
        time.sleep(0.1)
    left = owned_by(driver.pid)
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == []


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
