"""Metadata as the pipeline uses it: entries per language and one matcher per language
(saved under a cache folder and memory-mapped, so the processes of a node share it)."""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path

from metaclip import core
from metaclip.exceptions import MetadataError
from metaclip.lid import OTHER


class Metadata:
    """Entries per language (id = position) with lazily built, shared matchers."""

    def __init__(
        self, entries: dict[str, list[str]], mode: str = "mc1", cache_dir: Path | None = None
    ) -> None:
        if not entries:
            raise MetadataError("the metadata has no language with entries")
        self.entries = {lang: list(v) for lang, v in sorted(entries.items())}
        self.mode = mode
        self._matchers: dict[str, core.Matcher] = {}
        self._lock = threading.Lock()
        self._digest: str | None = None
        #: Where matchers are saved and mapped from (None: built in this process).
        self.cache_dir = cache_dir

    @property
    def langs(self) -> list[str]:
        return list(self.entries)

    @property
    def single(self) -> bool:
        return len(self.entries) == 1

    def digest(self) -> str:
        """Content digest of (mode, entries); computed once (it hashes every entry)."""
        if self._digest is None:
            parts = [self.mode] + [
                f"{lang}:{len(v)}:{core.digest_strings(v)}" for lang, v in self.entries.items()
            ]
            blob = json.dumps(parts, ensure_ascii=False).encode()
            self._digest = hashlib.sha256(blob).hexdigest()[:16]
        return self._digest

    def resolve(self, lang: str | None) -> str | None:
        """The metadata language a text of ``lang`` is matched against (None: no match)."""
        if self.single:
            return self.langs[0]
        if lang in self.entries:
            return lang
        return OTHER if OTHER in self.entries else None

    def prebuild(self) -> None:
        """Build every language's matcher now (for a background thread). A failure is left
        for the caller of ``matcher`` to raise."""
        for lang in self.langs:
            try:
                self.matcher(lang)
            except Exception:
                return

    def matcher(self, lang: str) -> core.Matcher:
        """Build on first use; later calls (from any thread) share the same matcher."""
        m = self._matchers.get(lang)
        if m is None:
            with self._lock:
                m = self._matchers.get(lang)
                if m is None:
                    if self.cache_dir is None:
                        m = core.Matcher(self.entries[lang], self.mode)
                    else:
                        m = core.Matcher.cached(
                            self.cache_dir, self.entries[lang], self.mode, name=lang
                        )
                    self._matchers[lang] = m
        return m


class MetadataWarning(UserWarning):
    """Metadata that loads but has entries that cannot match as they probably should."""


#: How many offending entries a warning names.
_EXAMPLES = 5
_BOM = "\ufeff"


def load(path: str | Path, lang: str = "en") -> dict[str, list[str]]:
    """Read metadata: a JSON list or text file (one language, ``lang``), a parquet/JSON-lines
    table with ``lang`` and ``entry`` columns, or a directory of ``{lang}.json`` lists (the
    metadata builder's output). No entries at all is an error (nothing could match).

    A UTF-8 byte-order mark at the start of a file is skipped. Entries that begin or end
    with whitespace (or a stray BOM) are kept as they are (ids are positions, and entries
    are never normalized: spec §1) but raise a :class:`MetadataWarning` that counts and
    names them."""
    entries = _load(Path(path), lang)
    if not any(entries.values()):
        raise MetadataError(f"{path}: the metadata has no entries")
    warn_edge_whitespace(path, entries)
    return entries


def edge_whitespace(entries: dict[str, list[str]]) -> tuple[int, list[tuple[str, int, str]]]:
    """Entries with whitespace (``str.isspace``) or U+FEFF at either end: their number and
    the first few as (language, id, entry)."""
    n = 0
    first: list[tuple[str, int, str]] = []
    for lang, items in entries.items():
        # Two C-speed passes (~20 ms for 500k entries); the per-entry loop only when they
        # find something.
        if list(map(str.strip, items)) == items and _BOM not in "".join(items):
            continue
        odd = [i for i, e in enumerate(items) if e != e.strip() or _BOM in (e[:1], e[-1:])]
        n += len(odd)
        first += [(lang, i, items[i]) for i in odd[: _EXAMPLES - len(first)]]
    return n, first


def warn_edge_whitespace(path: str | Path, entries: dict[str, list[str]]) -> None:
    """Warn (:class:`MetadataWarning`) when entries begin or end with whitespace or U+FEFF.
    An entry is matched as ``" " + entry + " "`` (spec §2), so ``" dog"`` matches only where
    the prepared text has two spaces in a row, and one ending in a tab never does (a text's
    tabs and newlines become spaces). The entries are left as they are: ids are positions."""
    n, first = edge_whitespace(entries)
    if not n:
        return
    one = len(entries) == 1
    shown = ", ".join(
        f"{e!r} (id {i})" if one else f"{e!r} ({lang} id {i})" for lang, i, e in first
    )
    more = f" and {n - len(first)} more" if n > len(first) else ""
    what = "entry begins or ends" if n == 1 else "entries begin or end"
    warnings.warn(
        f"{path}: {n} metadata {what} with whitespace: {shown}{more}. Entries are matched "
        "as ' ' + entry + ' ' and never trimmed, so these match almost nothing; strip them "
        "in the metadata file if that was not meant.",
        MetadataWarning,
        stacklevel=2,
    )


def _load(p: Path, lang: str) -> dict[str, list[str]]:
    if p.is_dir():
        files = sorted(q for q in p.glob("*.json") if not q.name.startswith(("_", ".")))
        files = [q for q in files if q.stem not in ("summary", "datacard")]
        if not files:
            raise MetadataError(f"{p}: no {{lang}}.json metadata files in this directory")
        return {q.stem: core.load_metadata(q) for q in files}
    if not p.exists():
        raise MetadataError(f"{p}: metadata file not found")
    if p.suffix.lower() in (".parquet", ".jsonl"):
        return core.load_metadata_by_language(p)
    return {lang: core.load_metadata(p)}


def matcher_cache(setting: str | None, out: Path) -> Path | None:
    """The matcher cache folder of a run: ``--matcher-cache``, else ``out/_work/matchers``;
    ``off`` turns it off."""
    if setting == "off":
        return None
    return Path(setting) if setting else out / "_work" / "matchers"
