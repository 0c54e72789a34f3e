"""Shared fixtures: a generated shapes dataset, a tokenizer trained on its captions, helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

sys.path.insert(0, str(Path(__file__).parent))

import synth

import metaclip
from metaclip.train.tokenizer import train_sentencepiece

PYTHON_DIR = str(Path(metaclip.__file__).resolve().parent.parent)
# Subprocess timeouts guard against a hang (a lost gloo peer waits forever); they are not
# time limits, so a busy machine never gets near them.
HANG_GUARD_S = 1800


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run only when selected (``-m slow``) or with METACLIP_SLOW=1."""
    if "slow" in (config.getoption("-m") or "") or os.environ.get("METACLIP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or METACLIP_SLOW=1")
    here = Path(__file__).parent
    for item in items:  # only ours: this hook sees the whole session's items
        if "slow" in item.keywords and here in Path(item.path).parents:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def torchrun(
    args: list[str], nproc: int = 2, timeout: float = HANG_GUARD_S
) -> subprocess.CompletedProcess:
    """Launch ``torchrun``; a hang fails the test instead of blocking CI."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        *args,
    ]
    proc = subprocess.run(
        cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> dict[str, str]:
    """Train/held-out shards of coloured shapes, captions in English and German."""
    out = tmp_path_factory.mktemp("shapes")
    model = train_sentencepiece([synth.make_corpus(out)], out / "sp", vocab_size=100)
    return {
        "train": synth.make_split(out / "data", "train", 60, 4, seed=0, with_entries=True),
        "eval": synth.make_split(out / "data", "eval", 10, 1, seed=1),
        "tokenizer": str(model),
        "classnames": str(synth.write_classnames(out)),
        "root": str(out),
    }


def tiny_config(shapes: dict[str, str], out: Path, **over) -> dict:
    """A nested config dict for the test-tiny model on the shapes data."""
    cfg = {
        "model": {"preset": "test-tiny"},
        "data": {"train_shards": shapes["train"], "batch_size": 16, "num_workers": 1},
        "tokenizer": {"path": shapes["tokenizer"]},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "weight_decay": 0.1},
        "steps": 6,
        "precision": "fp32",
        "device": "cpu",
        "output_dir": str(out),
        "log_every": 1,
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg
