"""Metadata loading, fork safety and the typed API surface."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip import core
from metaclip.exceptions import MetadataError


def test_load_metadata_json_and_lines(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(["dog", "hot dog", "Gas", "gas"]))
    assert core.load_metadata(tmp_path / "m.json") == ["dog", "hot dog", "Gas", "gas"]
    (tmp_path / "m.txt").write_text("dog\nhot dog\r\n")
    assert core.load_metadata(tmp_path / "m.txt") == ["dog", "hot dog"]


def test_load_metadata_errors_name_the_problem(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(["a", "b", "a"]))
    with pytest.raises(MetadataError, match=r'"a" \(ids 0 and 2\)'):
        core.load_metadata(tmp_path / "d.json")
    (tmp_path / "bad.json").write_text('["a", 1]')
    with pytest.raises(MetadataError, match=r"bad\.json:1"):
        core.load_metadata(tmp_path / "bad.json")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(MetadataError, match=r"bad\.txt:2"):
        core.load_metadata(tmp_path / "bad.txt")
    with pytest.raises(OSError):
        core.load_metadata(tmp_path / "missing.json")


def test_load_metadata_by_language(tmp_path):
    table = pa.table({"lang": ["en", "zh", "en"], "entry": ["dog", "狗", "cat"]})
    pq.write_table(table, tmp_path / "m.parquet")
    assert core.load_metadata_by_language(tmp_path / "m.parquet") == {
        "en": ["dog", "cat"],
        "zh": ["狗"],
    }
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"lang": "en", "entry": e}) for e in ["a", "a"])
    )
    with pytest.raises(MetadataError, match="language 'en'"):
        core.load_metadata_by_language(tmp_path / "m.jsonl")
    pq.write_table(pa.table({"language": ["en"], "entry": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(MetadataError, match="missing column"):
        core.load_metadata_by_language(tmp_path / "x.parquet")


_MATCHER = None


def _child(q):
    # Uses the parent's matcher and a multi-threaded call after fork().
    r = _MATCHER.match([f"w{i % 7} w{i % 5}" for i in range(20_000)], threads=2)
    q.put(r.lists()[:3])


def test_usable_after_fork():
    global _MATCHER
    _MATCHER = core.Matcher([f"w{i}" for i in range(10)])
    texts = [f"w{i % 7} w{i % 5}" for i in range(20_000)]
    parent = _MATCHER.match(texts, threads=2).lists()[:3]  # the parent's pool now exists
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0, "child hung or crashed after fork"
    assert q.get(timeout=5) == parent


def test_modes_and_sizes():
    m = core.Matcher(["dog", "相机", "hot dog"], mode="mc2")
    assert (m.mode, m.n_entries, m.n_word_entries, m.n_substring_entries) == ("mc2", 3, 2, 1)
    assert len(m) == 3 and m.memory_bytes() > 0
    with pytest.raises(ValueError, match="mode"):
        core.Matcher(["a"], mode="nope")
    with pytest.raises(ValueError, match="positive"):
        core.probabilities(pa.array([1], pa.uint64()).to_numpy(), 0)


def test_ctrl_c_interrupts_a_long_match():
    """A long batch checks for signals between chunks: SIGINT stops it promptly."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\n"
        "from metaclip.core import Matcher\n"
        "m = Matcher([f'w{i}' for i in range(1000)])\n"
        "texts = [f'w{i % 997} w{i % 13} x y z' for i in range(400_000)] * 25\n"
        "print('ready', flush=True)\n"
        "t = time.time()\n"
        "try:\n"
        "    m.match(texts, threads=1)  # one call of 10M texts: ~10 s uninterrupted\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', time.time(), flush=True)\n"
        "    sys.exit(3)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.8)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 3, out
    word, when = out.split()
    # The whole call takes seconds; a 131k-text chunk takes tens of milliseconds.
    assert word == "interrupted" and float(when) - sent < 0.5


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_larger_than_one_detached_call_equals_text_by_text(threads):
    """A batch is matched in chunks of 131,072 texts between signal checks; the chunks'
    results are stitched into one CSR (offsets rebased, nothing skipped)."""
    m = core.Matcher([f"w{i}" for i in range(50)] + ["w1 w2"])
    texts = [f"w{i % 53} w{(i * 7) % 51} w2" if i % 5 else "" for i in range(300_000)]
    for batch in (texts, pa.array(texts, pa.large_string())):
        res = m.match(batch, threads=threads)
        assert len(res.offsets) == len(texts) + 1
        for i in [0, 1, 4, 131_071, 131_072, 131_073, 262_144, 299_999]:
            assert res.row(i).tolist() == m.match_text(texts[i]), i
        lens = [len(m.match_text(t)) for t in texts[::997]]
        assert (res.offsets[1:] - res.offsets[:-1])[::997].tolist() == lens


def test_results_in_caller_buffers_equal_bytearrays():
    """Large results can be written into buffers the caller allocates (the wrapper uses
    Arrow's pool); a buffer that does not fit them exactly is refused."""
    from metaclip import _core

    m = _core.Matcher(["a b", "b", "c"], "mc1")
    texts = ["a b c", "x", "b b", ""]
    plain = m.match_list(texts, 1)
    given = m.match_list(texts, 1, lambda n: bytearray(n))
    arrow = m.match_list(texts, 1, pa.allocate_buffer)
    for got in (given, arrow):
        assert [bytes(b) for b in got] == [bytes(b) for b in plain]
    with pytest.raises(ValueError, match="writable"):
        m.match_list(texts, 1, lambda n: bytes(n))
    for wrong in (-1, 1):  # a short buffer would be overrun, a long one read past the data
        with pytest.raises(ValueError, match="exactly"):
            m.match_list(texts, 1, lambda n, d=wrong: bytearray(max(0, n + d)))
    offsets, ids = core.select_rows([0, 3, 3, 4, 4], [0, 1, 2, 1], [True, False, True, True])
    assert offsets.tolist() == [0, 3, 4, 4] and ids.tolist() == [0, 1, 2, 1]


def test_counts_of_kept_rows_and_string_digest():
    offsets, ids = [0, 2, 2, 3, 5], [0, 2, 1, 0, 1]
    keep = [True, True, False, True]
    assert core.count_entries(ids, 3, offsets, keep).tolist() == [2, 1, 1]
    assert core.count_entries(ids, 3).tolist() == [2, 2, 1]
    with pytest.raises(ValueError, match="out of range"):
        core.count_entries(ids, 2, offsets, keep)
    for n in (3, 1000):  # many ids per entry (a dense count), few (sparse, in Rust)
        for rows in ((), (offsets, keep)):
            dense = core.count_entries(ids, n, *rows)
            e, c = core.count_entries_sparse(ids, n, *rows)
            assert e.tolist() == np.flatnonzero(dense).tolist()
            assert c.tolist() == dense[e].tolist()
    with pytest.raises(ValueError, match="out of range"):
        core.count_entries_sparse(ids, 2, offsets, keep)
    with pytest.raises(ValueError, match="out of range"):
        core.count_entries_sparse([5, 2000], 1000)
    assert core.count_entries_sparse([5, 5], 1000)[1].tolist() == [2]  # scratch reset
    d = core.digest_strings
    assert d(["ab", "c"]) == d(("ab", "c")) != d(["a", "bc"])
    assert d(["é"]) != d(["e"]) and len(d([])) == 32
