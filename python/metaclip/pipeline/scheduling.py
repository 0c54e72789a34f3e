"""How the embedded engine shares work between its threads: ``PoolTables`` hands shards
the match stage read to the write stage (so a pool that fits in memory is read once), and
``WriteTasks`` is the write stage's one task list (load a shard or write a ready file)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pyarrow as pa

from metaclip.pipeline.pool import Footer, Shard


class PoolTables:
    """Decoded pool shards that the match stage hands to the write stage of the same run,
    so that fewer shards are read twice.

    - Kept shards: the match stage reads these parquet shards in full and keeps them. They
      are the first shards in pool order whose decoded sizes (from their footers) fit
      ``budget`` bytes together; a pool that fits is read once in all. A shard that turns
      out bigger decoded (a dictionary-encoded column is read dense) is kept only if the
      budget still holds it. JSON-lines and tar shards are read in full to match anyway:
      each is kept if the budget left holds it.
    - Tail reads: a match worker that finds no shard left while others still match reads
      the shards the write stage needs last (its last file is written by one thread, so
      those reads are on the critical path); at most ``limit`` (a worker's share of
      memory each).

    The write stage takes each table once, waiting for a read in flight."""

    def __init__(
        self,
        read: Callable[[Shard], pa.Table],
        shards: list[Shard],
        limit: int,
        budget: int = 0,
        keep_from: list[Shard] | None = None,
        footers: dict[str, Footer | None] | None = None,
    ):
        self.read = read
        self.planned: dict[str, int] = {}  # parquet shards to read in full and keep
        self.kept: list[str] = []  # shards kept (as offered)
        self.left = budget
        for s in keep_from or []:
            if s.kind != "parquet":
                continue
            footer = (footers or {}).get(s.name)
            if footer is None or footer.decoded_bytes > self.left:
                break  # the first shards in pool order, as the write stage needs them
            self.planned[s.name] = footer.decoded_bytes
            self.left -= footer.decoded_bytes
        tail = [s for s in reversed(shards) if s.kind == "parquet" and not self.keeps(s.name)]
        self.queue = tail[:limit]
        self.items: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()  # set when the match stage ends

    def keeps(self, name: str) -> bool:
        """Whether the match stage should read this shard in full and ``offer`` it."""
        return name in self.planned

    def offer(self, name: str, table: pa.Table) -> None:
        """A shard's table as the write stage needs it (see ``read_for_write``), kept if
        the budget (with what was planned for it) holds it."""
        fut: Future = Future()
        fut.set_result(table)
        with self.lock:
            room = self.left + self.planned.pop(name, 0)
            if table.nbytes > room:
                self.left = room
                return
            self.left = room - table.nbytes
            self.items[name] = fut
            self.kept.append(name)

    def start(self) -> None:
        """Start the tail reads (on a worker's thread)."""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            with self.lock:
                if not self.queue:
                    return
                shard = self.queue.pop(0)
                fut = self.items[shard.name] = Future()
            try:
                fut.set_result(self.read(shard))
            except BaseException:  # the write stage reads the shard again and reports it
                fut.set_result(None)

    def take(self, name: str) -> pa.Table | None:
        """The shard's table if it was kept or read ahead (waits for a read in flight),
        else None."""
        with self.lock:
            fut = self.items.pop(name, None)
        return None if fut is None else fut.result()


class WriteTasks:
    """The write stage's work for a pool of threads: load a shard's subset rows (shards in
    the order the parts need them) or write a part whose shards are all loaded.

    A thread writes a ready part before it loads another shard, and loads the next shard
    rather than wait for a part that another thread's load will make ready: no thread
    waits while work is left, and a shard is dropped once its last part is written."""

    def __init__(
        self, load: Callable[[str], pa.Table], write: Callable[[dict, Callable], int], parts
    ) -> None:
        self.load, self.write = load, write
        self.waiting = list(parts)  # parts not yet taken, in order
        self.uses: dict[str, int] = {}
        for p in parts:
            for n in p["names"]:
                self.uses[n] = self.uses.get(n, 0) + 1
        self.order = list(self.uses)  # loads in order of first use
        self.rank = {n: i for i, n in enumerate(self.order)}
        self.started = 0  # loads taken
        self.loaded: dict[str, pa.Table] = {}
        self.failed = False
        self.cond = threading.Condition()

    def _next(self) -> tuple[str, Any] | None:
        with self.cond:
            while not self.failed:
                for i, p in enumerate(self.waiting):
                    names = p["names"]
                    if names and self.rank[names[-1]] >= self.started:
                        break  # parts' shards run in order: no later part is ready either
                    if all(n in self.loaded for n in names):
                        return "write", self.waiting.pop(i)
                if self.started < len(self.order):
                    self.started += 1
                    return "load", self.order[self.started - 1]
                if not self.waiting:
                    return None
                self.cond.wait()
            return None

    def _finish(self, kind: str, item, result) -> None:
        with self.cond:
            if kind == "load":
                self.loaded[item] = result
            else:
                for n in item["names"]:
                    self.uses[n] -= 1
                    if self.uses[n] == 0:
                        self.loaded.pop(n)
            self.cond.notify_all()

    def stop(self) -> None:
        """No thread takes another task (one failed, or the run was interrupted)."""
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def run(self, on_written: Callable[[int], None]) -> int:
        """One thread's share: take tasks until none is left (or ``stop``); returns the
        rows this thread wrote."""
        rows = 0
        while (task := self._next()) is not None:
            kind, item = task
            try:
                if kind == "load":
                    result = self.load(item)
                else:
                    result = self.write(item, self.loaded.__getitem__)
            except BaseException:
                self.stop()
                raise
            self._finish(kind, item, result)
            if kind == "write":
                rows += result
                on_written(result)
        return rows
