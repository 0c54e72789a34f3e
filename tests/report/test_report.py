"""The report at 1 to 300 languages: its figures, one table row per language (report.md and
report.html), the self-contained HTML page, and that page rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pools import run_cli

from metaclip import core
from metaclip.pipeline import report, report_plots

PNG = b"\x89PNG\r\n\x1a\n"
MULTI = ["entry_counts.png", "entry_counts_top.png", "head_tail.png", "subset_per_language.png"]
SINGLE = ["entry_counts.png", "head_tail.png", "subset_per_language.png"]


def langs(n: int) -> list[str]:
    return ["en"] + [f"l{i:03d}" for i in range(1, n)]


def synthetic(n: int, seed: int = 0) -> tuple[dict, dict, dict]:
    """(datacard, pool counts, subset counts) of ``n`` languages of Zipf-shaped sizes, with
    MC2 thresholds from English's tail mass, shaped as ``datacard.build`` makes them."""
    rng = np.random.default_rng(seed)
    before, after = {}, {}
    for i, lang in enumerate(langs(n)):
        entries = max(50, 4000 // (i + 1))
        scale = 2000 / (i + 1) ** 1.1
        zipf = scale / np.arange(1, entries + 1) ** 1.1
        c = (zipf * rng.uniform(0.5, 1.5, entries)).astype(np.uint64)
        before[lang] = rng.permutation(c)
    ts = core.mc2_thresholds(before, 20)
    per_lang, texts, matched, kept = {}, {}, {}, {}
    for lang, c in before.items():
        t = float(ts[lang].t)
        keep = np.minimum(1, t / np.maximum(c, 1))
        after[lang] = rng.binomial(c.astype(np.int64), keep).astype(np.uint64)
        per_lang[lang] = {
            "t": t,
            "entries": len(c),
            "matched_entries": int((c > 0).sum()),
            "matches": int(c.sum()),
            "tail_mass": core.tail_mass(c, t),
            "expected_matches_after": float(np.minimum(c, t).sum()),
        }
        matched[lang] = int(c.sum()) // 3
        texts[lang] = matched[lang] + 7
        kept[lang] = int(after[lang].sum()) // 3
    card = {
        "mode": "mc2", "unit": "pair", "seed": 0, "version": "x",
        "t_per_language": {k: v["t"] for k, v in per_lang.items()},
        "languages": per_lang,
        "pool": {
            "texts": sum(texts.values()), "matched": sum(matched.values()),
            "unmatched": 7 * n, "skipped": 0, "identity_holds": True,
            "skipped_by_reason": {}, "skipped_examples": {},
            "texts_per_language": texts, "matched_per_language": matched,
        },
        "subset": {"size": sum(kept.values()), "per_language": dict(sorted(kept.items()))},
    }  # fmt: skip
    return card, before, after


def md_table(text: str) -> list[list[str]]:
    """The Languages table of report.md: its rows' cells (header and rule left out)."""
    lines = text.split("## Languages", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]


def html_rows(page: str) -> list[str]:
    """The data-lang of each row of the HTML page's language table."""
    body = page.split('<table id="languages">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-lang="([^"]*)">', body)


def embedded(page: str) -> dict[str, bytes]:
    """The PNGs embedded in the page, by their file name."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]*data-name="([^"]+)"', page)
    return {name: base64.b64decode(data) for data, name in found}


@pytest.mark.parametrize("n", [1, 30, 300])
def test_report_has_its_figures_and_one_table_row_per_language(tmp_path, n):
    card, before, after = synthetic(n)
    path = report.write_report(tmp_path, card, before, after)
    rdir = tmp_path / "report"
    assert path == rdir / "report.md"
    names = MULTI if n > 1 else SINGLE
    assert sorted(p.name for p in rdir.glob("*.png")) == names
    for name in names:
        assert (rdir / name).read_bytes().startswith(PNG)
        assert (rdir / name).stat().st_size > 10_000
    # report.md: every figure linked, one row per language, largest (by matches) first.
    text = path.read_text()
    for name in names:
        assert f"![{name}]({name})" in text
    rows = md_table(text)
    by_matches = sorted(card["languages"], key=lambda x: -card["languages"][x]["matches"])
    assert [r[1] for r in rows] == by_matches
    assert [r[0] for r in rows] == [str(i) for i in range(1, n + 1)]
    en = rows[by_matches.index("en")]
    x = card["languages"]["en"]
    pool_texts = card["pool"]["texts_per_language"]["en"]
    kept = card["subset"]["per_language"]["en"]
    assert en == [
        en[0], "en", f"{pool_texts:,}", f"{card['pool']['matched_per_language']['en']:,}",
        f"{x['entries']:,}", f"{x['matched_entries']:,}", f"{x['matches']:,}", "20",
        f"{x['tail_mass']:.3f}", f"{kept:,}", f"{100 * kept / pool_texts:.1f}",
    ]  # fmt: skip
    # report.html beside it: the same rows, every figure embedded, nothing fetched.
    page = (rdir / "report.html").read_text()
    assert html_rows(page) == by_matches
    assert embedded(page) == {name: (rdir / name).read_bytes() for name in names}
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "<script src" not in page and "@import" not in page
    if n > report.TOP:  # the bar plots say that they show the top languages only
        assert f"top {report.TOP} of {n} languages" in page
        assert f"top {report.TOP} of {n} languages" in text


def test_language_rows_sort_largest_first_and_show_the_kept_share():
    card, _, _ = synthetic(3)
    card["languages"]["l002"]["matches"] = card["languages"]["en"]["matches"]
    card["pool"]["texts_per_language"]["l001"] = 0
    rows = report.language_rows(card)
    # Ties on matches: more pool texts first.
    assert [r["lang"] for r in rows][:2] == sorted(
        ["en", "l002"], key=lambda x: -card["pool"]["texts_per_language"][x]
    )
    assert [r["rank"] for r in rows] == [1, 2, 3]
    l001 = next(r for r in rows if r["lang"] == "l001")
    assert l001["kept_pct"] is None  # no pool texts: no share
    assert "| – |" in report._markdown(card, rows, [])
    # English is the main language; without English matches, the largest one.
    assert report_plots.main_language(rows) == "en"
    for r in rows:
        r["matches"] = 0 if r["lang"] == "en" else r["matches"]
    assert report_plots.main_language(rows) == "l002"


def test_a_card_without_the_per_language_pool_sizes_still_reports(tmp_path):
    """Datacards of earlier versions (and hand-made ones) have no per-language pool sizes."""
    card, before, after = synthetic(2)
    del card["pool"]["texts_per_language"], card["pool"]["matched_per_language"]
    text = report.write_report(tmp_path, card, before, after).read_text()
    assert [r[2] for r in md_table(text)] == ["0", "0"]


def test_many_languages_where_nothing_matched_draw_without_warnings(tmp_path):
    card, before, _ = synthetic(30)
    zeros = {k: np.zeros_like(v) for k, v in before.items()}
    for x in card["languages"].values():
        x.update(matches=0, matched_entries=0, tail_mass=0.0)
    card["subset"] = {"size": 0, "per_language": {}}
    card["pool"]["texts_per_language"] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.write_report(tmp_path, card, zeros, zeros)
    assert len(md_table((tmp_path / "report" / "report.md").read_text())) == 30
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == MULTI


def test_language_names_are_escaped_in_the_html_page(tmp_path):
    card, before, after = synthetic(2)
    odd = '<b>"x"&|'
    for d in (card["languages"], card["pool"]["texts_per_language"], before, after):
        d[odd] = d.pop("l001")
    card["pool"]["skipped_by_reason"] = {"bad <row>": 2}
    card["pool"]["skipped_examples"] = {"bad <row>": [0, 3]}
    report.write_report(tmp_path, card, before, after)
    page = (tmp_path / "report" / "report.html").read_text()
    assert odd not in page and "&lt;b&gt;&quot;x&quot;&amp;|" in page
    assert "<code>bad &lt;row&gt;</code>: 2" in page
    assert sorted(html_rows(page)) == sorted(["en", "&lt;b&gt;&quot;x&quot;&amp;|"])
    text = (tmp_path / "report" / "report.md").read_text()
    assert '| <b>"x"&\\| |' in text  # a | in a name does not split the Markdown row


def test_without_matplotlib_the_report_has_its_tables_and_no_figures(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    card, before, after = synthetic(5)
    text = report.write_report(tmp_path, card, before, after).read_text()
    assert "pip install metaclip[report]" in text and len(md_table(text)) == 5
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<img" not in page and len(html_rows(page)) == 5
    assert not list((tmp_path / "report").glob("*.png"))


def test_a_curated_30_language_pool_gets_the_html_report(tmp_path):
    """``metaclip-curate run --mode mc2 --lang-column lang`` on 30 languages: report.html
    beside report.md, one table row per language of the metadata."""
    names = langs(30)
    md_dir = tmp_path / "metadata"
    md_dir.mkdir()
    rows: dict[str, list[str]] = {"key": [], "text": [], "lang": []}
    rng = np.random.default_rng(0)
    for i, lang in enumerate(names):
        words = [f"{lang}w{j}" for j in range(60)]
        (md_dir / f"{lang}.json").write_text(json.dumps(words[:40]))
        p = 1 / np.arange(1, 61)
        for k in range(max(20, 600 // (i + 1))):
            rows["key"].append(f"{lang}-{k}")
            rows["text"].append(" ".join(rng.choice(words, 3, p=p / p.sum())))
            rows["lang"].append(lang)
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table(rows), pool / "part-0.parquet")
    out = tmp_path / "out"
    run_cli("run", str(pool), "-m", str(md_dir), "-o", str(out), "--mode", "mc2",
            "--lang-column", "lang", "--t-en", "5", "-q")  # fmt: skip
    rdir = out / "report"
    assert sorted(p.name for p in rdir.glob("*.png")) == MULTI
    card = json.loads((out / "datacard.json").read_text())
    text = (rdir / "report.md").read_text()
    assert sorted(r[1] for r in md_table(text)) == sorted(names) == sorted(card["languages"])
    page = (rdir / "report.html").read_text()
    assert sorted(html_rows(page)) == sorted(names)
    assert set(embedded(page)) == set(MULTI)
    en = next(r for r in md_table(text) if r[1] == "en")
    assert en[2] == f"{card['pool']['texts_per_language']['en']:,}"
    assert en[9] == f"{card['subset']['per_language']['en']:,}"


# --- The page in a browser -------------------------------------------------------------

# Appended to a copy of the page: once it loaded, record where each image lies and what the
# table holds, then sort by columns, recording the order each time (--dump-dom shows it).
PROBE = """<script>
window.addEventListener("load", function () {
  var b = document.body, table = document.getElementById("languages");
  document.querySelectorAll("img").forEach(function (img) {
    var r = img.getBoundingClientRect();
    img.setAttribute("data-box", [r.left, r.top + window.scrollY, r.width, r.height,
                                  img.naturalWidth].join(","));
  });
  function order() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.getAttribute("data-lang"); }).join(" ");
  }
  b.setAttribute("data-order", order());
  table.querySelector("th[data-key=lang]").click();
  b.setAttribute("data-by-lang", order());
  table.querySelector("th[data-key=matches]").click();
  b.setAttribute("data-by-matches", order());
  table.querySelector("th[data-key=matches]").click();
  b.setAttribute("data-by-matches-again", order());
});
</script>"""


def chromium() -> str | None:
    """A headless-capable Chromium or Chrome binary, if one is installed and starts."""
    found = os.environ.get("CHROME_BIN") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome",
                                        "google-chrome-stable", "chrome"))),
        None,
    )  # fmt: skip
    if not found:
        return None
    try:
        ok = subprocess.run([found, "--version"], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if ok == 0 else None  # e.g. a snap stub without snapd


def browse(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--window-size=1200,3000", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'chromium-profile'}", *args,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def test_the_html_report_renders_its_figures_and_sortable_table_in_chromium(tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    Image = pytest.importorskip("PIL.Image")
    n = 30
    card, before, after = synthetic(n)
    report.write_report(tmp_path, card, before, after)
    page = tmp_path / "report" / "report.html"
    pngs = embedded(page.read_text())
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))

    dom = browse(exe, tmp_path, "--dump-dom", probe.as_uri()).stdout
    # The page's own script ran: the table is marked, one row per language.
    table = dom.split('<table id="languages"', 1)[1].split("</table>", 1)[0]
    assert 'data-sortable="ready"' in table.split(">", 1)[0]
    assert table.count("<tr data-lang=") == n
    by_matches = sorted(card["languages"], key=lambda x: -card["languages"][x]["matches"])
    attr = dict(re.findall(r'data-(order|by-lang|by-matches|by-matches-again)="([^"]*)"', dom))
    assert attr["order"].split() == by_matches
    # Text sorts a→z on the first click, numbers largest first; a second click reverses.
    assert attr["by-lang"].split() == sorted(card["languages"])
    assert attr["by-matches"].split() == by_matches
    again = [card["languages"][x]["matches"] for x in attr["by-matches-again"].split()]
    assert again == sorted(again) and len(again) == n
    boxes = {}
    for img in re.findall(r"<img [^>]*>", dom):
        name = re.search(r'data-name="([^"]+)"', img)
        box = re.search(r'data-box="([^"]+)"', img)
        assert name and box, img[:80]
        boxes[name[1]] = [float(v) for v in box[1].split(",")]
    assert sorted(boxes) == sorted(MULTI)

    # The screenshot shows each figure where the page laid it out: the decoded PNG, scaled
    # to its box, matches the pixels there, and they are far from blank.
    shot = tmp_path / "shot.png"
    browse(exe, tmp_path, f"--screenshot={shot}", page.as_uri())
    screen = Image.open(shot).convert("RGB")
    assert screen.size == (1200, 3000)
    seen = 0
    for name, (x, y, w, h, natural) in boxes.items():
        want = Image.open(io.BytesIO(pngs[name])).convert("RGB")
        assert natural == want.width > 0  # decoded
        if y + h > screen.height:
            continue  # below the window
        seen += 1
        box = (round(x), round(y), round(x + w), round(y + h))
        got = np.asarray(screen.crop(box), dtype=float)
        ref = np.asarray(want.resize((box[2] - box[0], box[3] - box[1])), dtype=float)
        differs = np.abs(got - ref).mean()
        blank = np.abs(255 - ref).mean()
        assert (got < 200).any(axis=2).mean() > 0.01, name  # ink, not a blank box
        assert differs < 0.25 * blank, (name, differs, blank)
    assert seen >= 3
