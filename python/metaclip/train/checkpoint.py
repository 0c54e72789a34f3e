"""Sharded checkpoints (torch.distributed.checkpoint) and open_clip state-dict exchange.

A checkpoint directory ``<output_dir>/checkpoints/step_<n>`` holds:

* the DCP files ``__<r>_<i>.distcp``: tensors only — the model and the optimizer moments
  (sharded as trained) and each rank's torch (and CUDA) RNG state — and DCP's ``.metadata``;
* ``tensors.json``: the index of those tensors (dtype, size, chunks, which file and where);
* ``trainer.json``: the step, the world size, the scheduler state and the optimizer's
  parameter groups;
* ``rank_<r>.json``, one per rank: its data-loader position and Python/NumPy RNG states;
* ``manifest.json``, written last (atomically): the size and sha256 of every file above.

``<output_dir>/checkpoints/latest`` (written atomically) names the newest complete one.

Loading runs no code from the checkpoint and unpickles nothing but tensors: every file is
first checked against the manifest (a flipped bit or a truncated file is a
:class:`CheckpointError`, not a NaN later); the JSON files are plain data; DCP's pickled
``.metadata`` is never read (DCP is given the index built from ``tensors.json``); a record
is read with ``torch.load(weights_only=True)``, which builds tensors and refuses any other
object. Checkpoints without a manifest (an interrupted save, or the pickled format of
earlier versions) are refused.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import (
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from metaclip.pipeline.io import atomic_write
from metaclip.train.checkpoint_format import (
    DCP_METADATA,
    FORMAT,
    MANIFEST,
    TENSORS,
    TRAINER,
    VERSION,
    CheckpointError,
    barrier,
    dcp_load,
    digests,
    ints,
    metadata_from_json,
    metadata_to_json,
    one_line,
    read_json,
    read_manifest,
    verify,
    write_json,
)
from metaclip.train.distributed import this_rank, world_size

log = logging.getLogger(__name__)

_SCALARS = ("logit_scale", "logit_bias")


# --- RNG state: torch's as tensors, Python's and NumPy's as JSON ----------------------------


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (uint8 tensors), CUDA's stacked per device."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def rng_json() -> dict:
    """Python's and NumPy's global RNG states as JSON data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state(legacy=True))
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_json(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- save and load ---------------------------------------------------------------------------


def save(
    directory: str | Path, *, model, optimizer, scheduler, step: int, data_state: dict
) -> Path:
    """Save a sharded checkpoint (collective: every rank calls it)."""
    root = Path(directory) / "checkpoints"
    path = root / f"step_{step:08d}"
    rank, world = this_rank(), world_size()
    if rank == 0:  # saved again: incomplete (refused) until the new manifest is written
        for name in (MANIFEST, DCP_METADATA):
            (path / name).unlink(missing_ok=True)
    barrier()
    path.mkdir(parents=True, exist_ok=True)
    optim = get_optimizer_state_dict(model, optimizer)
    trainer = {
        "step": step,
        "world": world,
        "scheduler": scheduler.state_dict(),
        "param_groups": optim["param_groups"],
    }
    try:  # the same on every rank, so every rank fails alike
        trainer_text = json.dumps(trainer)
    except TypeError as e:  # e.g. a tensor learning rate: not JSON, and not supported here
        raise CheckpointError(f"cannot save the optimizer/scheduler state: {e}") from None
    rng = rng_tensors()
    state = {
        "model": get_model_state_dict(model),
        "optim": {"state": optim["state"]},
        "rng": {f"rank{rank}": rng},
    }
    private = {"data": data_state, "rng": {**rng_json(), "cuda": "cuda" in rng}}
    write_json(path / f"rank_{rank}.json", private)
    if rank == 0:
        atomic_write(path / TRAINER, lambda tmp: tmp.write_text(trainer_text))
    metadata = dcp.save(state, checkpoint_id=str(path))  # returns the global metadata
    index = metadata_to_json(metadata)
    if rank == 0:
        write_json(path / TENSORS, index)
    barrier()  # every file exists before the ranks share the hashing
    files = sorted(
        {DCP_METADATA, TRAINER, TENSORS}
        | {f"rank_{r}.json" for r in range(world)}
        | {r["file"] for r in index["records"]}
    )
    sums = digests(path, files)
    if rank == 0:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "world": world,
            "files": {n: {"bytes": s, "sha256": h} for n, (s, h) in zip(files, sums, strict=True)},
        }
        write_json(path / MANIFEST, manifest)
        atomic_write(root / "latest", lambda tmp: tmp.write_text(path.name + "\n"))
    barrier()
    log.info("saved checkpoint %s", path)
    return path


