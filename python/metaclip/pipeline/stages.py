"""The curation stages as pure functions over Arrow tables (spec §7).

``match_table`` and ``sample_table`` work on one standardized shard (see ``pool.py``) and
hold no state, so the embedded engine and a distributed engine call the very same code.
Entry ids in outputs are per language (``lang`` + ``entry_ids``); the coins of §6 use the
*global* id ``offset[lang] + id``, where languages are concatenated in sorted order (for
one language the two are the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip import core
from metaclip._arrow import contiguous
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.pool import SKIP_REASONS

# Per shard, row-aligned with the standardized shard: the row's language (index into
# ``md.langs``; -1 when it has none) and its matched entry ids (per-language ids).
MATCH_SCHEMA = pa.schema([("lang", pa.int16()), ("entry_ids", pa.large_list(pa.uint32()))])


@dataclass
class MatchStats:
    texts: int = 0
    matched: int = 0
    unmatched: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_rows: dict[str, list[int]] = field(default_factory=dict)
    lang_texts: dict[str, int] = field(default_factory=dict)
    lang_matched: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "texts": self.texts,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "skipped": self.skipped,
            "skipped_rows": self.skipped_rows,
            "lang_texts": self.lang_texts,
            "lang_matched": self.lang_matched,
        }

    def add(self, other: dict) -> None:
        self.texts += other["texts"]
        self.matched += other["matched"]
        self.unmatched += other["unmatched"]
        for k, v in other["skipped"].items():
            self.skipped[k] = self.skipped.get(k, 0) + v
        for k, rows in other.get("skipped_rows", {}).items():
            self.skipped_rows.setdefault(k, [])
            self.skipped_rows[k] = (self.skipped_rows[k] + rows)[:5]
        for mine, theirs in (
            (self.lang_texts, other["lang_texts"]),
            (self.lang_matched, other["lang_matched"]),
        ):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v


def text_languages(table: pa.Table, md: Metadata, lid=None) -> np.ndarray:
    """Index into ``md.langs`` of the language each row is matched against (-1: none)."""
    n = table.num_rows
    if md.single:
        return np.zeros(n, dtype=np.int32)
    if "__lang" in table.column_names:
        raw = contiguous(table.column("__lang"))
    elif lid is not None:
        raw = lid(table.column("__text"))
    else:
        raise ValueError(
            "the metadata has several languages: give the pool's language column "
            "(--lang-column) or enable language identification (--lid)"
        )
    if isinstance(raw, pa.ChunkedArray):
        raw = contiguous(raw)
    enc = raw if pa.types.is_dictionary(raw.type) else pc.dictionary_encode(raw.cast(pa.string()))
    index = {lang: i for i, lang in enumerate(md.langs)}
    resolved = [md.resolve(v) for v in enc.dictionary.to_pylist()]
    lut = np.array([index[r] if r is not None else -1 for r in resolved] + [-1], np.int32)
    codes = pc.fill_null(enc.indices, len(lut) - 1).to_numpy(zero_copy_only=False)
    return lut[codes]


def match_table(
    table: pa.Table, md: Metadata, threads: int = 0, lid=None
) -> tuple[pa.Table, MatchStats, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Match one standardized shard. Returns (matches, stats, counts), where ``matches``
    (``MATCH_SCHEMA``) has one row per shard row (unmatched rows: no ids) and ``counts``
    holds per language the (ids, counts) of the entries the shard matched."""
    n = table.num_rows
    stats = MatchStats(texts=n)
    skip = contiguous(table.column("__skip"))
    usable = skip.is_null().to_numpy(zero_copy_only=False)
    if skip.null_count < n:
        enc = pc.dictionary_encode(skip)
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        for i, reason in enumerate(enc.dictionary.to_pylist()):
            rows = np.flatnonzero(codes == i)
            stats.skipped[reason] = len(rows)
            stats.skipped_rows[reason] = rows[:5].tolist()
        stats.skipped = {r: stats.skipped[r] for r in SKIP_REASONS if r in stats.skipped}
    langs = text_languages(table, md, lid)
    texts = contiguous(table.column("__text"))
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    # Group usable rows by language once (stable: rows stay in order within a language).
    group = np.where(usable, langs, -1)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(md.langs) + 1))
    lens = np.zeros(n, dtype=np.int64)
    found: list[tuple[np.ndarray, core.MatchResult]] = []
    for li, lang in enumerate(md.langs):
        sel = order[bounds[li] : bounds[li + 1]]
        stats.lang_texts[lang] = len(sel)
        if len(sel) == 0:
            counts[lang] = (np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint64))
            continue
        m = md.matcher(lang)
        sub = texts if len(sel) == n else texts.take(pa.array(sel))
        res = m.match(sub, threads=threads)
        counts[lang] = core.count_entries_sparse(res.ids, m.n_entries)
        stats.lang_matched[lang] = int(res.matched.sum())
        lens[sel] = np.diff(res.offsets)
        found.append((sel, res))
    stats.matched = sum(stats.lang_matched.values())
    stats.unmatched = int(usable.sum()) - stats.matched
    if len(found) == 1 and len(found[0][0]) == n:  # the common case: no copy of the ids
        offsets, ids = found[0][1].offsets, found[0][1].ids
    else:  # scatter each language's lists to their rows
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        ids = np.zeros(int(offsets[-1]), dtype=np.uint32)
        for sel, res in found:
            per = np.diff(res.offsets)
            at = np.repeat(offsets[sel] - res.offsets[:-1], per) + np.arange(len(res.ids))
            ids[at] = res.ids
    return match_rows(np.where(usable, langs, -1), offsets, ids), stats, counts


