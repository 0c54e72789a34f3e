"""JSON-lines shards: pyarrow's reader (the fast path) must build the very table the
row-by-row path builds, and leave to that path every file where the two would differ."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from metaclip.pipeline import pool
from metaclip.pipeline.pool import Columns, Shard

COLS = Columns()


def shard_of(tmp_path: Path, lines: list[str], name: str = "s.jsonl") -> Shard:
    path = tmp_path / name
    path.write_text("".join(lines), encoding="utf-8")
    return Shard(path=path, kind="jsonl", index=0)


def both(shard: Shard, cols: Columns = COLS) -> tuple[pa.Table | None, pa.Table]:
    return pool._read_jsonl_arrow(shard, cols, True), pool._read_jsonl_rows(shard, cols)


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        r: dict = {"key": f"k{i}", "text": f"a dog {i} é 狗" if i % 5 else None}
        if i % 3:
            r["score"] = i / 4 if i % 2 else i  # ints and floats: one float column
        if i % 4 == 0:
            r["meta"] = {"w": i, **({"src": "x"} if i % 8 else {"flag": True})}
        if i % 7 == 0:
            r["tags"] = ["a", "b"][: i % 3]
        if i > n - 5:
            r["late"] = "2021-05-03"  # looks like a date: it must stay a string
        out.append(r)
    return out


def test_fast_path_builds_the_row_by_row_table(tmp_path):
    lines = [json.dumps(r, ensure_ascii=i % 2 == 0) + "\n" for i, r in enumerate(rows(3000))]
    lines[10] = lines[10].replace("\n", "\r\n")
    lines.insert(20, "\n")  # blank lines are not rows
    fast, slow = both(shard_of(tmp_path, lines))
    assert fast is not None
    assert fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.schema.field("late").type == pa.string()
    assert fast.schema.field("text").type == pa.large_string()


def test_fast_path_reads_lists_of_texts(tmp_path):
    texts = [["a dog", "a cat"], [], ["x"], None]
    lines = [json.dumps({"key": f"k{i}", "text": t}) + "\n" for i, t in enumerate(texts)]
    fast, slow = both(shard_of(tmp_path, lines))
    assert fast is not None and fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()


@pytest.mark.parametrize(
    "bad",
    [
        '{"key": "z", "text": "a" \n',  # not JSON: a counted malformed row
        '["key", "text"]\n',  # not an object
        '{"key": "z", "text": 7}\n',  # not a string: a counted non_string_text
        '{"key": "z", "text": "x", "score": "high"}\n',  # score changes type
        '{"key": "z", "text": "x", "n": 99999999999999999999}\n',  # beyond int64
        '{"key": "z", "text": "x", "meta": {"when": "2021-05-03 10:00:00"}}\n',
    ],
)
def test_files_only_the_row_path_reads_right_go_to_it(tmp_path, bad):
    lines = [json.dumps(r) + "\n" for r in rows(50)]
    shard = shard_of(tmp_path, [*lines[:25], bad, *lines[25:]])
    fast, slow = both(shard)
    assert fast is None
    assert pool._read_jsonl(shard, COLS).equals(slow)
    assert slow.num_rows == 51


def test_huge_integer_keeps_its_digits(tmp_path):
    shard = shard_of(tmp_path, ['{"key": "a", "text": "x", "n": 18446744073709551615}\n'])
    table = pool._read_jsonl(shard, COLS)
    assert table.column("n").to_pylist() == ["18446744073709551615"]


def test_empty_file(tmp_path):
    shard = shard_of(tmp_path, [])
    assert pool._read_jsonl(shard, COLS).equals(pool._read_jsonl_rows(shard, COLS))
