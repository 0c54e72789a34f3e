"""Sharded checkpoints (torch.distributed.checkpoint) and open_clip state-dict exchange.

A checkpoint directory ``<output_dir>/checkpoints/step_<n>`` holds the model and optimizer
(sharded as trained), the scheduler, the step, and per rank the data position and RNG state.
``<output_dir>/checkpoints/latest`` names the newest complete one.
"""

from __future__ import annotations

import io
import logging
import pickle
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

log = logging.getLogger(__name__)

_SCALARS = ("logit_scale", "logit_bias")


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _blob(obj) -> io.BytesIO:
    return io.BytesIO(pickle.dumps(obj))


def save(
    directory: str | Path, *, model, optimizer, scheduler, step: int, data_state: dict
) -> Path:
    """Save a sharded checkpoint (collective: every rank calls it)."""
    root = Path(directory) / "checkpoints"
    path = root / f"step_{step:08d}"
    rank = _rank()
    state = {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, optimizer),
        "scheduler": _blob(scheduler.state_dict()),
        "step": torch.tensor(step),
        f"rank{rank}": _blob({"data": data_state, "rng": rng_state()}),
    }
    dcp.save(state, checkpoint_id=str(path))
    _barrier()
    if rank == 0:
        (root / "latest").write_text(path.name + "\n")
    _barrier()
    log.info("saved checkpoint %s", path)
    return path


def find_latest(output_dir: str | Path) -> Path | None:
    marker = Path(output_dir) / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    return marker.parent / marker.read_text().strip()


def load(path: str | Path, *, model, optimizer, scheduler) -> tuple[int, dict]:
    """Load a checkpoint in place; returns ``(step, data_state)`` and restores RNG state."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path} is not a DCP checkpoint (no .metadata)")
    rank = _rank()
    state: dict[str, Any] = {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, optimizer),
        "scheduler": io.BytesIO(),
        "step": torch.tensor(0),
        f"rank{rank}": io.BytesIO(),
    }
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # a rank missing from the checkpoint (world size changed)
        raise RuntimeError(
            f"cannot resume from {path}: {e} (was it saved with the same number of ranks?)"
        ) from e
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    state["scheduler"].seek(0)
    scheduler.load_state_dict(pickle.loads(state["scheduler"].read()))
    state[f"rank{rank}"].seek(0)
    private = pickle.loads(state[f"rank{rank}"].read())
    set_rng_state(private["rng"])
    log.info("resumed from %s at step %d", path, int(state["step"]))
    return int(state["step"]), private["data"]


# --- open_clip exchange ----------------------------------------------------------------------


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> open_clip ``CLIP`` keys (0-D logit scale/bias)."""
    return {k: (v.reshape(()) if k in _SCALARS else v) for k, v in state.items()}


def from_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip ``CLIP`` state dict (e.g. ``model.state_dict()``) -> ours."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k == "attn_mask":
            continue
        out[k] = v.reshape(1) if k in _SCALARS else v
    return out


def export_consolidated(model, path: str | Path) -> dict[str, torch.Tensor] | None:
    """Gather the full model on rank 0 and write an open_clip-compatible ``.pt`` (collective)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # a full, CPU-offloaded state dict holds plain tensors
    state = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=opts))
    out = None
    if _rank() == 0:
        out = to_open_clip({k: v.float() for k, v in state.items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
        log.info("exported open_clip state dict to %s", path)
    _barrier()
    return out


def load_open_clip_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an open_clip state dict into an (unsharded) model; every key must match."""
    missing, unexpected = model.load_state_dict(from_open_clip(state), strict=False)
    if missing or unexpected:
        raise KeyError(
            f"open_clip state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def dcp_to_open_clip(checkpoint: str | Path, out: str | Path) -> Path:
    """Convert a DCP checkpoint to a consolidated open_clip ``.pt`` offline (one process)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    tmp = Path(out).with_suffix(".full.tmp")
    dcp_to_torch_save(str(checkpoint), str(tmp))
    full = torch.load(tmp, weights_only=False)
    tmp.unlink()
    model = {k.removeprefix("model."): v for k, v in _flatten(full.get("model", {})).items()}
    torch.save(to_open_clip({k: v.float() for k, v in model.items()}), out)
    return Path(out)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
