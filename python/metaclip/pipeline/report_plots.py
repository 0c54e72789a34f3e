"""The report's plots (matplotlib Figures, no pyplot): entry counts of the main language
with its t beside every language divided by its own t, the top languages as small
multiples, and bars for the top ``TOP`` languages with the rest as one bar. Drawing is
kept cheap (see ``report.py`` and docs/performance.md, "The report")."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

#: Languages drawn one by one in the bar plots (the rest: one "other languages" bar).
TOP = 20
#: Languages drawn as small multiples of the entry counts.
GRID = 12
#: Log-spaced ranks per curve of the all-languages band.
BAND_POINTS = 256

_POOL, _CURATED, _T = "C0", "C1", "0.35"  # colours: pool, curated subset, threshold line


def main_language(rows: list[dict[str, Any]]) -> str | None:
    """English when it matched anything, else the language with the most matches."""
    for r in rows:
        if r["lang"] == "en" and r["matches"]:
            return "en"
    best = max(rows, key=lambda r: r["matches"], default=None)
    return best["lang"] if best is not None and best["matches"] else None


def plots(rows: list[dict[str, Any]], before: dict, after: dict) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG bytes) of each plot; none without matplotlib."""
    try:
        # Figures without pyplot: no global backend switch in the caller's process (a
        # notebook keeps its own), safe on the thread that draws during the write stage,
        # and pyplot's imports are skipped.
        from matplotlib.figure import Figure
    except ImportError:
        return []
    drawn = [_entry_counts(Figure, rows, before, after)]
    if len(rows) > 1:
        drawn.append(_entry_counts_top(Figure, rows, before, after))
    drawn.append(_head_tail(Figure, rows))
    drawn.append(_subset_sizes(Figure, rows))
    return drawn


def _desc(counts: np.ndarray | None) -> np.ndarray:
    """The non-zero counts in decreasing order."""
    if counts is None:
        return np.zeros(0, np.uint64)
    return np.sort(counts[counts > 0])[::-1]


def _log_axes(ax, ticks: int | None = None) -> None:
    """Log-log axes with plain labels; ``ticks``: at most about that many per axis (each
    tick is several artists to make and draw: fewer for small panels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain labels (1, 10, 1k, 1M): the default 10^n labels are typeset with mathtext,
    # which is slow; no minor ticks, which are many lines to draw (docs/performance.md,
    # "The report").
    for axis in (ax.xaxis, ax.yaxis):
        if ticks is not None:
            axis.set_major_locator(LogLocator(numticks=ticks))
        axis.set_major_formatter(FuncFormatter(_short))
        axis.set_minor_locator(NullLocator())


def _curves(ax, before: np.ndarray, after: np.ndarray, t: float, lw: float = 1.5) -> None:
    """One language: pool and curated counts by rank, and its t."""
    if len(before):
        ax.plot(*_ranked(before), color=_POOL, lw=lw)
    if len(after):
        ax.plot(*_ranked(after), "--", color=_CURATED, lw=lw)
    if t > 0:  # (a log axis has no 0)
        ax.axhline(t, color=_T, lw=0.8, ls=":")


def _key(fig, top: float) -> None:
    """The plots' legend, at the top right above the axes (never over the data)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=_POOL, label="pool"),
        Line2D([], [], color=_CURATED, ls="--", label="curated subset"),
        Line2D([], [], color=_T, ls=":", label="t (the language's threshold)"),
    ]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.99, top))  # fmt: skip


