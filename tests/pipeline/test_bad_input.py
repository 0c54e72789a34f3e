"""Bad input gets one clear error line naming the file, or a counted skip — never a
traceback and never a silently lost row."""

from __future__ import annotations

import io
import json
import os
import tarfile
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


# Issue #19: reader defects found by a hostile test, one test per item, each on a real file
# through the CLI.


def subset_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "subset").sort_by("text").to_pylist()


def test_jsonl_one_non_string_key_keeps_keys_as_written(tmp_path, md):
    """Item 1: one line's key is a number among string keys. Every key and pass-through
    value must stay as written (no JSON quotes added), so the coins, which hash the key,
    are those of the same pool written with the number as a string."""
    lines = [
        {"key": "a", "text": "a dog", "url": "u1"},
        {"key": 5, "text": "a cat", "url": 7},
        {"key": "c", "text": "hot dog", "url": "u3", "n": [1]},
        {"key": "d", "text": "dog", "url": None, "n": "x"},
    ]
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    as_strings = [{**r, "key": str(r["key"])} for r in lines]
    (tmp_path / "strings").mkdir()
    (tmp_path / "strings" / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in as_strings))
    for name in ("mixed", "strings"):
        run_ok(tmp_path / name, md, tmp_path / f"o-{name}", "--t", "1")
    mixed, strings = subset_rows(tmp_path / "o-mixed"), subset_rows(tmp_path / "o-strings")
    assert [r["key"] for r in mixed] == [r["key"] for r in strings]
    assert [r["keep_prob"] for r in mixed] == [r["keep_prob"] for r in strings]
    full = run_ok(tmp_path / "mixed", md, tmp_path / "o-all", "--t", "1000")
    assert full["subset"]["size"] == 4
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "o-all" / "subset").to_pylist()}
    assert set(rows) == {"a", "5", "c", "d"}
    assert [rows[k]["url"] for k in ("a", "5", "c", "d")] == ["u1", "7", "u3", None]
    assert [rows[k]["n"] for k in ("a", "5", "c", "d")] == [None, None, "[1]", "x"]


