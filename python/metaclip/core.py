"""Typed Python API over the Rust curation core (spec §2–§6).

Texts can be a ``list[str]``, a pyarrow string array (or chunked array) or a polars
``Series``; results are numpy arrays. Every heavy call runs in Rust with the GIL released.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaclip import _core
from metaclip._arrow import alloc as _alloc
from metaclip._arrow import packed_strings
from metaclip._arrow import to_arrow as _to_arrow
from metaclip.exceptions import MetadataError

MODES = _core.MODES  # the match modes, as the Rust core names them

__all__ = [
    "MODES",
    "LanguageThreshold",
    "MatchResult",
    "Matcher",
    "coin",
    "count_entries",
    "count_entries_sparse",
    "digest_strings",
    "hash_keys",
    "keep_probability",
    "load_metadata",
    "load_metadata_by_language",
    "matcher_digest",
    "mc2_thresholds",
    "probabilities",
    "sample_images",
    "sample_pairs",
    "select_rows",
    "spaced",
    "tail_mass",
    "threshold_for_tail",
]


@dataclass(frozen=True)
class MatchResult:
    """Matched entry ids per text in CSR form.

    ``ids[offsets[i]:offsets[i + 1]]`` are the sorted, unique entry ids of text ``i``.
    ``invalid`` lists texts that were not valid UTF-8 (they match nothing) and ``null``
    the texts that were null; both are counted skips, never silent losses.
    """

    offsets: np.ndarray  # int64[n + 1]
    ids: np.ndarray  # uint32[nnz]
    invalid: np.ndarray  # int64[k]
    null: np.ndarray  # int64[m]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def lists(self) -> list[list[int]]:
        """Ids per text as Python lists (for small results and tests)."""
        return [self.row(i).tolist() for i in range(len(self))]

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask of texts with at least one match."""
        return np.diff(self.offsets) > 0


def _view(buf: Any, dtype: Any) -> np.ndarray:
    return np.frombuffer(buf, dtype=dtype)


