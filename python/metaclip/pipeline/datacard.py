"""The datacard: what a run did, from its match and sample records alone (so it can be
made, and the report drawn from it, while the subset is still being written)."""

from __future__ import annotations

from pathlib import Path

from metaclip import __version__
from metaclip.pipeline import stages
from metaclip.pipeline.config import Config
from metaclip.pipeline.io import read_json
from metaclip.pipeline.metadata import Metadata


def build(
    cfg: Config,
    md: Metadata,
    names: list[str],
    match_dir: Path,
    sample_dir: Path,
    per_lang: dict[str, dict],
    lid_info: dict,
    pool: list[str] | None = None,
) -> dict:
    """The datacard of the shards ``names``: settings, metadata, pool sizes with skips,
    thresholds per language (``per_lang``) and the subset's size."""
    match = stages.MatchStats()
    for name in names:
        match.add(read_json(match_dir / f"{name}.json"))
    kept, lang_kept = 0, dict[str, int]()
    for name in names:
        info = read_json(sample_dir / f"{name}.json")
        kept += info["kept"]
        for k, v in info["lang_kept"].items():
            lang_kept[k] = lang_kept.get(k, 0) + v
    skipped = sum(match.skipped.values())
    found = match_dir / "keys.json"
    key_stats = read_json(found) if found.exists() else {}
    return {
        "tool": "metaclip",
        "version": __version__,
        "mode": cfg.mode,
        "unit": cfg.unit,
        "seed": cfg.seed,
        "epoch": cfg.epoch,
        "t": cfg.t if cfg.t_en is None else None,
        "t_en": cfg.t_en,
        "t_per_language": {k: v["t"] for k, v in per_lang.items()},
        "metadata": {
            "source": str(cfg.metadata),
            "digest": md.digest(),
            "entries_per_language": {k: len(v) for k, v in md.entries.items()},
            "language_offsets": stages.lang_offsets(md),
        },
        "languages": per_lang,
        "language_identification": lid_info or None,
        "pool": {
            "shards": len(names),
            "texts": match.texts,
            "matched": match.matched,
            "unmatched": match.unmatched,
            "skipped": skipped,
            "skipped_by_reason": match.skipped,
            "skipped_examples": {k: v[:5] for k, v in match.skipped_rows.items()},
            "identity_holds": match.texts == match.matched + match.unmatched + skipped,
            "duplicate_keys": key_stats.get("duplicate_keys", 0),
            "empty_keys": key_stats.get("empty_keys", 0),
            "duplicate_key_example": key_stats.get("example"),
            "texts_per_language": match.lang_texts,
            "matched_per_language": match.lang_matched,
        },
        "subset": {"size": kept, "per_language": dict(sorted(lang_kept.items()))},
        # what `metaclip-curate shards` needs to reopen the run's work files
        "run": cfg.run_settings(pool or []),
    }
