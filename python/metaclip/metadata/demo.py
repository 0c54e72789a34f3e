"""Demo metadata built by the real builder from small inputs generated from a shipped lexicon.

``python/metaclip/data/demo_lexicon.tsv`` (written by us, MIT) lists ~80 concepts in five
languages (en, es, de, zh, ja). :func:`write_demo_inputs` turns it, deterministically, into
the kinds of files a user has on disk: a WordNet-format excerpt (``data.noun``,
``data.adj``), Open Multilingual Wordnet tab files, a generated caption-like corpus per
language (zh/ja pre-segmented with spaces) and ``title<TAB>views`` files.
:func:`demo_metadata` runs :class:`~metaclip.metadata.MetadataBuilder` (MC2 rules, PMI
threshold lowered for the tiny corpus) over them.

Run ``python -m metaclip.metadata.demo OUT_DIR`` to write the inputs and print the CLI
command that builds the same metadata.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = [
    "DEMO_LANGS",
    "demo_captions",
    "demo_corpus_words",
    "demo_lexicon",
    "demo_metadata",
    "write_demo_inputs",
]

DEMO_LANGS: tuple[str, ...] = ("de", "en", "es", "ja", "zh")
_COLS = ("en", "es", "de", "zh", "ja")
_NO_SPACE = {"zh", "ja"}
_OMW_CODE = {"es": "spa", "de": "deu", "zh": "cmn", "ja": "jpn"}
_GEN_VERSION = 1
_SENTENCES = 3000
#: PMI threshold of the demo (log2 scale): the generated corpus has ~2^15 tokens, so the
#: recipe's 30 (meant for ~2^31.5 tokens of Wikipedia) would keep nothing.
DEMO_PMI_THRESHOLD = 6.0

_TEMPLATES: dict[str, list[str]] = {
    "en": [
        "a {A} {N} {V} near the {M} .",
        "the {N} {V} in the {M} .",
        "photo of a {A} {N} .",
        "{A} {N} and a {M} .",
        "a {N} with a {A} {M} .",
        "my {N} {V} on the {M} , look !",
    ],
    "es": [
        "un {N} {A} {V} cerca del {M} .",
        "el {N} {V} en el {M} .",
        "foto de un {N} {A} .",
        "un {N} {A} y un {M} .",
        "mi {N} {V} junto al {M} , ¡ mira !",
    ],
    "de": [
        "ein {A} {N} {V} neben dem {M} .",
        "der {N} {V} im {M} .",
        "Foto von einem {A} {N} .",
        "{A} {N} und ein {M} .",
        "mein {N} {V} auf dem {M} , schau !",
    ],
    "zh": [
        "一只 {A} 的 {N} 在 {M} 旁边 {V} 。",
        "{N} 在 {M} 里 {V} 。",
        "{A} 的 {N} 的 照片 。",
        "{A} 的 {N} 和 {M} 。",
        "我 的 {N} 在 {M} 上 {V} ， 看 ！",
    ],
    "ja": [
        "{A} {N} が {M} の 近く で {V} 。",
        "{N} は {M} の 中 で {V} 。",
        "{A} {N} の 写真 。",
        "{A} {N} と {M} 。",
        "私 の {N} が {M} の 上 で {V} 、 見て ！",
    ],
}


def demo_lexicon() -> dict[str, dict[str, list[list[str]]]]:
    """``{kind: {lang: [synonyms, ...]}}`` from the shipped lexicon (kinds: noun,
    compound, adj, verb; each item is a list of synonyms, head word first)."""
    text = resources.files("metaclip.data").joinpath("demo_lexicon.tsv").read_text("utf-8")
    lex: dict[str, dict[str, list[list[str]]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, *cells = line.split("\t")
        for lang, cell in zip(_COLS, cells, strict=True):
            lex.setdefault(kind, {}).setdefault(lang, []).append(cell.split("|"))
    return lex


def demo_corpus_words(lang: str) -> dict[str, list[str]]:
    """Head words of the demo lexicon for ``lang`` by kind (noun, compound, adj, verb);
    zh/ja compounds are written without spaces. Useful to make a matching demo pool."""
    lex = demo_lexicon()
    join = "" if lang in _NO_SPACE else " "
    return {k: [join.join(s[0].split()) for s in v[lang]] for k, v in lex.items()}


def _zipf_choice(rng: random.Random, items: list[str], n: int) -> list[str]:
    w = [1.0 / (i + 1) for i in range(len(items))]
    return rng.choices(items, weights=w, k=n)


def _sentences(lang: str, n: int, seed: int) -> list[list[str]]:
    lex = demo_lexicon()
    rng = random.Random(f"{seed}-{lang}")
    heads = {k: [s[0] for s in v[lang]] for k, v in lex.items()}
    nouns = heads["noun"] + heads["compound"]
    rng.shuffle(nouns)  # a language-specific frequency order
    out = []
    for _ in range(n):
        tpl = rng.choice(_TEMPLATES[lang])
        n1, m1 = _zipf_choice(rng, nouns, 2)
        (a,) = _zipf_choice(rng, heads["adj"], 1)
        (v,) = _zipf_choice(rng, heads["verb"], 1)
        s = tpl.format(A=a, N=n1, M=m1, V=v)
        out.append(s.split())
    return out


def demo_captions(lang: str, n: int = 1000, seed: int = 0) -> list[str]:
    """``n`` generated captions in the demo vocabulary (zh/ja without spaces)."""
    out = []
    for toks in _sentences(lang, n, seed + 1):
        if lang in _NO_SPACE:
            out.append("".join(toks))
        else:
            s = " ".join(toks)
            for p in (" .", " ,", " !"):
                s = s.replace(p, p[1:])
            out.append(s.replace("¡ ", "¡"))
    return out


def write_demo_inputs(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the demo's input files under ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    lex = demo_lexicon()
    for sub in ("wordnet", "omw", "corpus", "titles"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # WordNet-format excerpt (English): nouns+compounds in data.noun, adjectives in data.adj
    offsets: dict[tuple[str, int], int] = {}
    for fname, kinds, pos in (
        ("data.noun", ("noun", "compound"), "n"),
        ("data.adj", ("adj",), "a"),
    ):
        lines = ["  1 metaclip demo excerpt in WordNet database format (generated, MIT)\n"]
        off = 1000
        for kind in kinds:
            for i, syn in enumerate(lex[kind]["en"]):
                lemmas = [s.replace(" ", "_") for s in syn]
                if pos == "a" and i % 5 == 0:
                    lemmas[0] += "(a)"  # syntactic marker, stripped by the reader
                words = " ".join(f"{w} 0" for w in lemmas)
                lines.append(f"{off:08d} 05 {pos} {len(lemmas):02x} {words} 000 | demo gloss\n")
                offsets[(kind, i)] = off
                off += 100
        (out / "wordnet" / fname).write_text("".join(lines), encoding="utf-8")
    # Open Multilingual Wordnet tab files
    for lang, code in _OMW_CODE.items():
        lines = [f"# metaclip-demo\t{code}\tgenerated\tMIT\n"]
        for kind in ("noun", "compound", "adj"):
            pos = "a" if kind == "adj" else "n"
            for i, syn in enumerate(lex[kind][lang]):
                word = syn[0].replace(" ", "" if lang in _NO_SPACE else "_")
                lines.append(f"{offsets[(kind, i)]:08d}-{pos}\t{code}:lemma\t{word}\n")
        (out / "omw" / f"wn-data-{code}.tab").write_text("".join(lines), encoding="utf-8")
    # corpora and titles
    for lang in DEMO_LANGS:
        sents = _sentences(lang, _SENTENCES, seed)
        if lang in _NO_SPACE:
            text = "\n".join(" ".join(t) for t in sents)
        else:
            text = "\n".join(demo_captions(lang, _SENTENCES, seed - 1))
        (out / "corpus" / f"{lang}.txt").write_text(text + "\n", encoding="utf-8")
        rng = random.Random(f"titles-{seed}-{lang}")
        join = "" if lang in _NO_SPACE else " "
        heads = {k: [join.join(s[0].split()) for s in v[lang]] for k, v in lex.items()}
        titles = sorted(set(heads["noun"] + heads["compound"]))
        titles += sorted({f"{a}{join}{n}" for a in heads["adj"] for n in heads["noun"][:12]})
        titles.append("Category:Demo")
        rng.shuffle(titles)
        lines = [
            f"{t.replace(' ', '_')}\t{int(50_000 / (i + 1) ** 1.1)}\n" for i, t in enumerate(titles)
        ]
        (out / "titles" / f"{lang}.tsv").write_text("".join(lines), encoding="utf-8")
    return out


def _build(inputs: Path) -> dict[str, list[str]]:
    from metaclip.metadata.builder import MetadataBuilder
    from metaclip.metadata.recipe import MC2

    b = MetadataBuilder(MC2.with_overrides(pmi_threshold=DEMO_PMI_THRESHOLD))
    b.add_wordnet(inputs / "wordnet", "en")
    for f in sorted((inputs / "omw").glob("*.tab")):
        b.add_omw(f)
    for lang in DEMO_LANGS:
        b.add_corpus(lang, inputs / "corpus" / f"{lang}.txt", pretokenized=lang in _NO_SPACE)
        b.add_title_counts(lang, inputs / "titles" / f"{lang}.tsv")
    return b.build(DEMO_LANGS).entries


def _cache_key() -> str:
    lex = resources.files("metaclip.data").joinpath("demo_lexicon.tsv").read_bytes()
    h = hashlib.sha256(lex + f"v{_GEN_VERSION}-{DEMO_PMI_THRESHOLD}".encode()).hexdigest()
    return h[:16]


def demo_metadata(cache_dir: Path | None = None) -> dict[str, list[str]]:
    """Demo metadata: ``{lang: sorted entries}`` for en, es, de, zh, ja (~300–400 each).

    Built by :class:`~metaclip.metadata.MetadataBuilder` from inputs generated by
    :func:`write_demo_inputs` in a temporary directory; with ``cache_dir`` the result is
    cached there as JSON (keyed by the lexicon's hash) and reused.
    """
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"demo-metadata-{_cache_key()}.json"
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="metaclip-demo-md-") as tmp:
        entries = _build(write_demo_inputs(tmp))
    if cache is not None:
        from metaclip.pipeline.io import write_bytes

        write_bytes(cache, json.dumps(entries, ensure_ascii=False).encode())
    return entries


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m metaclip.metadata.demo OUT_DIR")
    d = write_demo_inputs(sys.argv[1])
    print(
        f"metaclip-curate metadata build -o {d}/metadata --recipe mc2 "
        f"--pmi-threshold {DEMO_PMI_THRESHOLD} --wordnet {d}/wordnet "
        + " ".join(f"--omw {p}" for p in sorted((d / "omw").glob("*.tab")))
        + " "
        + " ".join(
            f"--{'pretokenized-' if lang in _NO_SPACE else ''}corpus {lang}={d}/corpus/{lang}.txt"
            f" --titles {lang}={d}/titles/{lang}.tsv"
            for lang in DEMO_LANGS
        )
    )