class Matcher:
    """A MetaCLIP substring matcher over one metadata list (entry id = list position).

    ``mode``: ``"mc1"`` (every pattern padded), ``"mc2"`` (the MetaCLIP 2 pad rule) or
    ``"fixed"`` (ours: kana/Hangul count as CJK, every Unicode space is a boundary).
    Duplicate entries raise :class:`metaclip.exceptions.MetadataError`.
    """

    def __init__(self, entries: Sequence[str], mode: str = "mc1") -> None:
        self._m = _core.Matcher(list(entries), mode)

    @classmethod
    def _wrap(cls, m: _core.Matcher) -> Matcher:
        self = cls.__new__(cls)
        self._m = m
        return self

    def save(self, path: str | Path) -> None:
        """Write the built tables to ``path`` (atomically: a temporary file, then a rename)
        for :meth:`load`."""
        self._m.save(path)

    @classmethod
    def load(cls, path: str | Path, digest: str | None = None) -> Matcher:
        """Map a file written by :meth:`save` read-only and match from it in place: no
        rebuild, and processes that load the same file share its pages. With ``digest``
        (:func:`matcher_digest` of the expected entries and mode), a file built from other
        metadata or mode raises :class:`metaclip.exceptions.MetadataError`, as does one
        of another format version."""
        return cls._wrap(_core.Matcher.load(path, digest))

    @classmethod
    def cached(
        cls, directory: str | Path, entries: Sequence[str], mode: str = "mc1", name: str = "matcher"
    ) -> Matcher:
        """The matcher over ``entries`` mapped from ``directory``: loaded when a file for
        these entries and mode is there, else built, saved and loaded. Processes calling
        this together build it once (a lock file); all of them share one copy."""
        entries = entries if isinstance(entries, list) else list(entries)
        digest = _core.matcher_digest(entries, mode)
        path = Path(directory) / f"{name}.{mode}.{digest[:16]}.mcm"
        try:
            return cls.load(path, digest)
        except (MetadataError, OSError):
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(path.name + ".lock")):
            try:  # another process may have built it while this one waited
                return cls.load(path, digest)
            except (MetadataError, OSError):
                pass
            _core.Matcher(entries, mode).save(path)
        return cls.load(path, digest)

    @property
    def digest(self) -> str:
        """Hex digest of the entries and mode (:func:`matcher_digest`)."""
        return self._m.digest

    @property
    def mapped(self) -> bool:
        """Whether the tables are used in place from a file (:meth:`load`)."""
        return self._m.mapped

    @property
    def mode(self) -> str:
        return self._m.mode

    @property
    def n_entries(self) -> int:
        return self._m.n_entries

    @property
    def n_word_entries(self) -> int:
        return self._m.n_word_entries

    @property
    def n_substring_entries(self) -> int:
        return self._m.n_substring_entries

    def __len__(self) -> int:
        return self._m.n_entries

    def memory_bytes(self) -> int:
        """Bytes of the matcher's tables (in a loaded matcher, mostly file pages)."""
        return self._m.memory_bytes()

    def automaton_bytes(self) -> int:
        """Bytes of the substring automaton's tables (part of :meth:`memory_bytes`; like the
        word tables, a loaded matcher uses them in place from the file)."""
        return self._m.automaton_bytes()

    def match_text(self, text: str) -> list[int]:
        """Sorted unique ids matched by one text."""
        return self._m.match_text(text)

    def match(self, texts: Any, threads: int = 0) -> MatchResult:
        """Match many texts with ``threads`` workers (0 = all cores)."""
        arrow = _to_arrow(texts)
        if arrow is not None:
            data, offsets, nulls = packed_strings(arrow)
            o, i, bad = self._m.match_packed(data, offsets, threads, _alloc)
        else:
            if not isinstance(texts, list):
                texts = list(texts)
            nulls = np.zeros(0, dtype=np.int64)
            o, i, bad = self._m.match_list(texts, threads, _alloc)
        return MatchResult(
            offsets=_view(o, np.int64),
            ids=_view(i, np.uint32),
            invalid=_view(bad, np.uint64).astype(np.int64),
            null=nulls,
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing); none off POSIX."""
    with open(path, "a+b") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def matcher_digest(entries: Sequence[str], mode: str = "mc1") -> str:
    """Hex digest (xxh3-128) of a metadata list and match mode: what a matcher file built
    from them carries, and what :meth:`Matcher.load` checks it against."""
    return _core.matcher_digest(entries if isinstance(entries, list) else list(entries), mode)


def spaced(text: str, fixed: bool = False) -> str:
    """``spacing(text.strip())`` exactly as the reference prepares a text."""
    return _core.spaced(text, fixed)


def digest_strings(strings: Sequence[str]) -> str:
    """Hex content digest (xxh3-128) of a list of str; any change to any string changes it."""
    return _core.digest_strings(strings if isinstance(strings, list) else list(strings))


def count_entries(
    ids: np.ndarray, n_entries: int, offsets: np.ndarray | None = None, keep: Any = None
) -> np.ndarray:
    """uint64 count per entry of CSR ids (a text counts once per entry); with ``offsets``
    and a boolean ``keep`` per row, of the kept rows only."""
    ids = np.ascontiguousarray(ids, dtype=np.uint32)
    if keep is None:
        return _view(_core.count_ids(ids, n_entries), np.uint64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    keep = np.ascontiguousarray(keep, dtype=bool).view(np.uint8)
    return _view(_core.count_rows(offsets, ids, keep, n_entries), np.uint64)


def count_entries_sparse(
    ids: np.ndarray, n_entries: int, offsets: np.ndarray | None = None, keep: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(entry ids ascending, uint64 counts) of the entries that occur: the nonzero part of
    ``count_entries``. Few ids against many entries (a small shard) are counted without
    an array over every entry; many ids, faster through one."""
    ids = np.ascontiguousarray(ids, dtype=np.uint32)
    if len(ids) >= n_entries:  # measured crossover: ~500k-1M ids against 500k entries
        dense = count_entries(ids, n_entries, offsets, keep)
        at = np.flatnonzero(dense)
        return at.astype(np.uint32), dense[at]
    if keep is None:
        e, c = _core.count_sparse(ids, n_entries)
    else:
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        keep = np.ascontiguousarray(keep, dtype=bool).view(np.uint8)
        e, c = _core.count_sparse(ids, n_entries, offsets, keep)
    return _view(e, np.uint32), _view(c, np.uint64)


def probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """MC1 ``min(1, t / count)`` per entry; count 0 gives 0 (never NaN)."""
    counts = np.ascontiguousarray(counts, dtype=np.uint64)
    return _view(_core.probabilities(counts, float(t)), np.float64)


def tail_mass(counts: np.ndarray, t: float) -> float:
    """Share of matches on entries with ``count < t``."""
    return _core.tail_mass(np.ascontiguousarray(counts, dtype=np.uint64), float(t))


def threshold_for_tail(counts: np.ndarray, tail: float) -> int:
    """The count whose ascending cumulative share is closest to ``tail`` (≥ 1)."""
    return _core.threshold_for_tail(np.ascontiguousarray(counts, dtype=np.uint64), float(tail))


@dataclass(frozen=True)
class LanguageThreshold:
    lang: str
    t: int
    tail: float
    total: int


