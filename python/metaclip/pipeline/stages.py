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
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.pool import SKIP_REASONS

MATCH_SCHEMA = pa.schema(
    [("row", pa.int64()), ("lang", pa.string()), ("entry_ids", pa.large_list(pa.uint32()))]
)


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


def _csr_rows(offsets: np.ndarray, ids: np.ndarray) -> pa.Array:
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(ids, pa.uint32()))


def text_languages(table: pa.Table, md: Metadata, lid=None) -> np.ndarray:
    """Index into ``md.langs`` of the language each row is matched against (-1: none)."""
    n = table.num_rows
    if md.single:
        return np.zeros(n, dtype=np.int32)
    if "__lang" in table.column_names:
        raw = table.column("__lang").combine_chunks()
    elif lid is not None:
        raw = lid(table.column("__text"))
    else:
        raise ValueError(
            "the metadata has several languages: give the pool's language column "
            "(--lang-column) or enable language identification (--lid)"
        )
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    enc = raw if pa.types.is_dictionary(raw.type) else pc.dictionary_encode(raw.cast(pa.string()))
    index = {lang: i for i, lang in enumerate(md.langs)}
    resolved = [md.resolve(v) for v in enc.dictionary.to_pylist()]
    lut = np.array([index[r] if r is not None else -1 for r in resolved] + [-1], np.int32)
    codes = pc.fill_null(enc.indices, len(lut) - 1).to_numpy(zero_copy_only=False)
    return lut[codes]


def match_table(
    table: pa.Table, md: Metadata, threads: int = 0, lid=None
) -> tuple[pa.Table, MatchStats, dict[str, np.ndarray]]:
    """Match one standardized shard. Returns (matched rows, stats, counts per language)."""
    n = table.num_rows
    stats = MatchStats(texts=n)
    skip = table.column("__skip").combine_chunks()
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
    texts = table.column("__text").combine_chunks()
    parts_rows, parts_lang, parts_lists = [], [], []
    counts: dict[str, np.ndarray] = {}
    # Group usable rows by language once (stable: rows stay in order within a language).
    group = np.where(usable, langs, -1)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(md.langs) + 1))
    for li, lang in enumerate(md.langs):
        sel = order[bounds[li] : bounds[li + 1]]
        stats.lang_texts[lang] = len(sel)
        if len(sel) == 0:
            counts[lang] = np.zeros(len(md.entries[lang]), dtype=np.uint64)
            continue
        m = md.matcher(lang)
        sub = texts if len(sel) == n else texts.take(pa.array(sel))
        res = m.match(sub, threads=threads)
        counts[lang] = core.count_entries(res.ids, m.n_entries)
        hit = res.matched
        stats.lang_matched[lang] = int(hit.sum())
        if not hit.any():
            continue
        # Unmatched rows are empty, so the matched rows' lists are the same ids with
        # the offsets of the matched rows (no copy of the ids).
        offsets = np.append(res.offsets[:-1][hit], res.offsets[-1])
        parts_rows.append(sel[hit])
        parts_lang.append(np.full(int(hit.sum()), li, dtype=np.int32))
        parts_lists.append(_csr_rows(offsets, res.ids))
    stats.matched = sum(stats.lang_matched.values())
    stats.unmatched = int(usable.sum()) - stats.matched
    if parts_rows:
        rows = np.concatenate(parts_rows)
        names = pa.array(md.langs, pa.string())
        lang_idx = np.concatenate(parts_lang)
        lists = pa.concat_arrays(parts_lists)
        if len(parts_rows) > 1:  # several languages: back to row order
            order = np.argsort(rows, kind="stable")
            rows, lang_idx, lists = rows[order], lang_idx[order], lists.take(pa.array(order))
        out = pa.table(
            {
                "row": pa.array(rows, pa.int64()),
                "lang": names.take(pa.array(lang_idx)),
                "entry_ids": lists,
            },
            schema=MATCH_SCHEMA,
        )
    else:
        out = MATCH_SCHEMA.empty_table()
    return out, stats, counts


def lang_offsets(md: Metadata) -> dict[str, int]:
    offsets, at = {}, 0
    for lang in md.langs:
        offsets[lang] = at
        at += len(md.entries[lang])
    return offsets


def global_csr(
    matches: pa.Table, n_rows: int, offsets: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CSR over all ``n_rows`` rows (unmatched rows empty) with global entry ids."""
    rows = matches.column("row").to_numpy()
    lists = matches.column("entry_ids").combine_chunks()
    lens = np.zeros(n_rows, dtype=np.int64)
    if len(rows):
        lens[rows] = pc.list_value_length(lists).to_numpy()
    csr_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    ids = np.asarray(pc.list_flatten(lists).to_numpy(), dtype=np.uint32)
    if len(offsets) > 1 and len(ids):
        enc = pc.dictionary_encode(matches.column("lang").combine_chunks())
        lut = np.array([offsets[x] for x in enc.dictionary.to_pylist()], np.uint32)
        base = lut[enc.indices.to_numpy(zero_copy_only=False)]
        ids = ids + np.repeat(base, pc.list_value_length(lists).to_numpy())
    return csr_offsets, ids


def keep_probability(offsets: np.ndarray, ids: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """1 − Π(1 − p[e]) per row (0 for rows without matches), computed row by row in Rust,
    so the value does not depend on the row's position or shard."""
    empty = np.zeros(0, dtype=np.int64)
    res = core.MatchResult(np.ascontiguousarray(offsets, np.int64), ids, empty, empty)
    return core.keep_probability(res, probs)


def sample_table(
    table: pa.Table,
    matches: pa.Table,
    md: Metadata,
    probs: np.ndarray,
    seed: int,
    unit: str = "pair",
    epoch: int = 0,
    threads: int = 0,
) -> pa.Table:
    """The kept rows of one shard: every input column plus ``lang``, ``entry_ids`` and
    ``keep_prob``. ``probs`` holds the global (language-concatenated) probabilities."""
    n = table.num_rows
    offs = lang_offsets(md)
    csr_offsets, ids = global_csr(matches, n, offs)
    empty = np.zeros(0, dtype=np.int64)
    res = core.MatchResult(csr_offsets, ids, empty, empty)
    if unit == "pair":
        keep = core.sample_pairs(table.column("__key"), res, probs, seed, epoch, threads)
        kept_rows = np.flatnonzero(keep)
    elif unit == "image":
        image = table.column("__image").combine_chunks()
        codes = pc.dictionary_encode(image).indices.to_numpy(zero_copy_only=False)
        order = np.argsort(codes, kind="stable")  # rows grouped by image, first-seen order
        _, first = np.unique(codes, return_index=True)
        by_first = np.argsort(first, kind="stable")
        rank = np.empty_like(by_first)
        rank[by_first] = np.arange(len(by_first))
        order = np.lexsort((np.arange(n), rank[codes]))
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
    kp = keep_probability(csr_offsets, ids, probs)
    # Kept rows are matched rows; find each one's position among the (sorted) match rows.
    pick = pa.array(np.searchsorted(matches.column("row").to_numpy(), kept_rows), pa.int64())
    kept = table.take(pa.array(kept_rows, pa.int64()))
    internal = [c for c in kept.column_names if c.startswith("__")]
    out = kept.drop_columns(internal)
    lang_col = matches.column("lang").take(pick)
    for name, col in (
        ("lang", lang_col),
        ("entry_ids", matches.column("entry_ids").take(pick)),
        ("keep_prob", pa.array(kp[kept_rows], pa.float64())),
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