def find_latest(output_dir: str | Path) -> Path | None:
    """The checkpoint ``<output_dir>/checkpoints/latest`` names, or None without a marker.
    The name must resolve (symlinks included) to a folder inside the checkpoints folder."""
    root = Path(output_dir) / "checkpoints"
    marker = root / "latest"
    if not marker.exists() and not marker.is_symlink():
        return None
    if not marker.is_file():
        raise CheckpointError(f"{marker} is not a file naming a checkpoint")
    try:
        name = marker.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {marker}: {one_line(e)}") from None
    base = root.resolve()
    target = (root / name).resolve()
    if not name or base not in target.parents:
        raise CheckpointError(
            f"{marker} points outside {base} ({name!r}); refusing to resume from there"
        )
    if not target.is_dir():
        raise CheckpointError(f"{marker} names {name!r}, which is not a checkpoint in {root}")
    return target


def _position(p: Any) -> bool:
    """A stream position as ``data.ShardStream`` reports it."""
    return (
        isinstance(p, dict)
        and set(p) == {"epoch", "next", "draw", "slots"}
        and all(type(p[k]) is int for k in ("epoch", "next", "draw"))
        and isinstance(p["slots"], list)
        and all(ints(x, 2) for x in p["slots"])
    )


def _check_private(private: Any, file: Path) -> None:
    """Refuse a rank file that does not hold what :func:`save` writes there."""
    try:
        data, rng = private["data"], private["rng"]
        streams = data["streams"]
        version, internal, gauss = rng["python"]
        name, keys, pos, has_gauss, cached = rng["numpy"]
        ok = (
            isinstance(streams, dict)
            and all(k.isdigit() and _position(v) for k, v in streams.items())
            and all(type(data[k]) is int for k in ("next_stream", "world", "num_streams"))
            and all(isinstance(k, str) and type(v) is int for k, v in data["skipped"].items())
            and isinstance(rng["cuda"], bool)
            and type(version) is int
            and ints(internal)
            and (gauss is None or isinstance(gauss, float))
            and name == "MT19937"
            and ints(keys, 624)
            and type(pos) is int
            and type(has_gauss) is int
            and isinstance(cached, float)
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise CheckpointError(f"{file} does not hold a rank's data position and RNG state")


def _param_groups(current: list[dict], saved: Any, file: Path) -> list[dict]:
    """The saved optimizer parameter groups, typed like the live ones (JSON has no tuples)."""
    if not isinstance(saved, list) or len(saved) != len(current):
        raise CheckpointError(f"{file}: the optimizer parameter groups do not fit this model")
    out = []
    for cur, sav in zip(current, saved, strict=True):
        if not isinstance(sav, dict) or sav.get("params") != cur["params"]:
            raise CheckpointError(f"{file}: the optimizer parameter groups do not fit this model")
        group = dict(cur)
        for k, v in sav.items():
            group[k] = tuple(v) if isinstance(cur.get(k), tuple) and isinstance(v, list) else v
        out.append(group)
    return out


def load(path: str | Path, *, model, optimizer, scheduler) -> tuple[int, dict]:
    """Load a checkpoint in place; returns ``(step, data_state)`` and restores RNG state."""
    path = Path(path)
    rank, world = this_rank(), world_size()
    manifest = read_manifest(path)
    if manifest["world"] != world:
        raise CheckpointError(
            f"{path} was saved by {manifest['world']} ranks; resume it with the same number "
            f"of ranks (now {world})"
        )
    verify(path, manifest)
    trainer = read_json(path / TRAINER, "trainer state")
    if not isinstance(trainer, dict) or not all(
        k in trainer for k in ("step", "scheduler", "param_groups")
    ):
        raise CheckpointError(f"{path / TRAINER} does not hold the trainer state")
    private_file = path / f"rank_{rank}.json"
    private = read_json(private_file, "rank state")
    _check_private(private, private_file)
    metadata = metadata_from_json(
        read_json(path / TENSORS, "tensor index"), path / TENSORS, manifest
    )

    optim = get_optimizer_state_dict(model, optimizer)
    rng = {"torch": torch.get_rng_state()}
    cuda = private["rng"]["cuda"] and torch.cuda.is_available()
    if cuda:
        rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    state: dict[str, Any] = {
        "model": get_model_state_dict(model),
        "optim": {"state": optim["state"]},
        "rng": {f"rank{rank}": rng},
    }
    dcp_load(path, state, metadata)
    groups = _param_groups(
        cast(list, optim["param_groups"]), trainer["param_groups"], path / TRAINER
    )
    try:
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(
            model, optimizer, {"state": state["optim"]["state"], "param_groups": groups}
        )
        scheduler.load_state_dict(trainer["scheduler"])
        torch.set_rng_state(rng["torch"])
        if cuda:
            torch.cuda.set_rng_state_all(list(rng["cuda"]))
        set_rng_json(private["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot restore {path}: {one_line(e)}") from None
    log.info("resumed from %s at step %d", path, manifest["step"])
    return manifest["step"], private["data"]


# --- open_clip exchange ----------------------------------------------------------------------


# training-only parts (SigLIP 2's decoder, EMA teacher, mask token): not in the export
TRAIN_ONLY = ("decoder.", "teacher.", "mask_token")


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> open_clip ``CLIP`` keys (0-D logit scale/bias)."""
    return {
        k: (v.reshape(()) if k in _SCALARS else v)
        for k, v in state.items()
        if not k.startswith(TRAIN_ONLY)
    }


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
    if this_rank() == 0:
        out = to_open_clip({k: v.float() for k, v in state.items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
        log.info("exported open_clip state dict to %s", path)
    barrier()
    return out


def load_open_clip_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an open_clip state dict into an (unsharded) model; every key must match."""
    missing, unexpected = model.load_state_dict(from_open_clip(state), strict=False)
    if missing or unexpected:
        raise KeyError(
            f"open_clip state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def load_init_from(model: torch.nn.Module, path: str | Path) -> None:
    """Start from released weights (``init_from``): an open_clip state dict, or a training
    checkpoint holding one under ``state_dict`` (``module.`` prefixes dropped), loaded into
    the unsharded model. The vision position embedding is resized to the model's grid when
    the image size differs; every other tensor must fit as it is."""
    from metaclip.train.config import ConfigError
    from metaclip.train.model import resize_pos_embed

    if not Path(path).is_file():
        raise ConfigError(f"init_from {str(path)!r} does not exist")
    try:  # tensors and plain data only: a checkpoint's pickled objects are refused
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad or unsafe file
        raise ConfigError(f"cannot read init_from {path}: {one_line(e)}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"init_from {path} holds no state dict of tensors")
    state = from_open_clip(state)
    key, own = "visual.positional_embedding", model.get_parameter("visual.positional_embedding")
    if key in state and state[key].shape[0] != own.shape[0]:
        log.info("init_from: %s resized %s -> %s", key, tuple(state[key].shape), tuple(own.shape))
        state[key] = resize_pos_embed(state[key], own.shape[0])
    try:
        load_open_clip_into(model, state)
    except (KeyError, RuntimeError) as e:  # missing/unexpected keys, or a shape that differs
        raise ConfigError(f"init_from {path} does not fit the model: {one_line(e)}") from None
    log.info("initialized from %s", path)


def dcp_to_open_clip(checkpoint: str | Path, out: str | Path) -> Path:
    """Convert a DCP checkpoint to a consolidated open_clip ``.pt`` offline (one process)."""
    path = Path(checkpoint)
    manifest = read_manifest(path)
    verify(path, manifest)
    metadata = metadata_from_json(
        read_json(path / TENSORS, "tensor index"), path / TENSORS, manifest
    )
    tensors = cast(dict[str, TensorStorageMetadata], metadata.state_dict_metadata)
    model = {
        k.removeprefix("model."): torch.empty(md.size, dtype=md.properties.dtype)
        for k, md in tensors.items()
        if k.startswith("model.")
    }
    if not model:
        raise CheckpointError(f"{path} holds no model tensors")
    state = {"model": model}
    dcp_load(path, state, metadata)
    full = to_open_clip({k: v.float() for k, v in state["model"].items()})

    def write(tmp: Path) -> None:
        torch.save(full, tmp)

    atomic_write(Path(out), write)
    return Path(out)
