"""``metaclip-train``: train a CLIP model, train a tokenizer, export a checkpoint."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from metaclip._cli import friendly
from metaclip.exceptions import MetaclipError


def _setup_logging(verbose: bool) -> None:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if rank != "0" and not verbose:  # keep other ranks quiet unless asked
        logging.getLogger().setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Train CLIP models on curated MetaCLIP data (launch with torchrun for several GPUs)."""
    _setup_logging(verbose)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=1e-3 (repeatable).",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@friendly(errors=(MetaclipError,))
def train(config: str, overrides: tuple[str, ...], print_config: bool) -> None:
    """Train from a TOML/JSON CONFIG file plus overrides."""
    from metaclip.train.config import config_to_dict, load_config

    cfg = load_config(config, list(overrides))
    if print_config:
        click.echo(json.dumps(config_to_dict(cfg), indent=2))
        return
    from metaclip.train.train import run

    summary = run(cfg)
    if os.environ.get("RANK", "0") == "0":
        click.echo(json.dumps(summary))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "prefix",
    required=True,
    help="Model prefix: writes PREFIX.model and PREFIX.vocab.",
)
@click.option("--vocab-size", default=32000, show_default=True)
@click.option(
    "--model-type", type=click.Choice(["unigram", "bpe"]), default="unigram", show_default=True
)
@click.option("--character-coverage", default=0.9995, show_default=True)
@friendly(errors=(MetaclipError,))
def tokenizer(
    files: tuple[str, ...], prefix: str, vocab_size: int, model_type: str, character_coverage: float
) -> None:
    """Train a SentencePiece tokenizer on text FILES (one text per line)."""
    from metaclip.train.tokenizer import SentencePieceTokenizer, train_sentencepiece

    path = train_sentencepiece(files, prefix, vocab_size, model_type, character_coverage)
    tok = SentencePieceTokenizer(path, 77)
    click.echo(f"wrote {path} (vocab {tok.vocab_size}, eos id {tok.eos_id}, pad id {tok.pad_id})")


@cli.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@friendly(errors=(MetaclipError,))
def export(checkpoint: str, output: str) -> None:
    """Convert a DCP CHECKPOINT directory to an open_clip state dict OUTPUT (.pt)."""
    from metaclip.train.checkpoint import dcp_to_open_clip

    click.echo(f"wrote {dcp_to_open_clip(checkpoint, output)}")


def main() -> None:
    """Console-script entry point (Ctrl-C exits with 130)."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
