"""Bad input gets one clear error line naming the file, or a counted skip — never a
traceback and never a silently lost row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip.cli import main


@pytest.fixture()
def md(tmp_path) -> Path:
    p = tmp_path / "md.json"
    p.write_text(json.dumps(["dog", "cat", "hot dog"]))
    return p


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_ok(pool: Path, md: Path, out: Path, *extra: str) -> dict:
    r = invoke("run", str(pool), "-m", str(md), "-o", str(out), "--t", "10", "-q", *extra)
    assert r.exit_code == 0, r.output
    card = json.loads((out / "datacard.json").read_text())
    p = card["pool"]
    assert p["texts"] == p["matched"] + p["unmatched"] + p["skipped"]
    assert p["identity_holds"]
    return card


def one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, r.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_text_column_names_file_and_columns(tmp_path, md):
    pq.write_table(pa.table({"key": ["a"], "caption": ["dog"]}), tmp_path / "s.parquet")
    r = invoke("run", str(tmp_path / "s.parquet"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.parquet", "'text'", "caption", "--text-column")
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"key": "a", "caption": "dog"}\n')
    r = invoke("run", str(jsonl), "-m", str(md), "-o", str(tmp_path / "o3"))
    one_line_error(r, "s.jsonl", "'text'", "caption", "--text-column")
    # ...and naming the column makes it work.
    run_ok(tmp_path / "s.parquet", md, tmp_path / "o2", "--text-column", "caption")


def test_missing_key_column(tmp_path, md):
    pq.write_table(pa.table({"id": ["a"], "text": ["dog"]}), tmp_path / "s.parquet")
    r = invoke("run", str(tmp_path / "s.parquet"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.parquet", "'key'", "--key-column")


def test_null_and_non_string_texts_are_counted(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    rows = [
        {"key": "a", "text": "a dog"},
        {"key": "b", "text": None},
        {"key": "c", "text": 42},
        {"key": "d", "text": {"not": "a string"}, "x": 1},
        {"key": "e"},
    ]
    (pool / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    card = run_ok(pool, md, tmp_path / "o")
    skipped = card["pool"]["skipped_by_reason"]
    assert card["pool"]["texts"] == 6
    assert skipped == {"null_text": 2, "non_string_text": 2, "malformed_row": 1}
    report = (tmp_path / "o" / "report" / "report.md").read_text()
    assert "skipped `malformed_row`: 1" in report and "(holds)" in report


def test_invalid_utf8_in_binary_and_string_columns(tmp_path, md):
    texts = [b"a dog", b"\xff\xfe dog", b"cat"]
    pq.write_table(
        pa.table({"key": ["a", "b", "c"], "text": pa.array(texts, pa.binary())}),
        tmp_path / "bin.parquet",
    )
    card = run_ok(tmp_path / "bin.parquet", md, tmp_path / "o1")
    assert card["pool"]["skipped_by_reason"] == {"invalid_utf8": 1}
    assert card["pool"]["matched"] == 2
    # A string column holding invalid UTF-8 (written by a tool that did not validate).
    bad = pa.array(texts, pa.binary()).view(pa.string())
    urls = pa.array([b"u\xff", b"v", b"w"], pa.binary()).view(pa.string())  # not the text
    table = pa.table({"key": ["a", "b", "c"], "text": bad, "url": urls})
    pq.write_table(table, tmp_path / "str.parquet")
    card = run_ok(tmp_path / "str.parquet", md, tmp_path / "o2")
    assert card["pool"]["skipped_by_reason"] == {"invalid_utf8": 1}


def test_empty_shard_is_fine(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    schema = pa.schema([("key", pa.string()), ("text", pa.string())])
    pq.write_table(schema.empty_table(), pool / "a.parquet")
    pq.write_table(pa.table({"key": ["x"], "text": ["a dog"]}), pool / "b.parquet")
    card = run_ok(pool, md, tmp_path / "o")
    assert card["pool"]["texts"] == 1 and card["subset"]["size"] == 1


def test_truncated_parquet_is_a_clear_error(tmp_path, md):
    pq.write_table(pa.table({"key": ["a"] * 100, "text": ["dog"] * 100}), tmp_path / "s.parquet")
    data = (tmp_path / "s.parquet").read_bytes()
    (tmp_path / "s.parquet").write_bytes(data[: len(data) // 2])
    r = invoke("run", str(tmp_path / "s.parquet"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.parquet", "cannot read parquet")


def test_non_string_text_column_type(tmp_path, md):
    pq.write_table(pa.table({"key": ["a"], "text": [3]}), tmp_path / "s.parquet")
    r = invoke("run", str(tmp_path / "s.parquet"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.parquet", "int64", "not a string")


def test_huge_texts(tmp_path, md):
    one_mb = "dog " * 250_000
    two_mb = "cat " * 500_000
    table = pa.table({"key": ["a", "b", "c"], "text": [one_mb, two_mb, "hot dog"]})
    pq.write_table(table, tmp_path / "s.parquet")
    card = run_ok(tmp_path / "s.parquet", md, tmp_path / "o")
    assert card["pool"]["skipped_by_reason"] == {"too_long": 1}
    assert card["pool"]["matched"] == 2
    card = run_ok(tmp_path / "s.parquet", md, tmp_path / "o2", "--max-text-bytes", "3000000")
    assert card["pool"]["matched"] == 3


@pytest.mark.parametrize("workers", ["1", "2"])  # 2: the matcher is built in the background
def test_duplicate_metadata_is_named(tmp_path, workers):
    (tmp_path / "md.json").write_text(json.dumps(["dog", "cat", "dog"]))
    for i in range(3):
        pq.write_table(pa.table({"key": [f"a{i}"], "text": ["dog"]}), tmp_path / f"s{i}.parquet")
    out = str(tmp_path / "o")
    md = str(tmp_path / "md.json")
    r = invoke("run", str(tmp_path), "-m", md, "-o", out, "--workers", workers)
    one_line_error(r, '"dog" (ids 0 and 2)')


def test_missing_pool(tmp_path, md):
    r = invoke("run", str(tmp_path / "nothing"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "no pool shards")


def test_shards_with_different_column_types(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    a = {"key": ["a", "b"], "text": ["a dog", "cat"], "url": ["x", "y"], "n": [1, 2]}
    b = {"key": ["c"], "text": ["dog"], "url": pa.array([b"\xff"], pa.binary()), "n": [None]}
    pq.write_table(pa.table(a), pool / "a.parquet")
    pq.write_table(pa.table(b), pool / "b.parquet")
    run_ok(pool, md, tmp_path / "o")  # string + binary → binary, int + null → int
    subset = pq.read_table(tmp_path / "o" / "subset")
    assert subset.schema.field("url").type == pa.binary()
    assert subset.column("url").to_pylist() == [b"x", b"y", b"\xff"]
    assert subset.column("n").to_pylist() == [1, 2, None]
    # A column that is int in one shard and string in another cannot share one file.
    pq.write_table(pa.table({"key": ["d"], "text": ["dog"], "n": ["one"]}), pool / "c.parquet")
    r = invoke("run", str(pool), "-m", str(md), "-o", str(tmp_path / "o2"), "--t", "10", "-q")
    one_line_error(r, "'n'", "a.parquet", "c.parquet", "int64", "string")


def test_invalid_utf8_in_kept_rows_of_a_string_column_restarts_as_binary(tmp_path):
    """Readers that validate UTF-8 hand such a column over as binary; the part that meets
    it asks for the whole subset to store the column as binary (same type in every file)."""
    from metaclip.pipeline.config import Config
    from metaclip.pipeline.subset import SchemaDrift, SubsetWriter

    cfg = Config(pool=(), out=str(tmp_path), metadata="")
    writer = SubsetWriter(cfg, {"en": 0}, {}, tmp_path, tmp_path)
    schema = pa.schema([("key", pa.string()), ("url", pa.string())])
    good = pa.table({"key": ["a"], "url": pa.array([b"ok"], pa.binary())})
    bad = pa.table({"key": ["b"], "url": pa.array([b"\xff"], pa.binary())})
    part = {"part": 0, "step": 10, "names": ["s"], "starts": [0], "lengths": [1]}
    assert writer.write_part(part, tmp_path, schema, lambda _: good) == 1  # valid: cast
    with pytest.raises(SchemaDrift) as e:
        writer.write_part(part, tmp_path, schema, lambda _: bad)
    assert e.value.columns == {"url"}


def test_schema_drift_rewrites_every_file_with_the_binary_column(tmp_path, md, monkeypatch):
    from metaclip.pipeline import shard

    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table({"key": ["a"], "text": ["dog"], "url": ["x"]}), pool / "a.parquet")
    pq.write_table(pa.table({"key": ["b"], "text": ["cat"], "url": ["y"]}), pool / "b.parquet")
    real = shard.read_parquet

    def validating_reader(shard, columns=None, use_threads=True):
        table = real(shard, columns, use_threads)
        if shard.path.name == "b.parquet" and "url" in table.column_names:
            i = table.column_names.index("url")
            table = table.set_column(i, "url", pa.array([b"\xff"], pa.binary()))
        return table

    monkeypatch.setattr(shard, "read_parquet", validating_reader)
    out = tmp_path / "o"
    run_ok(pool, md, out, "--rows-per-file", "1")
    files = sorted((out / "subset").glob("*.parquet"))
    assert len(files) == 2
    assert {pq.read_schema(f).field("url").type for f in files} == {pa.binary()}
    assert pq.read_table(out / "subset").column("url").to_pylist() == [b"x", b"\xff"]


def test_out_that_is_a_file(tmp_path, md):
    (tmp_path / "s.jsonl").write_text('{"key": "a", "text": "a dog"}\n')
    r = invoke("run", str(tmp_path / "s.jsonl"), "-m", str(md), "-o", str(md))
    one_line_error(r, str(md), "not a folder")


@pytest.mark.parametrize("encoding", ["dictionary", "view"])
def test_dictionary_and_view_text_columns_are_texts(tmp_path, md, encoding):
    """A pandas categorical (dictionary) or a string_view column (newer writers) holds the
    same texts as a plain string column: same matches, same subset rows."""
    texts = pa.array(["a dog", "a cat", None, "hot dog", "x"] * 20)
    keys = pa.array([f"k{i}" for i in range(len(texts))])
    typed = texts.dictionary_encode() if encoding == "dictionary" else texts.cast(pa.string_view())
    for name, col in (("plain", texts), ("typed", typed)):
        (tmp_path / name).mkdir()
        pq.write_table(
            pa.table({"key": keys, "text": col, "v": col}), tmp_path / name / "s.parquet"
        )
    plain = run_ok(tmp_path / "plain", md, tmp_path / "o1")
    typed_card = run_ok(tmp_path / "typed", md, tmp_path / "o2")
    assert typed_card["pool"] == plain["pool"] and typed_card["subset"] == plain["subset"]
    a, b = (pq.read_table(tmp_path / o / "subset") for o in ("o1", "o2"))
    assert a.column("key").equals(b.column("key"))
    assert b.column("text").to_pylist() == a.column("text").to_pylist()


def test_a_json_array_is_not_json_lines(tmp_path, md):
    rows = [{"key": "a", "text": "a dog"}, {"key": "b", "text": "a cat"}]
    (tmp_path / "s.json").write_text("\n" + json.dumps(rows, indent=1))
    r = invoke("run", str(tmp_path / "s.json"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.json", "no line is a JSON object", "line 2: '['")


def test_metadata_without_entries(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"key": "a", "text": "a dog"}\n')
    (tmp_path / "md.json").write_text("[]")
    r = invoke(
        "run", str(tmp_path / "s.jsonl"), "-m", str(tmp_path / "md.json"), "-o", str(tmp_path / "o")
    )
    one_line_error(r, "md.json", "no entries")
