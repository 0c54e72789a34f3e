"""A progress bar over texts for the stages (tqdm on stderr; silent when quiet)."""

from __future__ import annotations

import sys


class Progress:
    """A tqdm bar over texts (rate and ETA), silent when quiet or tqdm is missing.

    Where the texts are not known up front (JSON-lines and tar shards before they are
    matched), ``left_bytes`` (the bytes of the shards to do) gives an estimate instead:
    the texts per byte of the shards done so far, corrected as each shard finishes."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        quiet: bool,
        left_bytes: int | None = None,
        unit: str = "text",
    ) -> None:
        self.bar = None
        self.left_bytes = left_bytes if total is None else None
        self.done = [0, 0]  # texts and bytes of the shards done here
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                    dynamic_ncols=True, leave=True,
                )  # fmt: skip
            except ImportError:
                pass

    def update(self, n: int, nbytes: int = 0) -> None:
        """``n`` texts more, from a shard of ``nbytes`` bytes (for the estimate)."""
        if self.bar is None:
            return
        self.bar.update(n)
        if self.left_bytes is not None and nbytes > 0:
            self.done[0] += n
            self.done[1] += nbytes
            self.left_bytes = max(0, self.left_bytes - nbytes)
            self.bar.total = self.bar.n + round(self.left_bytes * self.done[0] / self.done[1])
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