def match_rows(lang: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> pa.Table:
    """A ``MATCH_SCHEMA`` table from language indices and CSR (offsets, ids)."""
    return pa.table(
        {
            "lang": pa.array(np.asarray(lang, dtype=np.int16), pa.int16()),
            "entry_ids": pa.LargeListArray.from_arrays(
                pa.array(offsets, pa.int64()), pa.array(ids, pa.uint32())
            ),
        },
        schema=MATCH_SCHEMA,
    )


def lang_offsets(md: Metadata) -> dict[str, int]:
    offsets, at = {}, 0
    for lang in md.langs:
        offsets[lang] = at
        at += len(md.entries[lang])
    return offsets


def flat_lists(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, values) of a list column, without copying the values."""
    lists = contiguous(column)
    raw = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    values = lists.values.to_numpy(zero_copy_only=False)[raw[0] : raw[-1]]
    return raw - raw[0], values


def global_csr(matches: pa.Table, offsets: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(CSR offsets, global entry ids) of a shard's matches (``MATCH_SCHEMA`` rows)."""
    csr_offsets, ids = flat_lists(matches.column("entry_ids"))
    if len(offsets) > 1 and len(ids):
        lut = np.array([*offsets.values(), 0], dtype=np.uint32)  # -1 (no language): no ids
        lang = matches.column("lang").to_numpy()
        ids = ids + np.repeat(lut[lang], np.diff(csr_offsets))
    return csr_offsets, ids


def keep_probability(offsets: np.ndarray, ids: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """1 − Π(1 − p[e]) per row (0 for rows without matches), computed row by row in Rust,
    so the value does not depend on the row's position or shard."""
    empty = np.zeros(0, dtype=np.int64)
    res = core.MatchResult(np.ascontiguousarray(offsets, np.int64), ids, empty, empty)
    return core.keep_probability(res, probs)


def sample_table(
    matches: pa.Table,
    md: Metadata,
    probs: np.ndarray,
    seed: int,
    unit: str = "pair",
    epoch: int = 0,
    threads: int = 0,
) -> np.ndarray:
    """The kept rows of one shard.

    ``matches``: the shard's ``MATCH_SCHEMA`` rows plus its sample keys ``__key`` (and
    ``__image`` for image-level sampling when images have several rows). ``probs`` holds
    the global (language-concatenated) probabilities. Returns the kept row indices,
    sorted."""
    n = matches.num_rows
    csr_offsets, ids = global_csr(matches, lang_offsets(md))
    empty = np.zeros(0, dtype=np.int64)
    res = core.MatchResult(csr_offsets, ids, empty, empty)
    if unit == "pair":
        keep = core.sample_pairs(matches.column("__key"), res, probs, seed, epoch, threads)
        kept_rows = np.flatnonzero(keep)
    elif unit == "image":
        col = "__image" if "__image" in matches.column_names else "__key"  # image = key
        image = contiguous(matches.column(col))
        codes = pc.dictionary_encode(image).indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(codes, return_index=True)
        by_first = np.argsort(first, kind="stable")
        rank = np.empty_like(by_first)
        rank[by_first] = np.arange(len(by_first))
        order = np.lexsort((np.arange(n), rank[codes]))  # rows grouped by image, first-seen
        sizes = np.bincount(rank[codes], minlength=len(first))
        image_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        lens = np.diff(csr_offsets)[order]
        starts = csr_offsets[:-1][order]
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        perm_ids = ids[np.arange(int(lens.sum())) + idx] if len(ids) else ids
        perm = core.MatchResult(
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), perm_ids, empty, empty
        )
        image_keys = image.take(pa.array(order[image_offsets[:-1]]))
        keep, picked = core.sample_images(
            image_keys, image_offsets, perm, probs, seed, epoch, threads
        )
        kept_rows = np.sort(order[picked[keep]])
    else:
        raise ValueError(f"unknown sampling unit {unit!r} (pair or image)")
    return kept_rows.astype(np.int64)


def select_matches(matches: pa.Table, mask: np.ndarray) -> pa.Table:
    """The ``MATCH_SCHEMA`` rows in ``mask``, selected in Rust on the flat id array
    (Arrow's filter of a list column is several times slower, numpy's twice)."""
    if mask.all():
        return matches.select(["lang", "entry_ids"])
    offsets, ids = core.select_rows(*flat_lists(matches.column("entry_ids")), mask)
    return match_rows(matches.column("lang").to_numpy()[mask], offsets, ids)


def select_rows(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """The rows in ``mask``. A boolean filter copies runs of rows, several times faster
    than a take; with every row selected nothing is copied."""
    return table if mask.all() else table.filter(pa.array(mask))


def subset_table(
    kept: pa.Table, matches: pa.Table, keep_prob: np.ndarray, langs: list[str]
) -> pa.Table:
    """Subset rows: the kept rows of a standardized shard with every input column, plus
    ``lang``, ``entry_ids`` (from their ``MATCH_SCHEMA`` rows) and ``keep_prob`` (each
    prefixed ``metaclip_`` if the pool has such a column)."""
    out = kept.drop_columns([c for c in kept.column_names if c.startswith("__")])
    names = pa.array(langs, pa.string())
    lang = contiguous(matches.column("lang"))
    for name, col in (
        ("lang", names.take(pc.if_else(pc.less(lang, 0), None, lang))),
        ("entry_ids", matches.column("entry_ids")),
        ("keep_prob", pa.array(keep_prob, pa.float64())),
    ):
        if name in out.column_names:
            name = f"metaclip_{name}"
        out = out.append_column(name, col)
    return out


def probabilities(
    counts: dict[str, np.ndarray], md: Metadata, t: float, t_en: float | None, en: str = "en"
) -> tuple[np.ndarray, dict[str, dict]]:
    """Global probabilities and the per-language thresholds (spec §5).

    ``t_en`` set: MC2 per-language t from English's tail mass; else one ``t`` for all.
    """
    per_lang: dict[str, dict] = {}
    if t_en is not None:
        th = core.mc2_thresholds(counts, t_en, en=en)
        ts = {lang: float(x.t) for lang, x in th.items()}
    else:
        ts = {lang: float(t) for lang in md.langs}
    parts = []
    for lang in md.langs:
        c = counts[lang]
        p = core.probabilities(c, ts[lang])
        parts.append(p)
        total = int(c.sum())
        per_lang[lang] = {
            "t": ts[lang],
            "entries": len(c),
            "matched_entries": int((c > 0).sum()),
            "matches": total,
            "tail_mass": core.tail_mass(c, ts[lang]),
            "expected_matches_after": float(np.minimum(c, ts[lang]).sum()),
        }
    return np.concatenate(parts) if parts else np.zeros(0), per_lang
