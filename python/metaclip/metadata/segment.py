"""Word segmentation for languages written without spaces (optional dependencies).

=========  ==========================================================  ==================
language   segmenter (first one installed wins)                        PyPI
=========  ==========================================================  ==================
zh*        jieba (``jieba.lcut``)                                      ``jieba``
ja, ryu    fugashi + unidic-lite, else janome, else sudachipy (core)   ``fugashi[unidic-lite]``,
                                                                       ``janome``, ``sudachipy
                                                                       sudachidict_core``
th         pythainlp ``word_tokenize(engine="newmm")``                 ``pythainlp``
=========  ==========================================================  ==================

Without one (or for bo, dz, km, lo, my), policy ``auto`` warns and falls back to the
reference ``simple_tokenizer``: every CJK/Thai/Lao/Myanmar/Khmer/Tibetan character is a
token, so unigrams are characters and bigrams are character pairs (joined without a
space). Policy ``require`` raises instead; policy ``char`` always uses the fallback.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

from metaclip.metadata.recipe import NO_SPACE_LANGS

__all__ = ["Segmenter", "SegmenterWarning", "get_segmenter"]

Segmenter = Callable[[str], list[str]]


class SegmenterWarning(UserWarning):
    """A no-space language is counted with the character fallback."""


def _jieba() -> Segmenter:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return lambda s: jieba.lcut(s)


def _japanese() -> Segmenter:
    try:
        import fugashi

        tagger = fugashi.Tagger()
        return lambda s: [w.surface for w in tagger(s)]
    except Exception:  # not installed, or no dictionary
        pass
    try:
        from janome.tokenizer import Tokenizer

        tok = Tokenizer(wakati=True)
        return lambda s: list(tok.tokenize(s))
    except ImportError:
        pass
    from sudachipy import Dictionary

    sud = Dictionary().create()
    return lambda s: [m.surface() for m in sud.tokenize(s)]


def _thai() -> Segmenter:
    from pythainlp.tokenize import word_tokenize

    return lambda s: word_tokenize(s, engine="newmm", keep_whitespace=False)


_LOADERS: dict[str, Callable[[], Segmenter]] = {
    "zh": _jieba,
    "zh_classical": _jieba,
    "zh_yue": _jieba,
    "ja": _japanese,
    "ryu": _japanese,
    "th": _thai,
}


def get_segmenter(lang: str, policy: str = "auto") -> Segmenter | None:
    """A segmenter for ``lang``: ``None`` for languages written with spaces, and for
    no-space languages under the ``char`` fallback (see module docs)."""
    if policy not in ("auto", "require", "char"):
        raise ValueError(f"segmenter policy must be auto, require or char, got {policy!r}")
    if lang not in NO_SPACE_LANGS or policy == "char":
        return None
    loader = _LOADERS.get(lang)
    seg = None
    if loader is not None:
        try:
            base = loader()
        except Exception:  # ImportError, or a dictionary that fails to load
            base = None
        if base is not None:

            def seg(text: str, _base: Segmenter = base) -> list[str]:
                out: list[str] = []
                for chunk in text.split():
                    out.extend(t for t in _base(chunk) if t and not t.isspace())
                return out

    if seg is None:
        msg = (
            f"no word segmenter installed for {lang!r}: counting character n-grams instead "
            "(install jieba / fugashi+unidic-lite / janome / pythainlp)"
        )
        if policy == "require":
            raise RuntimeError(msg)
        warnings.warn(msg, SegmenterWarning, stacklevel=2)
    return seg