def _entry_counts(Figure, rows: list[dict], before: dict, after: dict) -> tuple[str, str, bytes]:
    """The main language's entry counts with its t and, with several languages, every
    language's counts divided by its t, as one band."""
    from matplotlib.collections import LineCollection

    lang = main_language(rows)
    several = len(rows) > 1
    fig = Figure(figsize=(11, 4.2) if several else (7, 4.2))
    axes = fig.subplots(1, 2 if several else 1, squeeze=False)[0]
    ax = axes[0]
    _log_axes(ax)
    ax.set_xlabel("entries, sorted by count")
    ax.set_ylabel("matches")
    if lang is None:  # nothing matched: say so rather than leave a blank frame
        ax.text(0.5, 0.5, "no entry matched", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Entry counts", y=1)
    else:
        row = next(r for r in rows if r["lang"] == lang)
        _curves(ax, _desc(before.get(lang)), _desc(after.get(lang)), row["t"])
        ax.set_title(f"{lang}: entry counts, t = {row['t']:g}", fontsize=10, loc="left", y=1)
    if several:
        ax = axes[1]
        _log_axes(ax)
        segs: dict[str, list[np.ndarray]] = {_POOL: [], _CURATED: []}
        drawn = 0
        for r in rows:
            if r["t"] <= 0 or not r["matches"]:
                continue
            drawn += 1
            for colour, counts in ((_POOL, before), (_CURATED, after)):
                c = _desc(counts.get(r["lang"]))
                if len(c):
                    x, y = _ranked(c, BAND_POINTS)
                    segs[colour].append(np.column_stack([x, y / r["t"]]))
        # One collection per colour (far cheaper than a line per language); faint enough
        # that hundreds of languages read as a band.
        alpha = min(0.8, max(0.08, 6.0 / max(drawn, 1)))
        for colour, lines in segs.items():
            if lines:
                ax.add_collection(LineCollection(lines, colors=colour, linewidths=0.8, alpha=alpha))
        if drawn:
            ax.autoscale_view()
        else:
            ax.text(0.5, 0.5, "no entry matched", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
        ax.axhline(1, color=_T, lw=0.8, ls=":")
        ax.set_xlabel("entries, sorted by count")
        ax.set_ylabel("matches ÷ the language's t")
        ax.set_title(f"all {len(rows)} languages, counts ÷ t", fontsize=10, loc="left", y=1)
    fig.suptitle("Entry counts before and after balancing", x=0.01, ha="left", y=0.985)
    if several:
        _key(fig, 0.995)
        fig.subplots_adjust(left=0.07, right=0.99, wspace=0.22, bottom=0.13, top=0.84)
    else:  # a narrower figure: the key on a line of its own, under the title
        _key(fig, 0.93)
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.13, top=0.8)
    caption = "Entry counts: English (else the largest language) and all languages ÷ their t"
    if not several:
        caption = "Entry counts"
    return "entry_counts.png", caption, _png(fig)


def _entry_counts_top(
    Figure, rows: list[dict], before: dict, after: dict
) -> tuple[str, str, bytes]:
    """Small multiples: the entry counts of the top :data:`GRID` languages, one panel each
    (shared axes, so sizes compare)."""
    top = [r for r in rows if r["matches"]][:GRID] or rows[:1]
    ncols = min(4, len(top))
    nrows = math.ceil(len(top) / ncols)
    fig = Figure(figsize=(11, 1.9 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(top):
            ax.set_axis_off()
            continue
        r = top[i]
        _log_axes(ax, ticks=4)
        ax.tick_params(labelsize=7)
        _curves(ax, _desc(before.get(r["lang"])), _desc(after.get(r["lang"])), r["t"], lw=1)
        ax.set_title(f"{r['lang']}  t = {r['t']:g}, tail {r['tail_mass']:.2f}", fontsize=8,
                     loc="left", pad=2, y=1)  # fmt: skip
        if i % ncols == 0:
            ax.set_ylabel("matches", fontsize=8)
        if i >= len(top) - ncols:
            ax.set_xlabel("entries, sorted by count", fontsize=8)
    n = len(rows)
    fig.suptitle(f"Entry counts of the top {len(top)} of {n} languages (by matches)",
                 x=0.01, ha="left", y=0.995)  # fmt: skip
    head = 0.75 / fig.get_figheight()  # the title and key take a fixed height
    _key(fig, 1.0)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.55 / fig.get_figheight(),
                        top=1 - head, wspace=0.08, hspace=0.35)  # fmt: skip
    return "entry_counts_top.png", f"Entry counts of the top {len(top)} languages", _png(fig)


def _bar_rows(rows: list[dict]) -> tuple[list[dict], dict | None]:
    """The top :data:`TOP` rows and the rest summed into one row (None if no rest)."""
    top, rest = rows[:TOP], rows[TOP:]
    if not rest:
        return top, None
    matches = sum(r["matches"] for r in rest)
    tail = sum(r["tail_mass"] * r["matches"] for r in rest)
    return top, {
        "lang": f"other {len(rest)} languages",
        "matches": matches,
        "tail_mass": tail / matches if matches else 0.0,
        "pool_texts": sum(r["pool_texts"] for r in rest),
        "kept": sum(r["kept"] for r in rest),
        "t": None,
    }


def _bar_figure(Figure, n: int):
    fig = Figure(figsize=(7, 0.22 * n + 1.3))
    ax = fig.subplots()
    ax.tick_params(axis="y", labelsize=8, length=0)
    ax.tick_params(axis="x", labelsize=8)
    return fig, ax


def _bar_layout(fig, title: str) -> None:
    h = fig.get_figheight()
    fig.suptitle(title, x=0.01, ha="left", y=1 - 0.08 / h, fontsize=11)
    fig.subplots_adjust(left=0.25, right=0.97, top=1 - 0.75 / h, bottom=0.5 / h)


def _head_tail(Figure, rows: list[dict]) -> tuple[str, str, bytes]:
    top, rest = _bar_rows(rows)
    bars = top + ([rest] if rest else [])
    fig, ax = _bar_figure(Figure, len(bars))
    y = np.arange(len(bars))
    tail = np.array([r["tail_mass"] for r in bars])
    head = np.array([1 - r["tail_mass"] if r["matches"] else 0 for r in bars])  # no bar: none
    ax.barh(y, tail, color=_POOL, label="tail (count < t)")
    ax.barh(y, head, left=tail, color=_CURATED, label="head (count ≥ t)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the language's matches", fontsize=8)
    _finish_bars(fig, ax, [_bar_label(r) for r in bars], "Head and tail mass per language",
                 len(top), len(rows))  # fmt: skip
    return "head_tail.png", "Head and tail mass per language", _png(fig)


def _subset_sizes(Figure, rows: list[dict]) -> tuple[str, str, bytes]:
    from matplotlib.ticker import FuncFormatter, NullLocator

    top, rest = _bar_rows(rows)
    bars = top + ([rest] if rest else [])
    fig, ax = _bar_figure(Figure, len(bars))
    y = np.arange(len(bars))
    pool = np.array([r["pool_texts"] for r in bars], dtype=float)
    kept = np.array([r["kept"] for r in bars], dtype=float)
    ax.barh(y, pool, color=_POOL, alpha=0.35, label="pool texts")
    ax.barh(y, kept, height=0.5, color=_POOL, label="kept texts")
    biggest = float(max(pool.max(initial=0), kept.max(initial=0)))
    if biggest > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_short))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(0.8, biggest * 4)  # room for the kept share after the bars
        for i, (p, k) in enumerate(zip(pool, kept, strict=True)):
            if p > 0:
                ax.text(max(p, k) * 1.15, i, f"{100 * k / p:.0f}%", va="center", fontsize=7)
    ax.set_xlabel("texts (log scale; % = kept share of the language's pool texts)", fontsize=8)
    _finish_bars(fig, ax, [_bar_label(r, t=False) for r in bars],
                 "Pool and curated subset per language", len(top), len(rows))  # fmt: skip
    return "subset_per_language.png", "Pool and subset size per language", _png(fig)


def _finish_bars(fig, ax, labels: list[str], title: str, shown: int, langs: int) -> None:
    """Labels (largest on top), the legend above the axes, and a title that says when only
    the top languages are drawn."""
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False,
              borderaxespad=0.2)  # fmt: skip
    more = f" (top {shown} of {langs})" if shown < langs else ""
    _bar_layout(fig, f"{title}{more}")


def _bar_label(r: dict, t: bool = True) -> str:
    if not t or r["t"] is None:
        return str(r["lang"])
    return f"{r['lang']}  t = {r['t']:g}"


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


def _png(fig) -> bytes:
    # Fixed margins (set by each plot): matplotlib's tight layout measures every tick
    # label, which is slow (docs/performance.md, "The report").
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
