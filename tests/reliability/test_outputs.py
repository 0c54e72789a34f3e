"""Regression tests for the output defects a hostile test found (issue #19): real files,
real processes, real signals. Each test is named after what it guards."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pools import count_matches, make_metadata, make_texts, run_cli, subset_bytes, write_pool

from metaclip.cli import main
from metaclip.exceptions import InputError
from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine

HANG_GUARD_S = 600  # not a time limit: only a hang gets near it


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    md = base / "metadata.json"
    make_metadata(md)
    return {"md": md, "texts": make_texts(4000), "base": base}


def args_for(src: Path, md: Path, *extra: str) -> list[str]:
    return [str(src), "-m", str(md), "--t", "50", "-q", "--rows-per-file", "700", *extra]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "metaclip.cli", *args]


def test_removing_the_first_shard_matches_no_other_shard(pool, tmp_path, monkeypatch):
    """Work files are keyed by shard identity, not by position in the pool."""
    src = write_pool(tmp_path / "pool", pool["texts"], 4)
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    matched = count_matches(monkeypatch)
    first = sorted(src.glob("*.parquet"))[0]
    first.unlink()
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    assert matched == []
    run_cli("run", *args_for(src, pool["md"]), "-o", str(tmp_path / "fresh"))
    assert subset_bytes(out) == subset_bytes(tmp_path / "fresh")


def test_an_in_place_rewrite_keeping_size_inode_and_mtime_is_matched_again(pool, tmp_path):
    """`cp -p` / `rsync --inplace -t` keep size, inode and mtime: the change time differs."""
    src = tmp_path / "pool"
    src.mkdir()
    shard = src / "a.jsonl"
    rows = [{"key": f"k{i}", "text": t} for i, t in enumerate(pool["texts"][:500])]
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    before = os.stat(shard)
    swapped = shard.read_bytes().replace(b"w1 ", b"w2 ")  # same length, other matches
    assert swapped != shard.read_bytes()
    with open(shard, "r+b") as f:  # in place: same inode
        f.write(swapped)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(shard)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    fresh = tmp_path / "fresh"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(fresh))
    assert subset_bytes(out) == subset_bytes(fresh)


def test_a_shard_replaced_between_match_and_write_is_an_error(pool, tmp_path):
    """The write stage reads shards again: one rewritten since it was matched would get
    the entry ids of its old texts."""
    src = write_pool(tmp_path / "pool", pool["texts"], 2)
    cfg = Config(
        pool=(str(src),), out=str(tmp_path / "out"), metadata=str(pool["md"]), t=50,
        quiet=True, pool_memory_mb=0,
    )  # fmt: skip
    e = Engine(cfg)
    e.match()
    probs, _ = e.balance(e.count())
    e.sample(probs)
    victim = sorted(src.glob("*.parquet"))[1]
    table = pq.read_table(victim)
    texts = table.column("text").to_pylist()
    pq.write_table(table.set_column(1, "text", pa.array(texts[::-1])), victim)
    with pytest.raises(InputError, match=victim.name):
        e.write()
    assert not (tmp_path / "out" / "subset").exists()


# Each step of publishing (moving the old outputs aside, the new ones in) is a place where a
# kill can land; the child kills itself with SIGKILL at the K-th such step.
KILL_AT_STEP = textwrap.dedent(
    """
    import os, shutil, signal, sys
    out, k = sys.argv[1], int(sys.argv[2])
    calls = [0]

    def counted(fn):
        def wrapper(*a, **kw):
            if any(str(x).startswith(out) and "_work" not in str(x) for x in a[:2]):
                calls[0] += 1
                if calls[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return wrapper

    os.replace, os.rename = counted(os.replace), counted(os.rename)
    os.unlink, os.remove = counted(os.unlink), counted(os.remove)
    shutil.rmtree = counted(shutil.rmtree)
    from metaclip.cli import main
    main(sys.argv[3:])
    """
)


def published_state(out: Path) -> dict | None:
    """The datacard if one is in place, checked against subset/ and report/ beside it."""
    card_path = out / "datacard.json"
    if not card_path.exists():
        return None
    card = json.loads(card_path.read_text())
    files = sorted((out / "subset").glob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert rows == card["subset"]["size"], "a datacard beside another run's subset"
    report = out / "report" / "report.md"
    if report.exists():
        assert f"{card['subset']['size']:,}" in report.read_text()
    return card


def test_a_kill_at_any_step_of_publishing_leaves_a_datacard_only_beside_its_subset(pool, tmp_path):
    src = write_pool(tmp_path / "pool", pool["texts"], 3)
    fresh = {}
    for t in ("50", "20"):
        fresh[t] = tmp_path / f"fresh{t}"
        run_cli("run", *args_for(src, pool["md"], "--t", t), "-o", str(fresh[t]))
    cards = {t: json.loads((d / "datacard.json").read_text()) for t, d in fresh.items()}
    for k in range(1, 40):
        out = tmp_path / f"out{k}"
        run_cli("run", *args_for(src, pool["md"]), "-o", str(out))  # t = 50, published
        argv = ["run", *args_for(src, pool["md"], "--t", "20"), "-o", str(out)]
        child = subprocess.run(
            [sys.executable, "-c", KILL_AT_STEP, str(out), str(k), *argv],
            capture_output=True, timeout=HANG_GUARD_S,
        )  # fmt: skip
        card = published_state(out)
        assert card is None or card in (cards["50"], cards["20"])
        run_cli("run", *argv)
        assert published_state(out) == cards["20"]
        assert subset_bytes(out) == subset_bytes(fresh["20"])
        if child.returncode == 0:  # k is past the last step: every step was tried
            assert k > 2
            break
    else:
        pytest.fail("publishing took more than 40 steps")


def test_two_runs_into_one_out_folder_the_second_fails_fast_naming_the_first(pool, tmp_path):
    src = write_pool(tmp_path / "pool", make_texts(200_000, seed=5), 40)
    out = tmp_path / "out"
    first = subprocess.Popen(
        cli("run", *args_for(src, pool["md"]), "-o", str(out)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not list(out.glob("_work/match-*/*.json")):
        time.sleep(0.01)
    second = subprocess.run(
        cli("run", *args_for(src, pool["md"]), "-o", str(out)),
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert first.wait(timeout=HANG_GUARD_S) == 0, first.stderr.read()
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    run_cli("run", *args_for(src, pool["md"]), "-o", str(tmp_path / "fresh"))
    assert subset_bytes(out) == subset_bytes(tmp_path / "fresh")


def test_files_the_user_put_in_the_output_folder_are_never_deleted(pool, tmp_path):
    src = write_pool(tmp_path / "pool", pool["texts"], 2)
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    mine = [out / "subset" / "notes.txt", out / "report" / "mine.png", out / ".keep.tmp"]
    for p in mine:
        p.write_text("the user's")
    r = invoke("run", *args_for(src, pool["md"], "--t", "20"), "-o", str(out))
    assert r.exit_code == 2 and "notes.txt" in r.output, r.output
    assert all(p.read_text() == "the user's" for p in mine)
    assert published_state(out)["t"] == 50  # the earlier run's outputs stay in place


def test_a_non_empty_folder_metaclip_did_not_make_is_refused_without_overwrite(pool, tmp_path):
    src = write_pool(tmp_path / "pool", pool["texts"], 2)
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    r = invoke("run", *args_for(src, pool["md"]), "-o", str(out))
    assert r.exit_code == 2 and "--overwrite" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out), "--overwrite")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert published_state(out) is not None


def test_outputs_get_the_mode_of_the_umask(pool, tmp_path):
    src = write_pool(tmp_path / "pool", pool["texts"], 1)
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    for p in [out / "datacard.json", *out.glob("subset/*.parquet"), *out.glob("report/*")]:
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_subset_files_carry_page_checksums(pool, tmp_path):
    """A flipped byte in a data page is detected when the file is read with verification."""
    src = write_pool(tmp_path / "pool", pool["texts"], 1)
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    part = sorted((out / "subset").glob("*.parquet"))[0]
    meta = pq.ParquetFile(part).metadata
    col = meta.row_group(0).column(1)  # the text column
    data = bytearray(part.read_bytes())
    at = col.data_page_offset + col.total_compressed_size // 2
    data[at] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"(?i)checksum|crc"):
        pq.read_table(part, page_checksum_verification=True)


def test_ctrl_c_exits_130_without_a_traceback(pool, tmp_path):
    src = write_pool(tmp_path / "pool", make_texts(200_000, seed=6), 40)
    out = tmp_path / "out"
    p = subprocess.Popen(
        cli("run", *args_for(src, pool["md"]), "-o", str(out)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not list(out.glob("_work/match-*/*.json")):
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=HANG_GUARD_S)
    assert p.returncode == 130, err
    assert "Traceback" not in err


FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    from metaclip.cli import main
    main(sys.argv[2:])
    """
)


