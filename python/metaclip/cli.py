"""``metaclip-curate``: the MetaCLIP curation pipeline, one subcommand per stage."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import click

from metaclip import __version__
from metaclip._cli import friendly
from metaclip.exceptions import MetaclipError
from metaclip.pipeline.memory import keep_freed_pages

# Before anything loads pyarrow: Arrow's jemalloc (the pool _engine selects) then reuses
# freed blocks of every size instead of faulting in fresh pages per shard.
keep_freed_pages()

POOL_HELP = """
\b
POOL is a parquet file, a directory or a glob of shards (.parquet, .jsonl, .tar in the
WebDataset layout with {key}.json members). Columns are named with --key-column,
--text-column (a string, or a list of strings = several texts per image),
--lang-column and --image-column.
"""


def _options(f):
    """The options of the stage commands: POOL, -o, -m, then one per ``Config`` setting
    (its default, help and choices are the field's), then the engine's."""
    from metaclip.pipeline.config import Config

    opts = [
        click.argument("pool", nargs=-1, required=True),
        click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
                     help="Output folder (work files, subset/, datacard.json, report/)."),
        click.option("-m", "--metadata", required=True, type=click.Path(exists=True),
                     help="Metadata: JSON list, text file (one entry per line), parquet/"
                          "JSON-lines (lang, entry) or a folder of {lang}.json files."),
    ]  # fmt: skip
    for fld in dataclasses.fields(Config):
        if fld.default is dataclasses.MISSING:
            continue  # pool, out, metadata: above
        meta = fld.metadata
        flags = meta.get("flags", ("--" + fld.name.replace("_", "-"),))
        kw = {"default": fld.default, "help": meta["help"]}
        kw["show_default"] = meta.get("show_default", fld.default is not None)
        if "choices" in meta:
            kw["type"] = click.Choice(meta["choices"])
        elif isinstance(fld.default, bool):
            if "/" not in flags[-1]:  # --lid/--no-lid is a flag by its form
                kw["is_flag"] = True
        else:
            kw["type"] = meta.get("type", type(fld.default))
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        opts.append(click.option(*flags, fld.name, **kw))
    f = click.option(
        "--ray-address",
        default=None,
        help="With --engine ray: an existing cluster (default: start a local Ray).",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(["embedded", "ray"]),
        default="embedded",
        show_default=True,
        help="embedded (this machine) or ray (Ray Data).",
    )(f)
    for opt in reversed(opts):
        f = opt(f)
    return f


def _metadata_early(kw: dict, build: bool) -> Future:
    """Load the metadata (and, with ``build`` and one language, build its matcher) on a
    thread while this process imports the pipeline's modules, which leave a core idle."""
    loaded: Future = Future()

    def work() -> None:
        try:
            from metaclip.pipeline.metadata import Metadata, load

            md = Metadata(load(kw["metadata"], kw["metadata_lang"]), kw["mode"])
            md.digest()
        except BaseException as e:  # raised where the engine is made
            loaded.set_exception(e)
            return
        loaded.set_result(md)
        if build and md.single:
            md.prebuild()  # the match stage's workers wait for it, as they would anyway

    threading.Thread(target=work, daemon=True).start()
    return loaded


def _engine(kw: dict):
    early = _metadata_early(kw, build=kw.get("engine", "embedded") == "embedded")
    from metaclip.pipeline.config import Config
    from metaclip.pipeline.engine import Engine
    from metaclip.pipeline.memory import use_reusing_pool
    from metaclip.pipeline.startup import pyarrow_without_pandas

    use_reusing_pool()  # this process is ours: an allocator that reuses freed pages

    kw = dict(kw)
    engine, address = kw.pop("engine", "embedded"), kw.pop("ray_address", None)
    kw["pool"] = tuple(kw["pool"])
    kw["out"] = str(kw["out"])
    if Path(kw["out"]).exists() and not Path(kw["out"]).is_dir():
        raise MetaclipError(f"--out {kw['out']}: exists and is not a folder")
    if (kw.get("pool_memory_mb") or 0) < 0:
        raise MetaclipError("--pool-memory must be 0 or more (MB)")
    if kw.get("workers", 1) < 0:
        raise MetaclipError("--workers must be 0 (automatic) or more")
    cfg = Config(**kw)
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MetaclipError("--engine ray needs Ray: pip install 'metaclip[ray]'") from None
        from metaclip.pipeline.ray_engine import RayEngine

        return RayEngine(cfg, address=address, md=early.result())
    pyarrow_without_pandas()  # Ray Data uses pandas; the embedded engine never does
    return Engine(cfg, md=early.result())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metaclip-curate")
def main() -> None:
    """MetaCLIP / MetaCLIP 2 data curation: match texts to metadata entries, count, balance
    with threshold t, and sample a balanced subset — deterministically and resumably.

    Start with `metaclip-curate demo`.
    """


@main.command(epilog=POOL_HELP)
@_options
@friendly
def match(**kw) -> None:
    """Stage 1: match every text to metadata entries (per-shard outputs, resumable).

    Example: metaclip-curate match pool/ -m metadata.json -o out/
    """
    with _engine(kw) as e:
        e.match()
    click.echo(f"matched {len(e.shards)} shard(s) into {e.match_dir}")


@main.command(epilog=POOL_HELP)
@_options
@friendly
def count(**kw) -> None:
    """Stage 2: sum per-shard entry counts into global counts per language.

    Example: metaclip-curate count pool/ -m metadata.json -o out/
    """
    with _engine(kw) as e:
        e.match()
        counts = e.count()
    for lang, c in counts.items():
        click.echo(f"{lang}: {int(c.sum()):,} matches over {int((c > 0).sum()):,} entries")


@main.command(epilog=POOL_HELP)
@_options
@friendly
def balance(**kw) -> None:
    """Stage 3: thresholds t (per language for MC2) and keep probabilities.

    Example: metaclip-curate balance pool/ -m md/ --mode mc2 --t-en 170000 -o out/
    """
    with _engine(kw) as e:
        e.match()
        _, per_lang = e.balance(e.count())
    for lang, x in per_lang.items():
        click.echo(f"{lang}: t = {x['t']:g}, tail mass {x['tail_mass']:.4f}")


@main.command(epilog=POOL_HELP)
@_options
@friendly
def sample(**kw) -> None:
    """Stage 4: keep each unit with P = 1 − Π(1 − p) (deterministic coins); write subset/
    and datacard.json.

    Example: metaclip-curate sample pool/ -m metadata.json --t 20000 --seed 0 -o out/
    """
    with _engine(kw) as e:
        e.match()
        counts = e.count()
        probs, per_lang = e.balance(counts)
        e.sample(probs)
        # No report: an earlier run's goes, since it describes another subset.
        e.publish(e.datacard(counts, per_lang), e.write(), report=None)
    files = sorted((e.out / "subset").glob("*.parquet"))
    click.echo(f"wrote {len(files)} subset file(s) to {e.out / 'subset'}")
    click.echo(f"datacard: {e.out / 'datacard.json'}")


@main.command(epilog=POOL_HELP)
@_options
@friendly
def run(**kw) -> None:
    """All stages, then datacard.json and report/report.md.

    Example: metaclip-curate run pool/ -m metadata.json --t 20000 -o out/
    """
    with _engine(kw) as e:
        card = e.run()
    _summary(card, e.out)


@main.command()
@click.argument("out", type=click.Path(exists=True, path_type=Path))
@friendly
def stats(out: Path) -> None:
    """Print the summary of a finished run (reads OUT/datacard.json).

    Example: metaclip-curate stats out/
    """
    path = out / "datacard.json"
    if not path.exists():
        raise MetaclipError(f"{path}: not found — run `metaclip-curate run` (or sample) first")
    _summary(json.loads(path.read_text()), out)


@main.command()
@click.argument("out", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--dest",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the training shards.",
)
@click.option(
    "--online/--subset",
    default=False,
    show_default=True,
    help="Every matched sample plus probs.npy (the trainer redraws the subset "
    "each epoch), or the curated subset.",
)
@click.option(
    "--per-shard", type=int, default=10_000, show_default=True, help="Samples per training tar."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the shuffle across the pool."
)
@click.option("--workers", type=int, default=0, help="Tars written at once (0: one per core).")
@click.option(
    "--overwrite", is_flag=True, help="Replace training shards of other settings in --dest."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@friendly
def shards(
    out: Path,
    dest: Path,
    online: bool,
    per_shard: int,
    seed: int,
    workers: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Training shards (WebDataset tars) from the finished run in OUT.

    The pool's tars hold the images (KEY.jpg beside KEY.json): writes tars of the curated
    subset, or with --online of every matched sample and probs.npy for the trainer's
    data.probabilities. A pool of URLs: img2dataset reads the subset; --online writes the
    matched rows as parquet for it instead.

    Example: metaclip-curate shards out/ -o shards/ --online
    """
    from metaclip.pipeline.train_shards import write_shards

    summary = write_shards(out, dest, online, per_shard, seed, workers, quiet, overwrite)
    if "tars" in summary:
        click.echo(
            f"training shards: {len(summary['tars'])} tars, {summary['samples']:,} samples "
            f"({summary['skipped']:,} skipped: missing or undecodable images) in {dest}"
        )
    else:
        click.echo(f"matched rows for img2dataset: {summary['matched_rows']:,} in {dest}")
    if online:
        click.echo(f"online curation: data.probabilities = {dest / 'probs.npy'}")


def _summary(card: dict, out: Path) -> None:
    pool = card["pool"]
    reasons = f" {pool['skipped_by_reason']}" if pool["skipped_by_reason"] else ""
    click.echo(
        f"pool: {pool['texts']:,} texts = {pool['matched']:,} matched + "
        f"{pool['unmatched']:,} unmatched + {pool['skipped']:,} skipped{reasons}"
    )
    if pool.get("duplicate_keys"):
        click.echo(
            f"warning: {pool['duplicate_keys']:,} rows repeat a sample key (e.g. "
            f"{pool['duplicate_key_example']}); rows sharing a key share their coins "
            "(--strict-keys makes this an error)",
            err=True,
        )
    if pool.get("empty_keys"):
        click.echo(f"warning: {pool['empty_keys']:,} rows have an empty sample key", err=True)
    click.echo(f"subset: {card['subset']['size']:,} texts (seed {card['seed']})")
    for lang, x in card["languages"].items():
        kept = card["subset"]["per_language"].get(lang, 0)
        click.echo(
            f"  {lang:>6}: t={x['t']:<8g} matches={x['matches']:<9,} "
            f"tail={x['tail_mass']:.3f} kept={kept:,}"
        )
    click.echo(f"datacard: {out / 'datacard.json'}")
    report = out / "report" / "report.md"
    if report.exists():  # `sample` writes the datacard but no report
        click.echo(f"report:   {report}")


@main.command()
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("metaclip-demo"),
    show_default=True,
    help="Where to write the demo pool, metadata and results.",
)
@click.option("--texts-per-lang", type=int, default=1000, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@friendly
def demo(out: Path, texts_per_lang: int, quiet: bool) -> None:  # fmt: skip
    """Run the whole pipeline on bundled demo data (5 languages, no downloads).

    Builds the demo metadata with the metadata builder, writes a small multilingual pool
    of parquet shards, curates it in MC2 mode and prints the summary.
    """
    from metaclip.pipeline.demo import run_demo
    from metaclip.pipeline.memory import use_reusing_pool
    from metaclip.pipeline.startup import pyarrow_without_pandas

    use_reusing_pool()
    pyarrow_without_pandas()
    card = run_demo(out, texts_per_lang=texts_per_lang, quiet=quiet)
    _summary(card, out / "curated")


@main.command("lid-mapping")
def lid_mapping() -> None:
    """Print the built-in LID code → metadata language table (code<TAB>language), a
    start for a table of your own (--lid-mapping FILE).

    Example: metaclip-curate lid-mapping > mapping.tsv
    """
    from metaclip.lid import default_mapping_tsv

    click.echo(default_mapping_tsv(), nl=False)


try:  # the metadata builder's commands
    from metaclip.metadata.cli import metadata as _metadata_group

    main.add_command(_metadata_group)
except ImportError:  # pragma: no cover
    pass


def console() -> None:
    """The ``metaclip-curate`` command: ``main``, then an exit without the interpreter's
    teardown. A run leaves a large heap (Arrow's kept pages, the metadata's strings) whose
    freeing is a visible part of a one-shot run (docs/performance.md, "Start-up and exit");
    every output is already in place (written to a temp file and renamed). A process that
    started Ray exits normally, so Ray shuts down. Ctrl-C exits with 130, as shells
    expect of a program stopped by SIGINT (click would exit with 1)."""
    interrupted = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        main()
        code: str | int | None = 0
    except SystemExit as e:
        code = 130 if interrupted else e.code
    if "ray" in sys.modules:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or stream: nothing to save
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    console()
