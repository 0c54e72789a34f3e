"""The output folder: one run at a time, only metaclip's own files touched, and the
published state (``subset/``, ``report/``, ``datacard.json``) replaced as one.

- **Lock.** A run holds an exclusive ``flock`` on ``.metaclip.lock`` (which names its pid)
  for as long as it uses the folder; a second run fails at once, naming the first. On NFS,
  Linux emulates ``flock`` with POSIX locks, which need the lock daemon (``lockd``).
- **Ownership.** ``.metaclip.json`` marks a folder metaclip made and lists the files it
  published. A non-empty folder without it is refused unless ``overwrite``; a file in
  ``subset/`` or ``report/`` that the list does not name is never deleted (the publish
  stops and names it, unless ``overwrite``).
- **Publishing.** The new outputs are complete in ``_work/`` before anything moves. A
  journal (``_work/publish.json``) is written, then the old datacard goes first, the
  subset and report are swapped by renames, and the new datacard comes last: whenever a
  ``datacard.json`` is in place it describes the ``subset/`` and ``report/`` beside it. A
  run killed midway leaves the journal, and the next run to open the folder finishes the
  swap before anything else.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path

from metaclip.exceptions import InputError
from metaclip.pipeline.io import FILE_MODE, read_json, sync_folder, write_json

LOCK = ".metaclip.lock"
MANIFEST = ".metaclip.json"
DATACARD = "datacard.json"
FOLDERS = ("subset", "report")  # published folders, listed in the manifest
JOURNAL = Path("_work") / "publish.json"
TRASH = Path("_work") / "publish-old"

# Folders this process has locked: resolved path -> [lock file descriptor, users].
_held: dict[Path, list[int]] = {}
_held_lock = threading.Lock()


class OutputFolder:
    """``--out``, locked for this process from construction until ``close``."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        path.mkdir(parents=True, exist_ok=True)
        manifest = path / MANIFEST
        if not manifest.exists() and not overwrite:
            # Work files alone (copied from another run to resume from) hold nothing to lose;
            # .metaclip* are a run's lock and manifest, ..metaclip*.tmp the manifest being
            # written (another run may be making them now).
            others = sorted(
                p.name
                for p in path.iterdir()
                if p.name != "_work" and not p.name.lstrip(".").startswith("metaclip")
            )
            if others:
                raise InputError(
                    f"--out {path}: not empty ({', '.join(others[:3])}"
                    f"{', …' if len(others) > 3 else ''}) and not made by metaclip; use "
                    "an empty folder, or pass --overwrite to write subset/, report/ and "
                    "datacard.json into it (other files stay as they are)"
                )
        self._key = path.resolve()
        _acquire(self._key)
        self.closed = False
        try:
            if not manifest.exists():
                self._write_manifest()
            self.recover()
            self.clean_temp_files()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock (once; later calls do nothing)."""
        if not self.closed:
            self.closed = True
            _release(self._key)

    # -- publishing ----------------------------------------------------------------------
    def publish(self, datacard: Path, subset: Path | None, report: Path | None) -> None:
        """Replace the published state with new outputs made under ``_work/``: the datacard
        file, the subset folder (``None``: keep the subset in place) and the report folder
        (``None``: no report; an earlier one goes, since it describes another subset)."""
        self.check_unknown_files()
        journal = {
            DATACARD: str(datacard),
            "subset": str(subset) if subset is not None else "keep",
            "report": str(report) if report is not None else None,
        }
        write_json(self.path / JOURNAL, journal)
        self.recover()

    def recover(self) -> None:
        """Finish a publish that a killed run left half done (idempotent: each step
        checks what is already in place)."""
        journal_path = self.path / JOURNAL
        if not journal_path.exists():
            return
        journal = read_json(journal_path)
        trash = self.path / TRASH
        trash.mkdir(parents=True, exist_ok=True)
        card = Path(journal[DATACARD])
        if card.exists():  # the new datacard is not in place yet
            self._move_aside(DATACARD, trash)
            for name in FOLDERS:
                source = journal[name]
                if source == "keep":
                    continue
                if source is None:
                    self._move_aside(name, trash)
                elif Path(source).exists():
                    self._move_aside(name, trash)
                    os.replace(source, self.path / name)
            sync_folder(self.path)
            os.replace(card, self.path / DATACARD)
            sync_folder(self.path)
        self._write_manifest()
        shutil.rmtree(trash)
        journal_path.unlink()

    def _move_aside(self, name: str, trash: Path) -> None:
        """Move the published ``name`` into ``trash`` (deleted once the swap is done)."""
        if (self.path / name).exists():
            os.replace(self.path / name, trash / name)

    # -- ownership -----------------------------------------------------------------------
    def _write_manifest(self) -> None:
        listed = {
            name: sorted(p.name for p in (self.path / name).iterdir())
            if (self.path / name).is_dir()
            else []
            for name in FOLDERS
        }
        write_json(self.path / MANIFEST, {"tool": "metaclip", "published": listed})

    def check_unknown_files(self) -> None:
        """Stop before publishing when ``subset/`` or ``report/`` holds a file metaclip did
        not write there (unless ``overwrite``: then it goes with the old outputs)."""
        if self.overwrite:
            return
        published = read_json(self.path / MANIFEST).get("published", {})
        for name in FOLDERS:
            folder = self.path / name
            known = set(published.get(name, []))
            if not folder.is_dir():
                continue
            unknown = sorted(p.name for p in folder.iterdir() if p.name not in known)
            if unknown:
                raise InputError(
                    f"{folder / unknown[0]}: not written by metaclip, and this run would "
                    f"replace {folder}; move it elsewhere, or pass --overwrite to delete it"
                )

    def clean_temp_files(self) -> None:
        """Remove the temp files a killed run left beside the files metaclip writes here
        (outputs are only ever renamed into place, so a temp file is never an output)."""
        for name in (DATACARD, MANIFEST):
            for tmp in self.path.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _acquire(key: Path) -> None:
    with _held_lock:
        if key in _held:
            _held[key][1] += 1
            return
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(
                f"--out {key}: another metaclip run (pid {holder}) is using this folder; "
                "wait for it to end, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = [fd, 1]


def _release(key: Path) -> None:
    with _held_lock:
        held = _held.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _held[key]
            os.close(held[0])  # closing the descriptor releases the flock