def mc2_thresholds(
    counts: Mapping[str, np.ndarray], t_en: float, en: str = "en"
) -> dict[str, LanguageThreshold]:
    """MC2 per-language ``t`` (spec §5): English keeps ``t_en``; every other language gets
    the count whose cumulative share is closest to English's tail mass."""
    if en not in counts:
        raise ValueError(f"the English counts ({en!r}) are needed to compute the tail mass")
    tail = tail_mass(counts[en], t_en)
    out = {}
    for lang in sorted(counts):
        c = np.ascontiguousarray(counts[lang], dtype=np.uint64)
        t = int(t_en) if lang == en else threshold_for_tail(c, tail)
        out[lang] = LanguageThreshold(lang, t, tail_mass(c, t), int(c.sum()))
    return out


def hash_keys(keys: Any, seed: int) -> np.ndarray:
    """uint64 xxh3 hash of each sample key (str) under ``seed``."""
    arrow = _to_arrow(keys)
    if arrow is not None:
        data, offsets, _ = packed_strings(arrow)
        return _view(_core.hash_keys_packed(data, offsets, seed), np.uint64)
    return _view(_core.hash_keys(list(keys), seed), np.uint64)


def coin(seed: int, key: str, entry: int, epoch: int = 0) -> float:
    """The coin in [0, 1) of (seed, key, entry, epoch); entry passes iff coin < p."""
    return _core.coin(seed, key, entry, epoch)


def sample_pairs(
    keys: Any,
    matches: MatchResult,
    probs: np.ndarray,
    seed: int,
    epoch: int = 0,
    threads: int = 0,
) -> np.ndarray:
    """MC1: boolean keep mask per text; kept iff any matched entry's coin < p."""
    hashes = hash_keys(keys, seed)
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    keep = _core.sample_pairs(hashes, matches.offsets, matches.ids, probs, epoch, threads)
    return _view(keep, np.uint8).astype(bool)


def select_rows(
    offsets: np.ndarray, ids: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, ids) of the CSR rows where the boolean ``keep`` is set."""
    keep = np.ascontiguousarray(keep, dtype=bool).view(np.uint8)
    o, i = _core.select_rows(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(ids, np.uint32),
        keep,
        _alloc,
    )
    return _view(o, np.int64), _view(i, np.uint32)


def keep_probability(matches: MatchResult, probs: np.ndarray, threads: int = 0) -> np.ndarray:
    """P(keep) = 1 − Π(1 − p[e]) per text (0 for texts without matches)."""
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    kp = _core.keep_probability(matches.offsets, matches.ids, probs, threads)
    return _view(kp, np.float64)


def sample_images(
    image_keys: Any,
    image_offsets: np.ndarray,
    matches: MatchResult,
    probs: np.ndarray,
    seed: int,
    epoch: int = 0,
    threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """MC2: per image pick one matched text uniformly, then apply the keep rule.

    Image ``j`` owns text rows ``image_offsets[j]:image_offsets[j+1]`` of ``matches``.
    Returns (keep mask, picked text row or -1).
    """
    hashes = hash_keys(image_keys, seed)
    io = np.ascontiguousarray(image_offsets, dtype=np.int64)
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    keep, picked = _core.sample_images(
        hashes, io, matches.offsets, matches.ids, probs, epoch, threads
    )
    return _view(keep, np.uint8).astype(bool), _view(picked, np.int64)


def load_metadata(path: str | Path) -> list[str]:
    """Load a metadata list: ``.json`` (a JSON list of strings) or text (one per line).

    Ids are list positions; duplicates raise :class:`metaclip.exceptions.MetadataError`.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        return _core.load_metadata_json(p)
    return _core.load_metadata_lines(p)


def load_metadata_by_language(
    path: str | Path, lang_column: str = "lang", entry_column: str = "entry"
) -> dict[str, list[str]]:
    """Load a table of (language, entry) rows from parquet or JSON lines.

    Entry order within a language is row order; duplicates within a language raise
    :class:`metaclip.exceptions.MetadataError`.
    """
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from metaclip.exceptions import MetadataError

    p = Path(path)
    table = pq.read_table(p) if p.suffix.lower() == ".parquet" else pj.read_json(p)
    missing = [c for c in (lang_column, entry_column) if c not in table.column_names]
    if missing:
        raise MetadataError(f"{p}: missing column(s) {missing}; found {table.column_names}")
    langs = table.column(lang_column).to_pylist()
    entries = table.column(entry_column).to_pylist()
    out: dict[str, list[str]] = {}
    for row, (lang, entry) in enumerate(zip(langs, entries, strict=True)):
        if not isinstance(lang, str) or not isinstance(entry, str):
            raise MetadataError(f"{p}: row {row}: language and entry must be strings")
        out.setdefault(lang, []).append(entry)
    for lang, items in out.items():
        try:
            _core.check_unique(items)
        except MetadataError as e:
            raise MetadataError(f"{p}: language {lang!r}: {e}") from None
    return out
