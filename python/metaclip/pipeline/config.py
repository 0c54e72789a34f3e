"""What a curation run depends on: ``Config`` (the one list of settings, from which the
CLI's options are made), the pool's column names, and the keys that name its work folders.

Importing this module must stay cheap and must not load pyarrow: the CLI builds its
options from ``Config`` before it sets up Arrow's allocator (``memory.py``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from metaclip._core import MODES
from metaclip.pipeline.io import fingerprint

if TYPE_CHECKING:
    from metaclip.pipeline.metadata import Metadata

# Bumped whenever the files under _work/ change, so older work is never reused.
WORK_LAYOUT = 5
UNITS = ("pair", "image")
COMPRESSIONS = ("snappy", "zstd", "lz4", "gzip", "brotli", "none")
# workers = 0 on the embedded engine: one per core, at most this many (each worker holds a
# shard in memory while it matches or writes).
AUTO_WORKERS = 8


# The settings a run's work files depend on (with the pool and metadata).
RUN_SETTINGS = (
    "metadata_lang", "mode", "key_column", "text_column", "lang_column", "image_column", "t",
    "t_en", "unit", "seed", "epoch", "lid", "lid_threshold", "lid_mapping", "max_text_bytes",
)  # fmt: skip


@dataclass(frozen=True)
class Columns:
    """Names of the pool's columns (``text`` may hold a list of texts per image)."""

    key: str = "key"
    text: str = "text"
    lang: str | None = None
    image: str | None = None


def setting(default: Any, help: str = "", **cli: Any) -> Any:
    """A ``Config`` field with its CLI option: ``help``, and click settings in ``cli``
    (``flags``, ``type``, ``choices``, ``metavar``, ``show_default``)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Config:
    """Everything a curation run depends on (see ``metaclip-curate run --help``)."""

    pool: tuple[str, ...]
    out: str
    metadata: str
    metadata_lang: str = setting("en", "Language of a single-language metadata list.")
    mode: str = setting("mc1", "Pattern rule (spec §2).", choices=MODES)
    key_column: str = setting("key", "Unique sample key; the sampling coins depend on it.")
    text_column: str = setting("text", "A string, or a list of strings (texts per image).")
    lang_column: str | None = setting(None, "Language per text (skips LID).", type=str)
    image_column: str | None = setting(
        None, "Image key shared by several rows (image-level sampling).", type=str
    )
    t: float = setting(
        20_000, "MC1 threshold t: p = min(1, t / count).", flags=("--t",), type=float
    )
    t_en: float | None = setting(
        None, "MC2: English t; other languages get t from its tail mass.", type=float
    )
    unit: str = setting("pair", "pair (MC1) or image (MC2: one text per image).", choices=UNITS)
    seed: int = setting(0, "Seed of the sampling coins.")
    epoch: int = setting(0, "Epoch of the sampling coins (a new draw per epoch).")
    lid: bool = setting(
        False,
        "Identify each text's language (when there is no --lang-column).",
        flags=("--lid/--no-lid",),
        show_default=False,
    )
    lid_threshold: float = setting(0.0, "Predictions less confident than this go to 'other'.")
    lid_mapping: str | None = setting(
        None,
        "LID code → metadata language table (TSV or JSON); default: the built-in table "
        "(`metaclip-curate lid-mapping` prints it).",
        type=str,
    )
    max_text_bytes: int = setting(1 << 20, "Longer texts are skipped and counted as too_long.")
    workers: int = setting(
        0,
        "Shards (and subset files) processed at once; 0: one per core, at most "
        f"{AUTO_WORKERS} (each holds a shard in memory). With --engine ray: the most "
        "actors per stage (0: one per CPU).",
    )
    threads: int = setting(0, "Matching threads per shard (0: cores / workers).")
    matcher_cache: str | None = setting(
        None,
        "Folder of built matchers (one file per language) that every worker process of "
        "a node maps read-only, so a node holds one copy of the tables. Default: "
        "_work/matchers under --out (use a local disk when --out is remote); 'off': "
        "each process builds its own.",
        type=str,
        metavar="DIR",
    )
    # One worker encodes a file, so files far larger leave one worker encoding alone at the
    # end of the write (docs/performance.md, "Subset files").
    rows_per_file: int = setting(
        500_000,
        "Rows per subset file (the files do not depend on the sharding). Each file is "
        "encoded by one worker, so small subsets write faster in more, smaller files.",
    )
    compression: str = setting(
        "snappy", "Parquet compression of the subset files.", choices=COMPRESSIONS
    )
    pool_memory_mb: int | None = setting(
        None,
        "`run`, embedded engine: memory for pool shards that the match stage keeps for "
        "the write stage (decoded size), so they are read once; other shards are read "
        "again to write. Default: a quarter of the available memory; 0: read every "
        "shard twice.",
        flags=("--pool-memory",),
        type=int,
        metavar="MB",
    )
    quiet: bool = setting(False, "No progress bars.", flags=("-q", "--quiet"))
    strict_keys: bool = setting(
        False,
        "Stop when sample keys repeat or are empty (they are counted either way: rows "
        "sharing a key share their coins).",
    )
    overwrite: bool = setting(
        False,
        "Use an --out folder metaclip did not make, or delete files in its subset/ and "
        "report/ that metaclip did not write (other files are never touched).",
    )

    def __post_init__(self) -> None:
        # 20000 and 20000.0 are one setting: the work keys and datacard must not differ
        # between the CLI (floats) and Python callers (ints)
        for k in ("t", "t_en", "lid_threshold"):
            v = getattr(self, k)
            if isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, k, float(v))

    def run_settings(self, pool: list[str]) -> dict:
        """What reopens this run's work files (``Config.reopen``): the datacard's ``run``."""
        out = {k: v for k, v in asdict(self).items() if k in RUN_SETTINGS}
        return {"pool": pool, "metadata": os.path.abspath(self.metadata), **out}

    @classmethod
    def reopen(cls, out: str, run: dict, **settings: Any) -> Config:
        """The config of the run whose datacard holds ``run`` (see ``run_settings``)."""
        known = {k: v for k, v in run.items() if k in RUN_SETTINGS}
        return cls(pool=tuple(run["pool"]), out=out, metadata=run["metadata"], **known, **settings)

    @property
    def columns(self) -> Columns:
        return Columns(self.key_column, self.text_column, self.lang_column, self.image_column)

    def match_key(self, md: Metadata) -> str:
        """Names the match stage's work folder: every setting its output depends on."""
        return fingerprint(
            "match", WORK_LAYOUT, md.digest(), self.mode, asdict(self.columns), self.lid,
            self.lid_threshold, self.lid_mapping, self.max_text_bytes,
        )  # fmt: skip

    def sample_key(self, md: Metadata) -> str:
        """Names the sample stage's work folder (with the pool's key, see ``Engine``)."""
        return fingerprint(
            "sample", self.match_key(md), self.t, self.t_en, self.unit, self.seed, self.epoch
        )
