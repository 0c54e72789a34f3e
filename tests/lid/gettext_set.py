"""A labelled multilingual test set from Debian's gettext catalogues.

Every package with translations installs ``/usr/share/locale/<locale>/LC_MESSAGES/*.mo``
(e.g. ``apt-get install -y iso-codes shared-mime-info libc-l10n``): real sentences and UI
strings written by translators, labelled by locale. We read them with
``gettext.GNUTranslations``, strip format markers, accelerators and markup, drop strings
left untranslated (equal to the English msgid) and strings with fewer than ``min_letters``
letters, dedupe, and take a deterministic sample per language. The English msgids give the
English set.

Labels are locale languages normalised to the codes our mapping knows (``nb`` → ``no``,
``pa_PK`` → ``pnb``, ``az_IR`` → ``azb``, ...); ``@`` variants (``sr@latin``) are skipped.
"""

from __future__ import annotations

import gettext
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCALE_DIR = Path("/usr/share/locale")
SHORT = 40  # characters: texts shorter than this are "short"

# Locale → LID code where the plain language part is not the code lid.176 uses.
LOCALE_FIX = {
    "nb": "no",
    "nb_NO": "no",
    "mo": "ro",
    "fil": "tl",
    "kmr": "ku",
    "pa_PK": "pnb",
    "az_IR": "azb",
    "iw": "he",
    "in": "id",
    "ji": "yi",
}

_FORMAT = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfFgGcsSpmaA%]"
    r"|%\([^)]*\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
    r"|\$\{[^}]*\}|\{[^{}]*\}|<[^<>]*>|&[a-zA-Z]+;|\\[ntr]"
)
_ACCEL = re.compile(r"(?<![\w&])[_&](?=\w)")
_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """Strip format markers (``%s``, ``%1$d``, ``%(x)s``, ``{0}``, ``${x}``), markup,
    ``_``/``&`` accelerators, tabs and newlines."""
    text = _FORMAT.sub(" ", text)
    text = _ACCEL.sub("", text)
    return _SPACE.sub(" ", text).strip(" :.-")


_LETTER = re.compile(r"[^\W\d_]")


def _has_letters(text: str, n: int) -> bool:
    return sum(1 for _ in itertools.islice(_LETTER.finditer(text), n)) >= n


@dataclass(frozen=True)
class Sample:
    text: str
    lang: str  # LID code (locale language, normalised)
    locale: str


def locale_code(locale: str) -> str | None:
    """LID code for a locale directory name, or None to skip it."""
    if "@" in locale or locale.startswith("en"):
        return None
    if locale in LOCALE_FIX:
        return LOCALE_FIX[locale]
    if "_" in locale:
        base = locale.split("_")[0]
        return LOCALE_FIX.get(base, base)
    return locale


def _catalog(path: Path) -> dict[object, str]:
    try:
        with path.open("rb") as f:
            return dict(gettext.GNUTranslations(f)._catalog)  # type: ignore[attr-defined]
    except (OSError, ValueError, LookupError, SyntaxError):
        return {}


def _pairs(locale_dir: Path, domains: tuple[str, ...] | None) -> Iterator[tuple[str, str, str]]:
    """(locale, msgid, msgstr) for every translated string (of catalogues whose name starts
    with one of ``domains``, when given)."""
    for loc in sorted(p.name for p in locale_dir.iterdir() if p.is_dir()):
        for mo in sorted((locale_dir / loc / "LC_MESSAGES").glob("*.mo")):
            if domains is not None and not mo.name.startswith(domains):
                continue
            for key, msgstr in _catalog(mo).items():
                msgid = key[0] if isinstance(key, tuple) else key
                if not isinstance(msgid, str) or not msgid or not msgstr:
                    continue
                yield loc, msgid, msgstr


def _rank(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def build(
    locale_dir: Path = LOCALE_DIR,
    per_language: int = 400,
    min_letters: int = 3,
    min_texts: int = 50,
    domains: tuple[str, ...] | None = None,
) -> list[Sample]:
    """The labelled set: up to ``per_language`` texts per language (deterministic sample),
    languages with at least ``min_texts`` texts. Empty when there are no catalogues."""
    if not locale_dir.is_dir():
        return []
    # Raw strings first (cheap); clean only as many as the sample needs, in rank order.
    raw: dict[str, dict[str, str]] = {}  # code -> msgstr -> msgid
    locales: dict[tuple[str, str], str] = {}
    msgids: set[str] = set()
    for loc, msgid, msgstr in _pairs(locale_dir, domains):
        msgids.add(msgid)
        code = locale_code(loc)
        if code is not None and msgstr != msgid:
            raw.setdefault(code, {}).setdefault(msgstr, msgid)
            locales.setdefault((code, msgstr), loc)
    raw["en"] = {m: "" for m in msgids}
    out: list[Sample] = []
    for code in sorted(raw):
        picked: dict[str, str] = {}
        for msgstr in sorted(raw[code], key=_rank):
            text = clean(msgstr)
            src = raw[code][msgstr]
            if text in picked or not _has_letters(text, min_letters):
                continue
            if src and text == clean(src):
                continue
            picked[text] = locales.get((code, msgstr), "C")
            if len(picked) == per_language:
                break
        if len(picked) >= min_texts:
            out.extend(Sample(t, code, loc) for t, loc in picked.items())
    return out


def accuracy_table(
    samples: list[Sample], predicted: list[str], truth: list[str]
) -> dict[str, dict[str, float]]:
    """Per language: accuracy on short texts, long texts and all (fractions), and counts."""
    table: dict[str, dict[str, float]] = {}
    for s, p, t in zip(samples, predicted, truth, strict=True):
        row = table.setdefault(t, {"n_short": 0, "ok_short": 0, "n_long": 0, "ok_long": 0})
        kind = "short" if len(s.text) < SHORT else "long"
        row[f"n_{kind}"] += 1
        row[f"ok_{kind}"] += p == t
    return table


def summarize(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Overall accuracy (micro over texts; macro over languages) for short, long and all."""
    out: dict[str, float] = {}
    for kind in ("short", "long", "all"):
        if kind == "all":
            n = [r["n_short"] + r["n_long"] for r in table.values()]
            ok = [r["ok_short"] + r["ok_long"] for r in table.values()]
        else:
            n = [r[f"n_{kind}"] for r in table.values()]
            ok = [r[f"ok_{kind}"] for r in table.values()]
        out[f"{kind}_n"] = float(sum(n))
        out[f"{kind}_micro"] = sum(ok) / max(1, sum(n))
        per = [o / c for o, c in zip(ok, n, strict=True) if c]
        out[f"{kind}_macro"] = sum(per) / max(1, len(per))
    return out
