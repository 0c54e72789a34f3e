"""The human report: Markdown and a self-contained HTML page with PNG plots (matplotlib),
beside the datacard.

It stays readable from one language to MetaCLIP 2's 300+: the entry-count plot shows the
English (or largest) language with its t, next to every language at once with counts
divided by their own t (one band, no legend entry per language), and the top languages
as small multiples; the bar plots show the top :data:`TOP` languages and the rest as one
bar; every language is a row of the table (``report.md``, and a sortable table in
``report.html``, whose images are embedded so the one file can be sent or opened alone).

``run`` draws it on a thread while the subset is written, and a one-shot run waits for
it, so drawing is kept cheap: figures without pyplot, entry counts at log-spaced ranks
(fewer for the all-languages band, drawn as one collection), plain tick labels, no minor
ticks, fixed margins. Timings: see docs/performance.md, section "The report".
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from metaclip.pipeline import report_plots
from metaclip.pipeline.io import atomic_write, write_bytes
from metaclip.pipeline.report_plots import TOP

# (key, header, numeric) of the language table's columns, in order.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("rank", "#", True),
    ("lang", "lang", False),
    ("pool_texts", "pool texts", True),
    ("matched_texts", "matched texts", True),
    ("entries", "entries", True),
    ("matched_entries", "matched entries", True),
    ("matches", "matches", True),
    ("t", "t", True),
    ("tail_mass", "tail mass", True),
    ("kept", "kept texts", True),
    ("kept_pct", "kept %", True),
)


def language_rows(card: dict) -> list[dict[str, Any]]:
    """One row per language of the datacard, largest first (by matches, then pool texts,
    then name): the table's rows, and the order in which the plots pick languages.
    ``kept_pct`` is the kept share of the language's pool texts (None without texts)."""
    pool = card["pool"]
    texts = pool.get("texts_per_language", {})
    matched = pool.get("matched_per_language", {})
    kept = card["subset"]["per_language"]
    rows = []
    for lang, x in card["languages"].items():
        n = int(texts.get(lang, 0))
        k = int(kept.get(lang, 0))
        rows.append(
            {
                "lang": lang,
                "pool_texts": n,
                "matched_texts": int(matched.get(lang, 0)),
                "entries": int(x["entries"]),
                "matched_entries": int(x["matched_entries"]),
                "matches": int(x["matches"]),
                "t": float(x["t"]),
                "tail_mass": float(x["tail_mass"]),
                "kept": k,
                "kept_pct": 100.0 * k / n if n else None,
            }
        )
    rows.sort(key=lambda r: (-r["matches"], -r["pool_texts"], r["lang"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _cell(key: str, value: Any) -> str:
    """A table cell as the Markdown and HTML tables show it."""
    if value is None:
        return "–"
    if key == "t":
        return f"{value:g}"
    if key == "tail_mass":
        return f"{value:.3f}"
    if key == "kept_pct":
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _summary(card: dict) -> list[str]:
    """The report's head in Markdown (the HTML page shows the same lines)."""
    pool = card["pool"]
    lines = [
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
    lines.append(f"- curated subset: {card['subset']['size']:,} texts")
    return lines


def _markdown(card: dict, rows: list[dict], plots: list[tuple[str, str, bytes]]) -> str:
    lines = ["# metaclip curation report", "", *_summary(card), "", "## Plots", ""]
    if len(rows) > TOP:
        lines += [_TOP_NOTE.format(top=TOP, n=len(rows)), ""]
    for name, _, _ in plots:
        lines += [f"![{name}]({name})", ""]
    if not plots:
        lines += ["(install matplotlib for plots: `pip install metaclip[report]`)", ""]
    lines += ["## Languages", "", f"{len(rows)} languages, largest first (by matches). "
              f"{_TABLE_NOTE}", ""]  # fmt: skip
    lines.append("| " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for _, _, num in COLUMNS) + "|")
    for r in rows:
        cells = (_cell(k, r[k]).replace("|", "\\|") for k, _, _ in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TOP_NOTE = (
    "The bar plots show the top {top} of {n} languages (by matches) and the rest as one bar; "
    "every language is in the table below."
)
_TABLE_NOTE = (
    "pool texts: the language's texts in the pool; kept %: kept texts ÷ pool texts; "
    "tail mass: share of matches on entries with count < t."
)

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1220px;color:#222;
padding:0 12px}
code{background:#f2f2f2;padding:0 3px}
figure{margin:16px 0}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:2px 8px;border-bottom:1px solid #e4e4e4}
th{position:sticky;top:0;background:#fafafa;cursor:pointer;user-select:none;text-align:right}
td.num{text-align:right}td.txt,th.txt{text-align:left}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:hover{background:#f3f7fb}
"""

# Click a header to sort by it (numbers by their data-v value, text by name); a second click
# reverses. Marks the table data-sortable="ready" once it ran.
_JS = """
(function () {
  var table = document.getElementById("languages");
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
  function key(row, col, num) {
    var v = row.cells[col].getAttribute("data-v");
    if (!num) return v;
    var x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    var num = th.getAttribute("data-type") === "num";
    th.addEventListener("click", function () {
      var now = th.getAttribute("aria-sort");
      var desc = now ? now === "ascending" : num;
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col, num), y = key(b, col, num);
        var c = num ? (x > y) - (x < y) : String(x).localeCompare(String(y));
        return desc ? -c : c;
      });
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  table.setAttribute("data-sortable", "ready");
})();
"""


def _inline_md(text: str) -> str:
    """Markdown's `code` spans of a summary line as HTML (the rest escaped)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(card: dict, rows: list[dict], plots: list[tuple[str, str, bytes]]) -> str:
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>metaclip curation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>metaclip curation report</h1>",
    ]
    items = False
    for line in _summary(card):
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(("" if items else "<ul>") + f"<li>{_inline_md(line[2:])}</li>")
            items = True
        elif line.startswith("  - "):
            out.append(f"<ul><li>{_inline_md(line[4:])}</li></ul>")
        elif line:
            out.append(f"<p>{_inline_md(line)}</p>")
    if items:
        out.append("</ul>")
    out.append("<h2>Plots</h2>")
    if len(rows) > TOP:
        out.append(f"<p>{html.escape(_TOP_NOTE.format(top=TOP, n=len(rows)))}</p>")
    for name, caption, png in plots:
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'data-name="{html.escape(name)}"><figcaption>{html.escape(caption)} '
            f"({html.escape(name)})</figcaption></figure>"
        )
    if not plots:
        out.append("<p>(install matplotlib for plots: <code>pip install metaclip[report]</code>)"
                   "</p>")  # fmt: skip
    out += [
        "<h2>Languages</h2>",
        f"<p>{len(rows)} languages; click a column to sort. {html.escape(_TABLE_NOTE)}</p>",
        '<table id="languages"><thead><tr>',
    ]
    for key, head, num in COLUMNS:
        sort = ' aria-sort="descending"' if key == "matches" else ""
        kind = "num" if num else "txt"
        out.append(f'<th data-key="{key}" data-type="{kind}" class="{kind}"{sort}>{head}</th>')
    out.append("</tr></thead><tbody>")
    for r in rows:
        cells = []
        for key, _, num in COLUMNS:
            v = r[key]
            raw = "" if v is None else (repr(v) if num else str(v))
            cells.append(
                f'<td class="{"num" if num else "txt"}" data-v="{html.escape(raw)}">'
                f"{html.escape(_cell(key, v))}</td>"
            )
        out.append(f'<tr data-lang="{html.escape(r["lang"])}">{"".join(cells)}</tr>')
    out += ["</tbody></table>", f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(out) + "\n"


def write_report(
    out: Path,
    card: dict,
    counts: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
) -> Path:
    """Write ``report/report.md``, ``report/report.html`` (one file, plots embedded) and
    the plots as PNGs; ``counts``/``after``: entry counts in the pool and in the curated
    subset, per language. Returns the path of ``report.md``."""
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    rows = language_rows(card)
    plots = report_plots.plots(rows, counts, after)
    for name, _, png in plots:
        write_bytes(rdir / name, png)
    page = _html(card, rows, plots)
    atomic_write(rdir / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    text = _markdown(card, rows, plots)
    path = rdir / "report.md"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path
