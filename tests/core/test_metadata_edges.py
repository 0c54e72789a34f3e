"""Issue #19 ("Smaller"): metadata whose entries carry a byte-order mark or edge whitespace.

A UTF-8 BOM at the start of a text or JSON list is file encoding: it is skipped, so the
first entry matches. Entries that begin or end with whitespace are kept as written (ids are
positions; entries are never normalized, spec §1) but match almost nothing (an entry is
matched as ``" " + entry + " "``), so loading them warns, naming how many and the first few.
Each case runs ``metaclip-curate run`` on real files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip.cli import main
from metaclip.pipeline.metadata import MetadataWarning, edge_whitespace

BOM = b"\xef\xbb\xbf"
TEXTS = ["a dog", "a cat", "hot dog stand", "nothing here"]


def pool(tmp_path: Path) -> Path:
    p = tmp_path / "pool.jsonl"
    rows = [{"key": f"k{i}", "text": t, "lang": "en"} for i, t in enumerate(TEXTS)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def run(tmp_path: Path, md: Path, name: str = "o") -> tuple[list[str], list[str]]:
    """Run the CLI (texts are English); (texts kept, MetadataWarning messages)."""
    out = tmp_path / name
    args = ["run", str(pool(tmp_path)), "-m", str(md), "-o", str(out), "--t", "10", "-q"]
    args += ["--lang-column", "lang"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    kept = sorted(pq.read_table(out / "subset").column("text").to_pylist())
    msgs = [str(w.message) for w in caught if issubclass(w.category, MetadataWarning)]
    return kept, msgs


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_bom_is_skipped_and_the_first_entry_matches(tmp_path, suffix):
    md = tmp_path / f"md{suffix}"
    body = b"dog\r\ncat\r\n" if suffix == ".txt" else b'["dog", "cat"]'
    md.write_bytes(BOM + body)
    kept, msgs = run(tmp_path, md)
    # "dog" is the first entry, the one the BOM was glued to.
    assert kept == ["a cat", "a dog", "hot dog stand"]
    assert msgs == []


def test_edge_whitespace_warns_and_is_kept(tmp_path):
    md = tmp_path / "md.txt"
    md.write_text(" dog\ncat \nhot dog\n\tstand\n")
    kept, msgs = run(tmp_path, md)
    # Entries are not trimmed: " dog" and "cat " match nothing here, "hot dog" still does.
    assert kept == ["hot dog stand"]
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m.startswith(f"{md}: 3 metadata entries begin or end with whitespace: "), m
    assert "' dog' (id 0), 'cat ' (id 1), '\\tstand' (id 3)." in m, m
    assert "' ' + entry + ' '" in m


def test_every_entry_padded_names_the_first_five(tmp_path):
    # The case: every entry has spaces at its ends, so nothing matches (exit 0).
    md = tmp_path / "md.json"
    entries = [f" {w} " for w in ["dog", "cat", "hot", "stand", "here", "a", "nothing"]]
    md.write_text(json.dumps(entries))
    kept, msgs = run(tmp_path, md)
    assert kept == []
    assert len(msgs) == 1, msgs
    assert ": 7 metadata entries begin or end with whitespace: ' dog ' (id 0)," in msgs[0]
    assert "' here ' (id 4) and 2 more." in msgs[0]


def test_table_and_folder_metadata_warn_with_languages(tmp_path):
    # A JSON-lines table (with a BOM: pyarrow skips it) and a folder of {lang}.json lists.
    table = tmp_path / "md.jsonl"
    rows = [("en", "dog"), ("en", "cat "), ("de", "Hund"), ("de", "\ufeffKatze")]
    lines = "".join(json.dumps({"lang": la, "entry": e}) + "\n" for la, e in rows)
    table.write_bytes(BOM + lines.encode())
    kept, msgs = run(tmp_path, table, "o1")
    assert kept == ["a dog", "hot dog stand"]
    assert len(msgs) == 1, msgs
    assert "2 metadata entries" in msgs[0] and "'\\ufeffKatze' (de id 1)" in msgs[0]
    assert "'cat ' (en id 1)" in msgs[0]

    folder = tmp_path / "mdfolder"
    folder.mkdir()
    (folder / "en.json").write_bytes(BOM + b'["dog", "cat"]')
    (folder / "de.json").write_text(json.dumps(["Hund ", "Katze"]))
    kept, msgs = run(tmp_path, folder, "o2")
    assert kept == ["a cat", "a dog", "hot dog stand"]
    assert len(msgs) == 1, msgs
    assert ": 1 metadata entry begins or ends with whitespace: 'Hund ' (de id 0)." in msgs[0]


def test_parquet_table_warns(tmp_path):
    md = tmp_path / "md.parquet"
    pq.write_table(pa.table({"lang": ["en", "en"], "entry": ["dog", "cat\n"]}), md)
    kept, msgs = run(tmp_path, md)
    assert kept == ["a dog", "hot dog stand"]
    assert len(msgs) == 1 and "'cat\\n' (id 1)" in msgs[0], msgs


def test_clean_metadata_does_not_warn():
    n, first = edge_whitespace({"en": ["dog", "hot dog", "a\tb", "x\ufeffy"], "de": []})
    assert (n, first) == (0, [])
    n, first = edge_whitespace({"en": ["dog", "\u3000cat"], "de": ["\xa0x"]})
    assert (n, first) == (2, [("en", 1, "\u3000cat"), ("de", 0, "\xa0x")])


def test_warning_reaches_the_console(tmp_path):
    """The real command prints the warning on stderr and still exits 0."""
    md = tmp_path / "md.txt"
    md.write_bytes(BOM + b"dog\ncat \n")
    out = tmp_path / "o"
    cmd = [sys.executable, "-c", "from metaclip.cli import console; console()"]
    cmd += ["run", str(pool(tmp_path)), "-m", str(md), "-o", str(out), "--t", "10", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "MetadataWarning" in r.stderr, r.stderr
    assert "1 metadata entry begins or ends with whitespace: 'cat ' (id 1)" in r.stderr
    kept = sorted(pq.read_table(out / "subset").column("text").to_pylist())
    assert kept == ["a dog", "hot dog stand"]
