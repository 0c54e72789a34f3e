"""``metaclip-curate metadata …``: build metadata sets from files on disk."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from metaclip._cli import friendly

__all__ = ["metadata"]


def _lang_path(values: tuple[str, ...], opt: str) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        lang, sep, path = v.partition("=")
        if not sep or not lang or not path:
            raise click.BadParameter(f"expected LANG=PATH, got {v!r}", param_hint=opt)
        out.append((lang, Path(path)))
    return out


@click.group(name="metadata")
def metadata() -> None:
    """Build MetaCLIP metadata (entry lists) from WordNet, corpora and Wikipedia titles."""


_EXAMPLE = """
\b
Examples:
  # MC1 English from Debian's wordnet-base, a Wikipedia text extract and pageview dumps
  metaclip-curate metadata build -o md/ --recipe mc1 --wordnet /usr/share/wordnet \\
      --corpus en=enwiki/ --pageviews pageviews-20220829-000000.gz --lang en
\b
  # MC2 for several languages, precomputed counts, a segmenter-less Thai corpus
  metaclip-curate metadata build -o md/ --recipe mc2 --omw wn-data-jpn.tab \\
      --unigram-counts de=de_1gram.txt --bigram-counts de=de_2gram.txt \\
      --corpus ja=jawiki.parquet --corpus th=thwiki.txt.gz --titles de=de_titles.tsv
