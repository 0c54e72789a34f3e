"""The human report: Markdown with PNG plots (matplotlib), beside the datacard.

``run`` draws it on a thread while the subset is written, and a one-shot run waits for
it, so drawing is kept cheap: figures without pyplot, entry counts at log-spaced ranks,
plain tick labels, no minor ticks, fixed margins. Timings: see docs/performance.md,
section "The report".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaclip.pipeline.io import atomic_write


def _plots(out: Path, card: dict, before: dict, after: dict) -> list[str]:
    try:
        # Figures without pyplot: no global backend switch in the caller's process (a
        # notebook keeps its own), safe on the thread that draws during the write stage,
        # and pyplot's imports are skipped.
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullLocator
    except ImportError:
        return []
    names = []
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for lang in before:
        b = np.sort(before[lang][before[lang] > 0])[::-1]
        if len(b):
            ax.plot(*_ranked(b), label=f"{lang} pool")
        a = np.sort(after[lang][after[lang] > 0])[::-1]
        if len(a):
            ax.plot(*_ranked(a), "--", label=f"{lang} curated")
    for t in card["t_per_language"].values():
        ax.axhline(t, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain labels (1, 10, 1k, 1M): the default 10^n labels are typeset with mathtext,
    # which is slow; no minor ticks, which are many lines to draw (docs/performance.md,
    # "The report").
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(_short))
        axis.set_minor_locator(NullLocator())
    ax.set_xlabel("entries, sorted by count")
    ax.set_ylabel("matches")
    ax.set_title("Entry counts before and after balancing (lines: t)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    else:  # nothing matched: say so rather than leave a blank frame (and a warning)
        ax.text(0.5, 0.5, "no entry matched", ha="center", va="center", transform=ax.transAxes)
    names.append("entry_counts.png")
    _save(fig, out / names[-1])

    langs = card["languages"]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    xs = list(langs)
    head = [1 - langs[x]["tail_mass"] for x in xs]
    tail = [langs[x]["tail_mass"] for x in xs]
    ax.bar(xs, tail, label="tail (count < t)")
    ax.bar(xs, head, bottom=tail, label="head (count ≥ t)")
    ax.set_ylabel("share of matches")
    ax.set_title("Head and tail mass per language")
    ax.legend(fontsize=7)
    names.append("head_tail.png")
    _save(fig, out / names[-1])

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    sizes = card["subset"]["per_language"]
    ax.bar(list(sizes), list(sizes.values()))
    ax.set_ylabel("kept texts")
    ax.set_title("Subset size per language")
    names.append("subset_per_language.png")
    _save(fig, out / names[-1])
    return names


def _short(x: float, _pos: int = 0) -> str:
    """1, 10, 100, 1k, 10k, 100k, 1M, … for a log axis's tick at ``x``."""
    for unit, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= unit:
            return f"{x / unit:g}{name}"
    return f"{x:g}"


def _ranked(counts: np.ndarray, points: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(rank, count) of counts sorted in decreasing order, at log-spaced ranks (first and
    last included): on a log axis that draws the same curve as every rank, far faster
    (docs/performance.md, "The report")."""
    ranks = np.unique(np.geomspace(1, len(counts), points).round().astype(np.int64))
    return ranks, counts[ranks - 1]


def _save(fig, path: Path) -> None:
    # Fixed margins: matplotlib's tight layout measures every tick label, which is slow
    # (docs/performance.md, "The report").
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.14, top=0.91)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


def write_report(
    out: Path,
    card: dict,
    counts: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
) -> Path:
    """Write ``report/report.md`` and its plots; ``counts``/``after``: entry counts in the
    pool and in the curated subset, per language."""
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    plots = _plots(rdir, card, counts, after)
    pool = card["pool"]
    lines = [
        "# metaclip curation report",
        "",
        f"mode `{card['mode']}`, unit `{card['unit']}`, seed {card['seed']}, "
        f"metaclip {card['version']}",
        "",
        "## Pool",
        "",
        f"- texts: {pool['texts']:,} = matched {pool['matched']:,} + unmatched "
        f"{pool['unmatched']:,} + skipped {pool['skipped']:,} "
        f"({'holds' if pool['identity_holds'] else 'DOES NOT HOLD'})",
    ]
    for reason, n in pool["skipped_by_reason"].items():
        rows = pool["skipped_examples"].get(reason, [])
        lines.append(f"  - skipped `{reason}`: {n:,} (first rows in their shards: {rows})")
    lines += [
        f"- curated subset: {card['subset']['size']:,} texts",
        "",
        "## Languages",
        "",
        "| lang | entries | matched entries | matches | t | tail mass | kept |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, x in card["languages"].items():
        kept = card["subset"]["per_language"].get(lang, 0)
        lines.append(
            f"| {lang} | {x['entries']:,} | {x['matched_entries']:,} | {x['matches']:,} | "
            f"{x['t']:g} | {x['tail_mass']:.3f} | {kept:,} |"
        )
    lines.append("")
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    if not plots:
        lines.append("(install matplotlib for plots: `pip install metaclip[report]`)")
    text = "\n".join(lines) + "\n"
    path = rdir / "report.md"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path
