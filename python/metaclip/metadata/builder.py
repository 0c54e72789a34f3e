"""Assemble a metadata set (entries per language) from WordNet, corpora, counts and titles.

See :mod:`metaclip.metadata` for the recipe and the file formats.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaclip.exceptions import MetadataError
from metaclip.metadata.recipe import (
    NO_SPACE_LANGS,
    RECIPES,
    SOURCES,
    Recipe,
    clean_entry,
)
from metaclip.metadata.segment import Segmenter, get_segmenter
from metaclip.metadata.wordnet import read_omw, wordnet_entries
from metaclip.pipeline.io import write_bytes

__all__ = ["MetadataBuilder", "MetadataSet"]

FORMAT_VERSION = 1
_BATCH_LINES = 8192


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return [path]


@dataclass
class _LangCounter:
    counter: Any  # metaclip._core.NgramCounter
    mode: str
    segmenter: Segmenter | None
    fallback: bool


@dataclass
class MetadataSet:
    """A built metadata set: per language, sorted entries and their source tags."""

    entries: dict[str, list[str]]
    sources: dict[str, list[str]]
    summary: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path, *, parquet: bool = True) -> dict[str, Path]:
        """Write ``<lang>.json`` (a JSON list of strings, MC1 ``metadata.json`` format),
        ``metadata.parquet`` (lang, id, entry, source) and ``summary.json``, atomically."""
        out = Path(out_dir)
        written: dict[str, Path] = {}
        for lang in sorted(self.entries):
            p = out / f"{lang}.json"
            write_bytes(p, json.dumps(self.entries[lang], ensure_ascii=False).encode())
            written[lang] = p
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            langs: list[str] = []
            ids: list[int] = []
            ents: list[str] = []
            srcs: list[str] = []
            for lang in sorted(self.entries):
                n = len(self.entries[lang])
                langs.extend([lang] * n)
                ids.extend(range(n))
                ents.extend(self.entries[lang])
                srcs.extend(self.sources[lang])
            table = pa.table(
                {
                    "lang": pa.array(langs, pa.string()),
                    "id": pa.array(ids, pa.uint32()),
                    "entry": pa.array(ents, pa.string()),
                    "source": pa.array(srcs, pa.string()),
                }
            )
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf, compression="zstd")
            p = out / "metadata.parquet"
            write_bytes(p, buf.getvalue().to_pybytes())
            written["parquet"] = p
        p = out / "summary.json"
        text = json.dumps(self.summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        write_bytes(p, text.encode())
        written["summary"] = p
        return written


class MetadataBuilder:
    """Collect sources per language, then :meth:`build` a :class:`MetadataSet`.

    Example::

        b = MetadataBuilder("mc1")
        b.add_wordnet("/usr/share/wordnet")
        b.add_corpus("en", "enwiki.txt.gz")
        b.add_pageviews("pageviews-20220829-000000.gz")
        b.build(["en"]).write("metadata/")
    """

    def __init__(
        self,
        recipe: Recipe | str = "mc1",
        *,
        segmenter: str = "auto",
        mem_budget_bytes: int = 1 << 30,
        spill_dir: str | Path | None = None,
        text_column: str = "text",
        pmi_ref_tokens: int | None = None,
        strip_html: bool = True,
    ) -> None:
        if isinstance(recipe, str):
            try:
                recipe = RECIPES[recipe]
            except KeyError:
                raise ValueError(
                    f"unknown recipe {recipe!r}; use one of {sorted(RECIPES)}"
                ) from None
        self.recipe = recipe
        self.segmenter_policy = segmenter
        self.mem_budget_bytes = mem_budget_bytes
        self.spill_dir = None if spill_dir is None else str(spill_dir)
        self.text_column = text_column
        self.pmi_ref_tokens = pmi_ref_tokens
        self.strip_html = strip_html
        self._wordnet: dict[str, set[str]] = {}
        self._counters: dict[str, _LangCounter] = {}
        self._titles: Any = None
        self._title_langs: set[str] = set()
        self._inputs: dict[str, list[str]] = {}

    # ---- sources -----------------------------------------------------------------------

    def _note(self, lang: str, what: str) -> None:
        self._inputs.setdefault(lang, []).append(what)

    def add_wordnet(self, wordnet_dir: str | Path, lang: str = "en") -> int:
        """Princeton-format WordNet files: head names (MC1) or all lemmas (MC2)."""
        ents = wordnet_entries(wordnet_dir, self.recipe.wordnet)
        self._wordnet.setdefault(lang, set()).update(ents)
        self._note(lang, f"wordnet:{self.recipe.wordnet}")
        return len(ents)

    def add_omw(self, path: str | Path, lang: str | None = None) -> str:
        """An Open Multilingual Wordnet tab file (all lemmas); returns its language."""
        code, ents = read_omw(path, lang)
        self._wordnet.setdefault(code, set()).update(ents)
        self._note(code, f"omw:{Path(path).name}")
        return code

    def add_wordnet_entries(self, lang: str, entries: Iterable[str]) -> None:
        """WordNet-source entries given directly."""
        self._wordnet.setdefault(lang, set()).update(entries)

    def _lang_counter(self, lang: str, pretokenized: bool) -> _LangCounter:
        from metaclip._core import NgramCounter

        lc = self._counters.get(lang)
        no_space = lang in NO_SPACE_LANGS
        if lc is None:
            seg = None
            if not pretokenized:
                seg = get_segmenter(lang, self.segmenter_policy)
            mode = "pretokenized" if (pretokenized or seg is not None) else "simple"
            counter = NgramCounter(
                mode=mode,
                no_space=no_space,
                strip_html=self.strip_html,
                mem_budget_bytes=self.mem_budget_bytes,
                spill_dir=self.spill_dir,
            )
            fallback = no_space and mode == "simple"
            lc = _LangCounter(counter, mode, seg, fallback)
            self._counters[lang] = lc
        elif (pretokenized and lc.mode != "pretokenized") or (
            not pretokenized and lc.mode == "pretokenized" and no_space and lc.segmenter is None
        ):
            raise ValueError(
                f"{lang}: cannot mix pre-segmented and raw corpora without a segmenter"
            )
        return lc

    def _feed(self, lc: _LangCounter, texts: list[str], pretokenized: bool) -> None:
        if lc.segmenter is not None and not pretokenized:
            seg = lc.segmenter
            texts = ["\n".join(" ".join(seg(line)) for line in t.splitlines()) for t in texts]
        lc.counter.add_texts(texts)

    def add_texts(self, lang: str, texts: Sequence[str], *, pretokenized: bool = False) -> None:
        """Count texts of a language (each text may hold several lines)."""
        lc = self._lang_counter(lang, pretokenized)
        self._feed(lc, list(texts), pretokenized)

    def add_corpus(self, lang: str, path: str | Path, *, pretokenized: bool = False) -> None:
        """Count a corpus: a plain/.gz/.bz2 text file (one paragraph per line), a parquet
        file (``text_column``), or a directory of those (files in sorted order)."""
        lc = self._lang_counter(lang, pretokenized)
        for f in _files(Path(path)):
            self._note(lang, f"corpus:{f.name}")
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(f)
                if self.text_column not in pf.schema_arrow.names:
                    raise MetadataError(f"{f}: no column {self.text_column!r}")
                for batch in pf.iter_batches(columns=[self.text_column], batch_size=4096):
                    texts = [t for t in batch.column(0).to_pylist() if t]
                    self._feed(lc, texts, pretokenized)
            elif (lc.segmenter is None or pretokenized) and not f.name.endswith(".bz2"):
                lc.counter.add_file(f)
            else:
                with _open_text(f) as fh:
                    lines: list[str] = []
                    for line in fh:
                        lines.append(line.rstrip("\n"))
                        if len(lines) >= _BATCH_LINES:
                            self._feed(lc, lines, pretokenized)
                            lines = []
                    if lines:
                        self._feed(lc, lines, pretokenized)

    def add_unigram_counts(self, lang: str, path: str | Path) -> int:
        """Precomputed ``word count`` lines (plain or .gz)."""
        lc = (
            self._lang_counter(lang, pretokenized=True)
            if lang not in self._counters
            else (self._counters[lang])
        )
        self._note(lang, f"unigrams:{Path(path).name}")
        return lc.counter.load_unigram_counts(Path(path))

    def add_bigram_counts(self, lang: str, path: str | Path) -> int:
        """Precomputed ``first second count`` lines (plain or .gz)."""
        lc = (
            self._lang_counter(lang, pretokenized=True)
            if lang not in self._counters
            else (self._counters[lang])
        )
        self._note(lang, f"bigrams:{Path(path).name}")
        return lc.counter.load_bigram_counts(Path(path))

    def _title_counts(self) -> Any:
        if self._titles is None:
            from metaclip._core import TitleCounts

            self._titles = TitleCounts()
        return self._titles

    def add_title_counts(self, lang: str, path: str | Path) -> dict[str, int]:
        """``title count`` lines (tab or space before the count; plain or .gz)."""
        st = self._title_counts().load_title_counts(lang, Path(path))
        self._title_langs.add(lang)
        self._note(lang, f"titles:{Path(path).name}")
        return st

    def add_pageviews(self, path: str | Path, langs: Sequence[str] | None = None) -> dict[str, int]:
        """A Wikipedia pageview dump (``project title views bytes``; plain or .gz)."""
        st = self._title_counts().load_pageviews(
            Path(path),
            min_line_views=self.recipe.pageview_min_line_views,
            include_mobile=self.recipe.pageview_mobile,
            langs=list(langs) if langs else None,
        )
        for lang in self._titles.langs():
            if lang not in self._title_langs:
                self._title_langs.add(lang)
        return st

    def languages(self) -> list[str]:
        """Every language with at least one source."""
        return sorted(set(self._wordnet) | set(self._counters) | self._title_langs)

    # ---- build -------------------------------------------------------------------------

    def build(self, langs: Sequence[str] | None = None) -> MetadataSet:
        """Select entries for each language (default: all with a source)."""
        langs = sorted(set(langs)) if langs else self.languages()
        entries: dict[str, list[str]] = {}
        sources: dict[str, list[str]] = {}
        per_lang: dict[str, Any] = {}
        for lang in langs:
            ents, tags, info = self._build_lang(lang)
            entries[lang], sources[lang], per_lang[lang] = ents, tags, info
        summary = {
            "format": FORMAT_VERSION,
            "recipe": asdict(self.recipe),
            "pmi": "log2(c(a,b)*N) - log2(c(a)*c(b)), N = sum of unigram counts",
            "languages": per_lang,
            "total_entries": sum(len(v) for v in entries.values()),
        }
        return MetadataSet(entries, sources, summary)

    def _build_lang(self, lang: str) -> tuple[list[str], list[str], dict[str, Any]]:
        r = self.recipe
        tag: dict[str, str] = {}
        dropped: Counter[str] = Counter()
        dups: Counter[str] = Counter()
        info: dict[str, Any] = {"inputs": self._inputs.get(lang, [])}

        def add(e: str, src: str) -> bool:
            c = clean_entry(e, r)
            if c is None:
                dropped[src] += 1
                return False
            if c in tag:
                dups[src] += 1
                return False
            tag[c] = src
            return True

        def take(
            fetch: Callable[[int | None], list[Any]],
            text: Callable[[Any], str],
            cap: int | None,
            src: str,
        ) -> int:
            if cap is None:
                return sum(add(text(row), src) for row in fetch(None))
            added, done, k = 0, 0, cap + len(tag) + 64
            while added < cap:
                rows = fetch(k)
                for row in rows[done:]:
                    if add(text(row), src):
                        added += 1
                        if added >= cap:
                            break
                done = len(rows)
                if len(rows) < k:
                    break
                k *= 2
            return added

        for i in range(100):
            add(str(i), "number")
        for e in sorted(self._wordnet.get(lang, ())):
            add(e, "wordnet")

        lc = self._counters.get(lang)
        if lc is not None:
            c = lc.counter
            st = c.stats()
            n, distinct = st["total_tokens"], st["distinct_unigrams"]
            ucap = None
            if r.unigram_top_fraction is not None:
                ucap = int(distinct * r.unigram_top_fraction)
                if r.unigram_cap is not None:
                    ucap = min(ucap, r.unigram_cap)
            take(
                lambda k: c.top_unigrams(r.unigram_min_count, k),
                lambda row: row[0],
                ucap,
                "unigram",
            )
            thr = r.pmi_threshold
            if self.pmi_ref_tokens and n > 0:
                thr = r.pmi_threshold - math.log2(self.pmi_ref_tokens / n)
            joiner = "" if lang in NO_SPACE_LANGS else " "
            bstats: dict[str, int] = {}

            def fetch_bigrams(k: int | None) -> list[Any]:
                rows, s = c.bigrams_by_pmi(thr, inclusive=not r.pmi_strict, top_k=k)
                bstats.update(s)
                return rows

            bcap = None
            if r.bigram_cap is not None:
                _, s0 = c.bigrams_by_pmi(thr, inclusive=not r.pmi_strict, top_k=0)
                bcap = min(r.bigram_cap, s0["distinct_bigrams"])
            take(fetch_bigrams, lambda row: row[0] + joiner + row[1], bcap, "bigram")
            info["corpus"] = {
                "mode": lc.mode,
                "char_fallback": lc.fallback,
                "total_tokens": n,
                "log2_total_tokens": round(math.log2(n), 6) if n else None,
                "distinct_unigrams": distinct,
                "distinct_bigrams": bstats.get("distinct_bigrams"),
                "bigrams_passing_pmi": bstats.get("passed"),
                "lines": st["lines"],
                "bytes": st["bytes"],
                "spill_runs": st["runs"],
            }
            info["limits"] = {"unigram_cap": ucap, "bigram_cap": bcap, "pmi_threshold": thr}

        if lang in self._title_langs:
            t = self._titles
            ntitles = t.count(lang)
            tcap = None
            if r.title_top_fraction is not None:
                tcap = int(ntitles * r.title_top_fraction)
                if r.title_cap is not None:
                    tcap = min(tcap, r.title_cap)
            take(lambda k: t.top(lang, r.title_min_views, k), lambda row: row[0], tcap, "title")
            info["titles"] = {"distinct_titles": ntitles, "title_cap": tcap}

        ents = sorted(tag)
        tags = [tag[e] for e in ents]
        by_source = Counter(tags)
        info["entries"] = len(ents)
        info["by_source"] = {s: by_source.get(s, 0) for s in SOURCES}
        info["dropped"] = {s: dropped.get(s, 0) for s in SOURCES if dropped.get(s)}
        info["duplicates"] = {s: dups.get(s, 0) for s in SOURCES if dups.get(s)}
        return ents, tags, info


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a plain/.gz/.bz2 text file (helper for tools)."""
    with _open_text(path) as f:
        for line in f:
            yield line.rstrip("\n")
