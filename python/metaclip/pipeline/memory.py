"""Arrow's allocator for curation runs, and the memory available to them.

The stages allocate and free buffers of tens of MB per shard, and Arrow's default pool
returns them to the kernel at once, so every shard would pay for fresh, zeroed pages.
``keep_freed_pages`` (called before pyarrow is imported) makes Arrow's jemalloc keep them
for reuse; the process then holds its peak Arrow memory until it exits, which suits a
batch job. Figures: see docs/performance.md, section "Memory and the Arrow allocator".
"""

from __future__ import annotations

import os
from pathlib import Path

# jemalloc's start-up options for Arrow's copy of it (read once, when pyarrow loads).
JEMALLOC_ENV = "JE_ARROW_MALLOC_CONF"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0"


def jemalloc_env() -> dict[str, str]:
    """The environment that makes a new process's Arrow jemalloc keep freed pages (the
    user's own setting, if any, wins)."""
    return {JEMALLOC_ENV: os.environ.get(JEMALLOC_ENV, JEMALLOC_CONF)}


def keep_freed_pages() -> None:
    """Ask this process's Arrow jemalloc never to return freed pages; call before pyarrow
    is imported (later it has no effect)."""
    os.environ.update(jemalloc_env())


def use_reusing_pool() -> str:
    """Make jemalloc Arrow's default pool for this process; returns the pool in use. Arenas
    created from now on never purge either (the same rule as ``keep_freed_pages``, for a
    process where pyarrow loaded first). A pool chosen with ``ARROW_DEFAULT_MEMORY_POOL``
    is left alone, as is the default where pyarrow has no jemalloc (e.g. macOS)."""
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(-1)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool().backend_name
    pa.set_memory_pool(pool)
    return pool.backend_name


def available_memory(cgroup: Path = Path("/sys/fs/cgroup"), own: str = "/proc/self/cgroup") -> int:
    """Bytes this process can still allocate without swapping: the system's available
    memory, or less where its cgroup (a container, a Slurm job) has a memory limit; 0
    where neither can be told. A cgroup's usage counts its page cache, so this errs low."""
    known = [n for n in [_meminfo_available()] if n > 0]
    pairs = (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes"))
    for folder in _cgroup_folders(cgroup, Path(own)):
        for limit, used in pairs:  # v2, v1
            try:
                cap, use = int((folder / limit).read_text()), int((folder / used).read_text())
            except (OSError, ValueError):  # no such file, or "max" (no limit)
                continue
            known.append(max(0, cap - use))
    return min(known, default=0)


def _cgroup_folders(cgroup: Path, own: Path) -> list[Path]:
    """Folders that may hold this process's cgroup memory files: its own cgroup's (v2,
    v1) and the roots (inside a container the root is often its own cgroup)."""
    paths = {"v2": "", "v1": ""}
    try:
        for line in own.read_text().splitlines():
            num, controllers, path = line.split(":", 2)
            if num == "0" and not controllers:
                paths["v2"] = path.strip().lstrip("/")
            elif "memory" in controllers.split(","):
                paths["v1"] = path.strip().lstrip("/")
    except (OSError, ValueError):
        pass
    return [cgroup / paths["v2"], cgroup, cgroup / "memory" / paths["v1"], cgroup / "memory"]


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
