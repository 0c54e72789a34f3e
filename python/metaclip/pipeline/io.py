"""Atomic file output and small JSON helpers shared by the stages."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def file_id(path: Path) -> list[int]:
    """(size, mtime, inode, change time) of a file: one rewritten, replaced or copied since
    differs, even where its size is the same, and even where a copy kept size, inode and
    mtime (``cp -p``, ``rsync --inplace -t``): no one can set the change time."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (changing it
    for a moment would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files we create get the mode a plain open() would give them (mkstemp makes them 0600).
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)``, flush it to disk, then rename ``tmp`` to ``path`` (and flush the
    folder): readers see all or nothing, and after a crash the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(Path(tmp))
        except OSError as e:  # a full disk: the writer's message may not name the file
            if str(path) in str(e) or tmp in str(e):
                raise
            raise OSError(e.errno, f"{path}: {e.strerror or e}") from e
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` written atomically to ``path``."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` written atomically (through an open file, so no ``.npz`` is appended
    to the temp name)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_npy(path: Path, array: Any) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(data, encoding="utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def fingerprint(*parts: Any) -> str:
    """A short stable digest of JSON-able parts (names the work folder of a config)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