\b
Writes <lang>.json (JSON list of strings, MC1 metadata.json format), metadata.parquet
(lang, id, entry, source) and summary.json (counts per source per language).
"""


@metadata.command("build", epilog=_EXAMPLE)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory.",
)
@click.option(
    "--recipe",
    type=click.Choice(["mc1", "mc2"]),
    default="mc1",
    show_default=True,
    help="mc1: thresholds (count ≥ 100, PMI ≥ 30, views ≥ 70); mc2: per-language "
    "top fractions with caps (10%/251,465; PMI > 30/100,646; 76%/61,235).",
)
@click.option(
    "--lang",
    "langs",
    multiple=True,
    help="Language(s) to build (default: every language with an input).",
)
@click.option(
    "--wordnet",
    "wordnet_dir",
    type=click.Path(exists=True, path_type=Path),
    help="Princeton WordNet dir with data.noun etc. (e.g. /usr/share/wordnet); "
    "gives English head names (mc1) or lemmas (mc2).",
)
@click.option(
    "--omw",
    multiple=True,
    metavar="[LANG=]FILE",
    help="Open Multilingual Wordnet tab file (repeatable).",
)
@click.option(
    "--corpus",
    multiple=True,
    metavar="LANG=PATH",
    help="Text corpus: .txt/.gz/.bz2 (a line = a paragraph), .parquet, or a dir.",
)
@click.option(
    "--pretokenized-corpus",
    multiple=True,
    metavar="LANG=PATH",
    help="Like --corpus, but words are already separated by spaces.",
)
@click.option(
    "--text-column", default="text", show_default=True, help="Text column of parquet corpora."
)
@click.option(
    "--unigram-counts", multiple=True, metavar="LANG=PATH", help="Precomputed `word count` lines."
)
@click.option(
    "--bigram-counts",
    multiple=True,
    metavar="LANG=PATH",
    help="Precomputed `first second count` lines.",
)
@click.option(
    "--titles",
    multiple=True,
    metavar="LANG=PATH",
    help="`title<TAB>count` lines (`_` → space; titles with `:` dropped).",
)
@click.option(
    "--pageviews",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Wikipedia pageview dump (`project title views bytes`, plain or .gz).",
)
@click.option(
    "--segmenter",
    type=click.Choice(["auto", "require", "char"]),
    default="auto",
    show_default=True,
    help="No-space languages: auto = installed segmenter else "
    "character n-grams with a warning; require = error without one; char = always "
    "character n-grams.",
)
@click.option(
    "--mem-mb",
    default=1024,
    show_default=True,
    help="Memory budget (MiB) of the in-memory bigram table; beyond it sorted runs "
    "spill to disk (counts stay exact).",
)
@click.option(
    "--spill-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to spill bigram runs (default: system temp dir).",
)
@click.option("--unigram-min-count", type=int, help="Override the unigram count threshold.")
@click.option("--pmi-threshold", type=float, help="Override the PMI threshold (log2 scale).")
@click.option(
    "--pmi-ref-tokens",
    type=float,
    help="Shift the PMI threshold for corpus size N: t − log2(REF / N).",
)
@click.option("--title-min-views", type=int, help="Override the title view threshold.")
@click.option("--unigram-cap", type=int, help="Override the unigram cap (mc2).")
@click.option("--bigram-cap", type=int, help="Override the bigram cap (mc2).")
@click.option("--title-cap", type=int, help="Override the title cap (mc2).")
@friendly
def build(
    out_dir: Path, recipe: str, langs: tuple[str, ...], wordnet_dir: Path | None,
    omw: tuple[str, ...], corpus: tuple[str, ...], pretokenized_corpus: tuple[str, ...],
    text_column: str, unigram_counts: tuple[str, ...], bigram_counts: tuple[str, ...],
    titles: tuple[str, ...], pageviews: tuple[Path, ...], segmenter: str, mem_mb: int,
    spill_dir: Path | None, unigram_min_count: int | None, pmi_threshold: float | None,
    pmi_ref_tokens: float | None, title_min_views: int | None, unigram_cap: int | None,
    bigram_cap: int | None, title_cap: int | None,
) -> None:  # fmt: skip
    """Assemble a metadata set from sources on disk."""
    from metaclip.metadata.builder import MetadataBuilder
    from metaclip.metadata.recipe import RECIPES

    rec = RECIPES[recipe].with_overrides(
        unigram_min_count=unigram_min_count, pmi_threshold=pmi_threshold,
        title_min_views=title_min_views, unigram_cap=unigram_cap, bigram_cap=bigram_cap,
        title_cap=title_cap,
    )  # fmt: skip
    b = MetadataBuilder(
        rec,
        segmenter=segmenter,
        mem_budget_bytes=mem_mb << 20,
        spill_dir=spill_dir,
        text_column=text_column,
        pmi_ref_tokens=int(pmi_ref_tokens) if pmi_ref_tokens else None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if wordnet_dir is not None:
            n = b.add_wordnet(wordnet_dir)
            click.echo(f"wordnet: {n} entries ({rec.wordnet})", err=True)
        for v in omw:
            lang, sep, path = v.rpartition("=")
            code = b.add_omw(path, lang if sep else None)
            click.echo(f"omw: {path} -> {code}", err=True)
        for lang, p in _lang_path(corpus, "--corpus"):
            click.echo(f"counting {lang}: {p}", err=True)
            b.add_corpus(lang, p)
        for lang, p in _lang_path(pretokenized_corpus, "--pretokenized-corpus"):
            click.echo(f"counting {lang} (pre-segmented): {p}", err=True)
            b.add_corpus(lang, p, pretokenized=True)
        for lang, p in _lang_path(unigram_counts, "--unigram-counts"):
            b.add_unigram_counts(lang, p)
        for lang, p in _lang_path(bigram_counts, "--bigram-counts"):
            b.add_bigram_counts(lang, p)
        for lang, p in _lang_path(titles, "--titles"):
            b.add_title_counts(lang, p)
        for p in pageviews:
            click.echo(f"pageviews: {p}", err=True)
            b.add_pageviews(p, langs or None)
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
        result = b.build(langs or None)
        result.write(out_dir)
    for lang, info in result.summary["languages"].items():
        parts = ", ".join(f"{k} {v:,}" for k, v in info["by_source"].items() if v)
        click.echo(f"{lang}: {info['entries']:,} entries ({parts})")
    click.echo(f"wrote {out_dir}")
