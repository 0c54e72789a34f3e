"""Stops the processes of a local Ray session once the process that started it is gone.

``python -m metaclip.pipeline.ray_watchdog SESSION OWNER`` waits for end-of-file on its
stdin, whose other end only the driver holds: the kernel closes it when the driver exits,
also on SIGKILL. It then stops every process of the session (SIGTERM, then SIGKILL for what
is left after a few seconds): those whose environment holds ``OWNER_ENV=OWNER`` (the driver
set it before starting Ray, and every process Ray starts inherits it) or whose command line
names the session. After a normal ``ray.shutdown()`` there is nothing left to stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

OWNER_ENV = "METACLIP_RAY_OWNER"


def session_processes(session: str, owner: str) -> list[int]:
    """Pids of the session's processes (not this one)."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            if marker in env or session.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
    return found


def stop(session: str, owner: str, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_processes(session, owner)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = session_processes(session, owner)
        if not pids:
            return


def main() -> None:
    session, owner = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the driver is not for us
    sys.stdin.buffer.read()
    stop(session, owner)


if __name__ == "__main__":
    main()
