"""Build MetaCLIP metadata (the entry lists curation matches against) from files on disk.

Sources per language, in priority order (an entry found in several keeps the first tag):
``number`` ("0".."99"), ``wordnet`` (Princeton data files: synset head names for MC1, all
lemmas for MC2; Open Multilingual Wordnet tab files), ``unigram`` and ``bigram`` (counted by
the Rust core from plain/.gz/.bz2/parquet corpora, or loaded from ``word count`` /
``first second count`` files) and ``title`` (``title count`` files or Wikipedia pageview
dumps). Output entries are deduplicated and sorted by code points per language.

**PMI** (what MC1's reference computes with NLTK): ``PMI(a,b) = log2(c(a,b)·N) −
log2(c(a)·c(b))``, ``N`` = sum of unigram counts. Its maximum is ``log2 N``, so the
recipes' threshold 30 only admits bigrams from corpora of more than 2^30 ≈ 1.07e9 tokens
(English Wikipedia has ~2^31.5), and there it keeps pairs with ``c(a)c(b)/c(a,b) ≤
N/2^30`` — rare, tightly bound pairs. For a smaller corpus pass ``pmi_ref_tokens`` (e.g.
3e9): the threshold becomes ``30 − log2(pmi_ref_tokens / N)``, the same bound on
``c(a)c(b)/c(a,b)`` relative to corpus size.
"""

from metaclip.metadata.builder import MetadataBuilder, MetadataSet
from metaclip.metadata.recipe import MC1, MC2, NO_SPACE_LANGS, SOURCES, Recipe
from metaclip.metadata.wordnet import read_omw, wordnet_entries

__all__ = [
    "MC1",
    "MC2",
    "NO_SPACE_LANGS",
    "SOURCES",
    "MetadataBuilder",
    "MetadataSet",
    "Recipe",
    "read_omw",
    "wordnet_entries",
]
