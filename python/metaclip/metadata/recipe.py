"""MetaCLIP (MC1) and MetaCLIP 2 (MC2) metadata recipes: thresholds, caps and entry rules.

Numbers and rules come from the public reference (facebookresearch/MetaCLIP,
``metaclip/build_metadata.py`` for MC1 and ``metaclip/metadata/build_metadata.py`` for MC2)
and from docs/spec.md §1.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "MC1",
    "MC2",
    "NO_SPACE_LANGS",
    "RECIPES",
    "SOURCES",
    "WORDNET_TO_WIKI",
    "Recipe",
    "clean_entry",
    "is_pure_punctuation",
]

#: Source tags, in priority order: an entry found in several sources keeps the first tag.
#: (MC2's reference adds sources in this order and keeps the first; MC1 built an untagged
#: set, so the same priority is used.)
SOURCES: tuple[str, ...] = ("number", "wordnet", "unigram", "bigram", "title")

#: Languages written without spaces (reference ``no_space_languages``): their corpora need
#: word segmentation, and their bigram entries join the two words without a space.
NO_SPACE_LANGS: frozenset[str] = frozenset(
    {"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh", "zh_classical", "zh_yue"}
)

#: Open Multilingual Wordnet (ISO 639-3) → Wikipedia language codes (reference table).
WORDNET_TO_WIKI: dict[str, str] = {
    "fin": "fi", "heb": "he", "slv": "sl", "ita": "it", "nno": "nn", "nob": "no",
    "als": "als", "pol": "pl", "hrv": "hr", "nld": "nl", "ron": "ro", "arb": "ar",
    "isl": "is", "swe": "sv", "por": "pt", "cmn": "zh", "jpn": "ja", "dan": "da",
    "slk": "sk", "lit": "lt", "bul": "bg", "eus": "eu", "cat": "ca", "glg": "gl",
    "spa": "es", "ell": "el", "zsm": "ms", "ind": "id", "fra": "fr", "tha": "th",
    "eng": "en", "deu": "de",
}  # fmt: skip

#: Marks treated as punctuation besides ``string.punctuation`` (reference list, 26 marks).
EXTRA_PUNCTUATION: frozenset[str] = frozenset("，。、；：？¿！“”‘’（）【】《》〈〉「」『』～—")
_ASCII_PUNCT = frozenset(string.punctuation)


def is_pure_punctuation(s: str) -> bool:
    """True if every character is ASCII punctuation or one of the 26 extra marks."""
    return all(c in _ASCII_PUNCT or c in EXTRA_PUNCTUATION for c in s)


@dataclass(frozen=True)
class Recipe:
    """Selection rules of one recipe. Thresholds are inclusive unless ``*_strict`` is set.

    Unigrams: count ≥ ``unigram_min_count``; if ``unigram_top_fraction`` is set, only the
    first ``min(unigram_cap, int(fraction · distinct unigrams))`` *new* entries by count.
    Bigrams: PMI (log2, see ``metaclip.metadata`` docs) ≥ / > ``pmi_threshold``; at most
    ``min(bigram_cap, distinct bigrams)`` new entries by PMI if ``bigram_cap`` is set.
    Titles: views ≥ ``title_min_views``; at most ``min(title_cap, int(fraction · titles))``
    new entries by views if ``title_top_fraction`` is set.
    """

    name: str
    wordnet: Literal["head", "lemmas"]
    unigram_min_count: int = 1
    unigram_top_fraction: float | None = None
    unigram_cap: int | None = None
    pmi_threshold: float = 30.0
    pmi_strict: bool = False
    bigram_cap: int | None = None
    title_min_views: int = 1
    title_top_fraction: float | None = None
    title_cap: int | None = None
    #: Per pageview-dump line: only lines with views ≥ this are summed (MC1: 50).
    pageview_min_line_views: int = 1
    #: Sum mobile (``xx.m``) pageviews into ``xx``.
    pageview_mobile: bool = True
    #: MC2 rules: strip entries, drop pure punctuation and entries longer than ``max_len``.
    #: MC1 rules: drop only empty entries and single ASCII punctuation characters.
    strip_and_filter: bool = True
    max_len: int = 256

    def with_overrides(self, **kw: object) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


#: MetaCLIP (2023), English: WordNet synset head names, unigrams with count ≥ 100, bigrams
#: with PMI ≥ 30, titles with ≥ 70 views (summing pageview lines with ≥ 50 views, desktop).
MC1 = Recipe(
    name="mc1",
    wordnet="head",
    unigram_min_count=100,
    pmi_threshold=30.0,
    pmi_strict=False,
    title_min_views=70,
    pageview_min_line_views=50,
    pageview_mobile=False,
    strip_and_filter=False,
)

#: MetaCLIP 2 (2025), per language: all WordNet lemmas; top 10% unigrams capped at 251,465;
#: PMI > 30 capped at 100,646; top 76% titles capped at 61,235.
MC2 = Recipe(
    name="mc2",
    wordnet="lemmas",
    unigram_min_count=1,
    unigram_top_fraction=0.10,
    unigram_cap=251_465,
    pmi_threshold=30.0,
    pmi_strict=True,
    bigram_cap=100_646,
    title_min_views=1,
    title_top_fraction=0.76,
    title_cap=61_235,
)

RECIPES: dict[str, Recipe] = {"mc1": MC1, "mc2": MC2}


def clean_entry(entry: str, recipe: Recipe) -> str | None:
    """Apply the recipe's drop rules; the entry to keep, or ``None`` to drop it."""
    if recipe.strip_and_filter:
        entry = entry.strip()
        if not entry or len(entry) > recipe.max_len or is_pure_punctuation(entry):
            return None
        return entry
    if not entry or entry in _ASCII_PUNCT:
        return None
    return entry