def test_a_full_disk_is_one_line_naming_the_file(pool, tmp_path):
    """A write that fails for lack of room (here: past the file-size limit, the same
    error path as a full disk) names the file it was writing."""
    src = write_pool(tmp_path / "pool", make_texts(100_000, seed=7), 2)
    out = tmp_path / "out"
    child = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, "300000", "run", *args_for(src, pool["md"]),
         "-o", str(out), "--rows-per-file", "100000"],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert child.returncode == 2, child.stderr
    assert "Traceback" not in child.stderr
    assert str(out) in child.stderr and "File too large" in child.stderr, child.stderr


def test_shards_whose_names_hold_dots_keep_their_own_work_files(pool, tmp_path):
    """`a.v1.parquet` and `a.v2.parquet`: work files are named by appending a suffix, so
    neither overwrites the other's."""
    src = tmp_path / "pool"
    write_pool(tmp_path / "flat", pool["texts"], 2)
    src.mkdir()
    for i, f in enumerate(sorted((tmp_path / "flat").glob("*.parquet"))):
        (src / f"a.v{i}.parquet").write_bytes(f.read_bytes())
    out = tmp_path / "out"
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    assert len(list(out.glob("_work/match-*/a.v*.arrow"))) == 2
    card = json.loads((out / "datacard.json").read_text())
    assert card["pool"]["texts"] == len(pool["texts"])
    run_cli("run", *args_for(tmp_path / "flat", pool["md"]), "-o", str(tmp_path / "ref"))
    assert subset_bytes(out) == subset_bytes(tmp_path / "ref")


def test_a_folder_holding_only_another_runs_lock_and_manifest_draft_is_not_foreign(pool, tmp_path):
    """What a second run sees when it starts while the first writes its manifest (found by
    bench/chaos.py): it must meet the lock, not call the folder foreign."""
    src = write_pool(tmp_path / "pool", pool["texts"], 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".metaclip.lock").write_text("12345\n")
    (out / "..metaclip.json.abcd1234.tmp").write_text("{")
    run_cli("run", *args_for(src, pool["md"]), "-o", str(out))
    assert not (out / "..metaclip.json.abcd1234.tmp").exists()  # our temp file: cleaned
