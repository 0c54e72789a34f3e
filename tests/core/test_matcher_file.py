"""A matcher saved to a file and mapped back (``Matcher.save`` / ``load`` / ``cached``)
matches exactly like the one built in memory; a stale file is refused and rebuilt."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
from core.test_matching import entry_st, piece, text_st
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip.core import Matcher, matcher_digest
from metaclip.exceptions import MetadataError


@pytest.mark.parametrize("mode", ["mc1", "mc2", "fixed"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry_st, min_size=1, max_size=40, unique=True), data=st.data())
def test_loaded_matches_like_built(tmp_path_factory, mode, entries, data):
    built = Matcher(entries, mode)
    path = tmp_path_factory.mktemp("m") / "m.mcm"
    built.save(path)
    loaded = Matcher.load(path, built.digest)
    assert loaded.mapped and not built.mapped
    assert (loaded.mode, len(loaded)) == (mode, len(entries))
    assert loaded.n_word_entries == built.n_word_entries
    assert loaded.digest == built.digest == matcher_digest(entries, mode)
    seps = st.sampled_from(["", " ", ",", "\t", "。"])
    from_entries = st.lists(st.one_of(st.sampled_from(entries), piece), max_size=10).flatmap(
        lambda parts: seps.map(lambda s: s.join(parts))
    )
    texts = data.draw(st.lists(st.one_of(text_st, from_entries), min_size=1, max_size=30))
    want = built.match(texts, threads=1)
    got = loaded.match(texts, threads=2)
    assert got.lists() == want.lists()
    assert [loaded.match_text(t) for t in texts] == want.lists()


def test_stale_file_is_refused(tmp_path):
    path = tmp_path / "m.mcm"
    Matcher(["dog", "hot dog"], "mc1").save(path)
    with pytest.raises(MetadataError, match="other metadata or mode"):
        Matcher.load(path, matcher_digest(["dog", "hot dog", "cat"], "mc1"))
    with pytest.raises(MetadataError, match="other metadata or mode"):
        Matcher.load(path, matcher_digest(["dog", "hot dog"], "mc2"))
    raw = bytearray(path.read_bytes())
    raw[8] += 1  # format version
    path.write_bytes(bytes(raw))
    with pytest.raises(MetadataError, match="format"):
        Matcher.load(path)
    with pytest.raises(ValueError, match="hex digest"):
        Matcher.load(path, "zz")
    with pytest.raises(FileNotFoundError):
        Matcher.load(tmp_path / "missing.mcm")


def test_cached_builds_once_then_maps(tmp_path):
    m = Matcher.cached(tmp_path, ["dog", "cat"], "mc1", name="en")
    assert m.mapped and m.match_text("a dog") == [0]
    (path,) = tmp_path.glob("en.mc1.*.mcm")
    stamp = path.stat().st_mtime_ns
    again = Matcher.cached(tmp_path, ["dog", "cat"], "mc1", name="en")
    assert again.mapped and path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    # Other entries: another file; a stale file under the same name is rebuilt.
    other = Matcher.cached(tmp_path, ["cat", "dog"], "mc1", name="en")
    assert other.match_text("a dog") == [1] and len(list(tmp_path.glob("en.mc1.*.mcm"))) == 2
    Matcher(["x"], "mc1").save(path)
    rebuilt = Matcher.cached(tmp_path, ["dog", "cat"], "mc1", name="en")
    assert rebuilt.match_text("a dog") == [0] and rebuilt.digest == m.digest


def _cached_in_child(directory: str, queue) -> None:
    m = Matcher.cached(directory, [f"w{i}" for i in range(2000)], "mc1", name="en")
    queue.put((os.getpid(), m.match_text("x w7 w1999")))


def test_cached_across_processes(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_cached_in_child, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [ids for _, ids in got] == [[7, 1999]] * 3
    assert len(list(tmp_path.glob("*.mcm"))) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