def tar_with(members: list[tuple[str, bytes]], claimed: dict[str, int] | None = None) -> bytes:
    """A GNU tar of ``members``; ``claimed``: sizes headers claim instead of the real ones."""
    out = io.BytesIO()
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = (claimed or {}).get(name, len(data))
        out.write(info.tobuf(tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
    return out.getvalue() + b"\0" * 1024


TAR_MEMBERS = [
    ("a.json", b'{"text": "a dog"}'),
    ("a.jpg", b"\xff\xd8" * 600),
    ("b.json", b'{"text": "a cat"}'),
]


def tar_cut(where: str, row_by_row: bool) -> bytes:
    """A tar of TAR_MEMBERS cut short at ``where``; ``row_by_row``: led by a member that is
    not a JSON object, so that the tar is read member by member in Python, not in Rust."""
    members = [("0.json", b"[1, 2]")] * row_by_row + TAR_MEMBERS
    if where == "size_claims_more":
        return tar_with(members, {"b.json": 4000})
    whole = tar_with(members)
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        at = {m.name: m for m in tar.getmembers()}
    b, image = at["b.json"], at["a.jpg"]
    cut = {
        "at_member_boundary": len(whole) - 1024,  # no end-of-archive blocks
        "at_header_boundary": b.offset,  # b.json gone without a trace
        "inside_header": b.offset + 100,
        "inside_json_data": b.offset_data + 5,
        "inside_image_data": image.offset_data + 100,
    }[where]
    return whole[:cut]


@pytest.mark.parametrize("row_by_row", [False, True], ids=["rust", "python"])
@pytest.mark.parametrize(
    "where",
    [
        "at_member_boundary",
        "at_header_boundary",
        "inside_header",
        "inside_json_data",
        "inside_image_data",
        "size_claims_more",
    ],
)
def test_truncated_tar_is_an_error(tmp_path, md, where, row_by_row):
    """Item 2: a tar cut short anywhere (at a member boundary too: a tar ends with zero
    blocks) is one error naming the file, from the Rust reader and from Python's."""
    (tmp_path / "s.tar").write_bytes(tar_cut(where, row_by_row))
    r = invoke("run", str(tmp_path / "s.tar"), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.tar", "truncated")


@pytest.mark.parametrize("row_by_row", [False, True], ids=["rust", "python"])
def test_tar_ends_with_zero_blocks(tmp_path, md, row_by_row):
    """Item 2, what is not truncation: the two zero blocks, or one (GNU tar reads that,
    with a warning), and the padding Python's tarfile adds."""
    members = [("0.json", b"[1, 2]")] * row_by_row + TAR_MEMBERS
    whole = tar_with(members)
    for n, data in enumerate([whole, whole[:-512], whole + b"\0" * 8192]):
        (tmp_path / "s.tar").write_bytes(data)
        card = run_ok(tmp_path / "s.tar", md, tmp_path / f"o{n}")
        assert card["pool"]["texts"] == 2 + row_by_row


LONE_SURROGATES = [
    (b'{"key": "a", "text": "a dog"}', None),
    (b'{"key": "b", "text": "a \\ud800 cat"}', "invalid_utf8"),  # escaped, in the text
    (b'{"key": "c", "text": "hot dog", "url": "\\udc00"}', "invalid_utf8"),  # in another
    (b'{"key": "d", "text": "dog", "m": {"\\udbff": 1}}', "invalid_utf8"),  # a field name
    (b'{"key": "e", "text": "cat \xed\xa0\x80"}', "invalid_utf8"),  # encoded, not escaped
    (b'{"key": "f", "text": "dog \xff"}', "invalid_utf8"),  # not UTF-8 at all
    (b'{"key": "g", "text": "\\ud83d\\ude00 dog"}', None),  # a pair: one character
]


@pytest.mark.parametrize("kind", ["jsonl", "tar"])
def test_lone_surrogate_is_an_invalid_utf8_skip(tmp_path, md, kind):
    """Item 3: a lone surrogate (escaped, or encoded) is not text: like bytes that are not
    UTF-8, its row is a counted ``invalid_utf8`` skip, in both read paths."""
    lines = [line for line, _ in LONE_SURROGATES]
    if kind == "jsonl":
        (tmp_path / "s.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    else:
        members = [(f"{i}.json", line) for i, line in enumerate(lines)]
        (tmp_path / "s.tar").write_bytes(tar_with(members))
    card = run_ok(tmp_path / f"s.{kind}", md, tmp_path / "o", "--t", "1000")
    assert card["pool"]["texts"] == len(lines)
    assert card["pool"]["skipped_by_reason"] == {"invalid_utf8": 5}
    texts = pq.read_table(tmp_path / "o" / "subset").column("text").to_pylist()
    assert sorted(texts) == ["a dog", "\U0001f600 dog"]


def write_bomb(path: Path, size: int, gzipped: bool) -> None:
    """A tar whose member ``big.json`` holds ``size`` bytes of JSON (a multiple of 1 MiB),
    between two small members: gzip'd (a small file: gzip members, the same 1 MiB one
    repeated), or plain with the member's data a hole in a sparse file."""
    import gzip

    def member(name: str, data: bytes, size: int | None = None) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = len(data) if size is None else size
        return info.tobuf(tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)

    head = member("a.json", b'{"text": "a dog"}') + member("big.json", b"", size)[:512]
    body = b'{"text": "' + b"a" * ((1 << 20) - 12) + b'"}'  # the last MiB of the member
    tail = member("c.json", b'{"text": "a cat"}') + b"\0" * 1024
    if gzipped:
        filler = gzip.compress(b"a" * (1 << 20))
        path.write_bytes(
            gzip.compress(head + body[:10])
            + filler * (size // (1 << 20) - 1)
            + gzip.compress(body[10:] + tail)
        )
    else:
        with path.open("wb") as out:
            out.write(head)
            out.seek(size - len(body), io.SEEK_CUR)
            out.write(body + tail)


# The run's peak RSS: VmHWM, this process's own (ru_maxrss would count the pytest process
# it was forked from, which it is until exec).
PEAK_RSS = """
import re, sys
from pathlib import Path
from click.testing import CliRunner
from metaclip.cli import main
r = CliRunner().invoke(main, ["run", *sys.argv[1:], "--t", "1000", "-q"])
assert r.exit_code == 0, r.output
print(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "sparse"])
def test_decompression_bomb_member_is_a_too_long_skip(tmp_path, md, gzipped):
    """Item 4: a member far longer than --max-text-bytes allows is a counted ``too_long``
    skip, and it is never read into memory (the run's peak RSS stays far below it)."""
    import subprocess
    import sys

    size = 512 << 20
    write_bomb(tmp_path / "s.tar", size, gzipped)
    out = tmp_path / "o"
    args = [str(tmp_path / "s.tar"), "-m", str(md), "-o", str(out)]
    got = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, timeout=300
    )
    assert got.returncode == 0, got.stderr
    peak = int(got.stdout.split()[-1]) << 10
    card = json.loads((out / "datacard.json").read_text())
    assert card["pool"]["texts"] == 3
    assert card["pool"]["skipped_by_reason"] == {"too_long": 1}
    assert card["subset"]["size"] == 2
    assert peak < size // 2, f"peak RSS {peak >> 20} MiB"


def test_jsonl_line_too_long_to_read_is_a_too_long_skip(tmp_path, md):
    """Item 4, JSON lines: a line longer than any row --max-text-bytes allows is a counted
    ``too_long`` skip, whatever its text (here a short one beside a huge field)."""
    big = {"key": "b", "text": "a cat", "blob": "x" * (33 << 20)}  # the limit: 32 MiB
    lines = [{"key": "a", "text": "a dog"}, big, {"key": "c", "text": "hot dog"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    card = run_ok(tmp_path / "s.jsonl", md, tmp_path / "o", "--t", "1000")
    assert card["pool"]["skipped_by_reason"] == {"too_long": 1}
    assert card["subset"]["size"] == 2


def run_cli_process(*args: str, timeout: float = 60):
    """The installed CLI in a process of its own, killed if it hangs."""
    import subprocess
    import sys

    code = "from metaclip.cli import console; console()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def test_fifo_named_as_a_shard_is_an_error(tmp_path, md):
    """Item 5: only regular files are shards: a FIFO named as one is an error at once (it
    would block the read forever); one inside a folder, or matched by a glob, is passed
    over like any file that is not a shard."""
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jsonl").write_text('{"key": "a", "text": "a dog"}\n')
    os.mkfifo(pool / "b.jsonl")
    got = run_cli_process("run", str(pool / "b.jsonl"), "-m", str(md), "-o", str(tmp_path / "o"))
    assert got.returncode == 2, got.stderr
    errors = [x for x in got.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "b.jsonl" in errors[0] and "not a regular file" in errors[0]
    assert "Traceback" not in got.stderr
    for n, spec in enumerate([pool, pool / "*.jsonl"]):
        out = tmp_path / f"o{n}"
        got = run_cli_process("run", str(spec), "-m", str(md), "-o", str(out), "--t", "1", "-q")
        assert got.returncode == 0, got.stderr
        card = json.loads((out / "datacard.json").read_text())
        assert card["pool"]["texts"] == 1


def test_corrupt_parquet_page_is_an_error(tmp_path, md):
    """Item 6: a data page whose bytes changed after it was written (with a page
    checksum) is one error naming the file, not wrong texts."""
    texts = [f"a dog number {i}" for i in range(100)]
    table = pa.table({"key": [f"k{i}" for i in range(100)], "text": texts})
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, write_page_checksum=True, compression="none", use_dictionary=False)
    data = bytearray(path.read_bytes())
    at = data.find(b"dog number 50")  # inside the text column's data page
    assert at > 0 and data.count(b"dog number 50") == 1
    data[at] ^= 0x20  # "Dog number 50"
    path.write_bytes(bytes(data))
    r = invoke("run", str(path), "-m", str(md), "-o", str(tmp_path / "o"))
    one_line_error(r, "s.parquet", "cannot read parquet", "checksum")
