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

import hashlib
import json
import logging
import math
import random
import re
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from metaclip.exceptions import MetaclipError
from metaclip.pipeline.io import atomic_write

log = logging.getLogger(__name__)

_SCALARS = ("logit_scale", "logit_bias")
FORMAT = "metaclip-train-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
TRAINER = "trainer.json"
TENSORS = "tensors.json"
_DCP_METADATA = ".metadata"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # a file right in the checkpoint folder


class CheckpointError(MetaclipError, ValueError):
    """A checkpoint that cannot be used: missing, incomplete, damaged or not ours."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _all_reduce(t: torch.Tensor, op: Any) -> torch.Tensor:
    """All-reduce a small CPU tensor across ranks (on the GPU when the backend is NCCL)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else t.device
    )
    x = t.to(device)
    dist.all_reduce(x, op=op)
    return x.cpu()


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


# --- files and checksums ---------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _sha256(path: Path) -> tuple[int, bytes]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return size, h.digest()


def _digests(path: Path, files: list[str]) -> list[tuple[int, str]]:
    """``(size, sha256)`` of each file; the ranks share the hashing (collective)."""
    rank, world = _rank(), _world()
    table = torch.zeros(len(files), 33, dtype=torch.int64)
    for i in range(rank, len(files), world):
        size, digest = _sha256(path / files[i])
        table[i, 0] = size
        table[i, 1:] = torch.tensor(list(digest))
    table = _all_reduce(table, dist.ReduceOp.SUM)
    return [(int(row[0]), bytes(row[1:].tolist()).hex()) for row in table]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} {path}: {_one_line(e)}") from None


def _read_manifest(path: Path) -> dict:
    """The manifest of checkpoint ``path``, checked for shape (not yet the files it lists)."""
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    if not (path / MANIFEST).is_file():
        raise CheckpointError(
            f"{path} has no {MANIFEST}: it is incomplete (the save was interrupted) or was "
            "written by an older metaclip, whose pickled checkpoints are no longer read"
        )
    doc = _read_json(path / MANIFEST, "checkpoint manifest")
    bad = f"{path / MANIFEST} is not a metaclip checkpoint manifest"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(bad)
    if doc.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {doc.get('version')!r}; "
            f"this metaclip reads version {VERSION}"
        )
    files, world, step = doc.get("files"), doc.get("world"), doc.get("step")
    if not (
        isinstance(files, dict)
        and isinstance(world, int)
        and world > 0
        and isinstance(step, int)
        and step >= 0
    ):
        raise CheckpointError(bad)
    for name, entry in files.items():
        if not _NAME.match(name) or name in (".", "..", MANIFEST):
            raise CheckpointError(f"{path / MANIFEST} lists {name!r}, which is not a file of it")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise CheckpointError(bad)
    needed = {_DCP_METADATA, TRAINER, TENSORS, *(f"rank_{r}.json" for r in range(world))}
    if missing := sorted(needed - files.keys()):
        raise CheckpointError(f"{path / MANIFEST} does not list {missing[0]}")
    return doc


def _verify(path: Path, manifest: dict) -> None:
    """Check every file against the manifest (collective: the ranks share the reading)."""
    names = sorted(manifest["files"])
    rank, world = _rank(), _world()
    first_bad = len(names)
    problem = ""
    for i in range(rank, len(names), world):
        file, entry = path / names[i], manifest["files"][names[i]]
        try:
            if file.is_symlink() or not file.is_file():
                raise FileNotFoundError("missing or not a regular file")
            size, digest = _sha256(file)
        except OSError as e:
            problem = f"cannot read {file}: {_one_line(e)}"
        else:
            if size != entry["bytes"]:
                problem = f"{file} is damaged: {size} bytes, the manifest says {entry['bytes']}"
            elif digest.hex() != entry["sha256"]:
                problem = f"{file} is damaged: its sha256 checksum differs from the manifest"
            else:
                continue
        first_bad = i
        break
    agreed = int(_all_reduce(torch.tensor([first_bad]), dist.ReduceOp.MIN)[0])
    if agreed < len(names):
        if agreed == first_bad:
            raise CheckpointError(problem)
        raise CheckpointError(
            f"{path / names[agreed]} is damaged or unreadable (checksum check on another rank)"
        )


# --- DCP metadata as JSON --------------------------------------------------------------------
#
# DCP's own ``.metadata`` is a pickle (FileSystemWriter pickles a ``Metadata`` object and
# FileSystemReader unpickles it with plain ``pickle.load``). We never read it: ``tensors.json``
# holds the same index — each tensor's dtype, size and chunks, and where each chunk's record
# lies in which ``.distcp`` file — and the ``Metadata`` DCP needs is built from it.


def _metadata_to_json(metadata: Metadata) -> dict:
    tensors: dict[str, dict] = {}
    for key, item in metadata.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):  # save() only passes tensors
            raise CheckpointError(f"cannot save {key!r}: only tensors go into the DCP files")
        tensors[key] = {
            "dtype": str(item.properties.dtype).removeprefix("torch."),
            "size": list(item.size),
            "chunks": [[list(c.offsets), list(c.sizes)] for c in item.chunks],
        }
    records = [
        {
            "key": index.fqn,
            "offsets": list(index.offset or ()),
            "file": info.relative_path,
            "start": info.offset,
            "length": info.length,
        }
        for index, info in cast(dict, metadata.storage_data).items()
    ]
    return {"tensors": tensors, "records": records}


def _ints(xs: Any, n: int | None = None) -> bool:
    return (
        isinstance(xs, list)
        and (n is None or len(xs) == n)
        and all(type(x) is int and x >= 0 for x in xs)
    )


def _metadata_from_json(doc: Any, file: Path, manifest: dict) -> Metadata:
    """DCP ``Metadata`` from ``tensors.json``, every field checked: tensors only, and every
    record inside a file that the manifest lists."""
    bad = CheckpointError(f"{file} is not a checkpoint tensor index")
    if not isinstance(doc, dict):
        raise bad
    tensors, records = doc.get("tensors"), doc.get("records")
    if not isinstance(tensors, dict) or not isinstance(records, list):
        raise bad
    state: dict[str, Any] = {}
    declared = 0  # bytes of tensor data the index claims
    for key, t in tensors.items():
        if not isinstance(t, dict) or not _ints(t.get("size")):
            raise bad
        dtype = vars(torch).get(str(t.get("dtype")))
        chunks = t.get("chunks")
        ndim = len(t["size"])
        if not isinstance(dtype, torch.dtype) or not isinstance(chunks, list):
            raise bad
        if not all(
            isinstance(c, list)
            and len(c) == 2
            and _ints(c[0], ndim)
            and _ints(c[1], ndim)
            and all(o + z <= n for o, z, n in zip(c[0], c[1], t["size"], strict=True))
            for c in chunks
        ):
            raise bad
        declared += math.prod(t["size"]) * dtype.itemsize
        state[key] = TensorStorageMetadata(
            properties=TensorProperties(dtype=dtype),
            size=torch.Size(t["size"]),
            chunks=[ChunkStorageMetadata(torch.Size(o), torch.Size(z)) for o, z in chunks],
        )
    files = manifest["files"]
    if declared > sum(e["bytes"] for n, e in files.items() if n.endswith(".distcp")):
        raise CheckpointError(f"{file} declares more tensor data than the checkpoint holds")
    storage: dict[MetadataIndex, _StorageInfo] = {}
    for r in records:
        if not isinstance(r, dict) or r.get("key") not in state:
            raise bad
        name = r.get("file")
        if not isinstance(name, str) or not name.endswith(".distcp") or name not in files:
            raise CheckpointError(f"{file} refers to {name!r}, which is not a file in {MANIFEST}")
        if not (_ints(r.get("offsets")) and _ints([r.get("start"), r.get("length")])):
            raise bad
        start, length = int(r["start"]), int(r["length"])
        if start + length > files[name]["bytes"]:
            raise CheckpointError(f"{file}: a record of {r['key']!r} lies past the end of {name}")
        index = MetadataIndex(fqn=r["key"], offset=r["offsets"])
        storage[index] = _StorageInfo(relative_path=name, offset=start, length=length)
    return Metadata(state_dict_metadata=state, storage_data=storage, storage_meta=StorageMeta())


class _Reader(FileSystemReader):
    """A FileSystemReader given its metadata (from ``tensors.json``): it never opens the
    pickled ``.metadata``; tensor records are read with ``torch.load(weights_only=True)``."""

    def __init__(self, path: Path, metadata: Metadata) -> None:
        super().__init__(str(path))
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self._metadata


class _TensorsOnlyPlanner(DefaultLoadPlanner):
    """DCP's default planner unpickles non-tensor values with ``weights_only=False``; ours
    holds tensors only, so any such value is refused."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise CheckpointError(f"{read_item.dest_index.fqn} is a pickled object; refusing it")


def _reason(e: BaseException) -> str:
    text = str(e)
    if "Weights only load failed" in text:  # torch's own advice (weights_only=False) is wrong
        m = re.search(r"unsupported GLOBAL (\S+)", text, re.IGNORECASE)
        what = f" ({m.group(1)})" if m else ""
        return f"a tensor record holds a pickled object{what}, not a tensor; refusing it"
    return _one_line(e)


def _dcp_load(path: Path, state: dict, metadata: Metadata) -> None:
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with warnings.catch_warnings():  # one process (export): DCP warns that it assumes so
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(
                state,
                storage_reader=_Reader(path, metadata),
                planner=_TensorsOnlyPlanner(),
                no_dist=not dist.is_initialized(),
            )
    except CheckpointException as e:
        causes = [exc for exc, _ in e.failures.values()] or [e]
        cause = next((c for c in causes if isinstance(c, CheckpointError)), causes[0])
        raise CheckpointError(f"cannot load {path}: {_reason(cause)}") from None
    except CheckpointError:
        raise
    except Exception as e:  # a shape or key that does not fit this model
        raise CheckpointError(f"cannot load {path}: {_reason(e)}") from None


# --- save and load ---------------------------------------------------------------------------


def save(
    directory: str | Path, *, model, optimizer, scheduler, step: int, data_state: dict
) -> Path:
    """Save a sharded checkpoint (collective: every rank calls it)."""
    root = Path(directory) / "checkpoints"
    path = root / f"step_{step:08d}"
    rank, world = _rank(), _world()
    if rank == 0:  # saved again: incomplete (refused) until the new manifest is written
        for name in (MANIFEST, _DCP_METADATA):
            (path / name).unlink(missing_ok=True)
    _barrier()
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
    _write_json(path / f"rank_{rank}.json", private)
    if rank == 0:
        atomic_write(path / TRAINER, lambda tmp: tmp.write_text(trainer_text))
    metadata = dcp.save(state, checkpoint_id=str(path))  # returns the global metadata
    index = _metadata_to_json(metadata)
    if rank == 0:
        _write_json(path / TENSORS, index)
    _barrier()  # every file exists before the ranks share the hashing
    files = sorted(
        {_DCP_METADATA, TRAINER, TENSORS}
        | {f"rank_{r}.json" for r in range(world)}
        | {r["file"] for r in index["records"]}
    )
    sums = _digests(path, files)
    if rank == 0:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "world": world,
            "files": {n: {"bytes": s, "sha256": h} for n, (s, h) in zip(files, sums, strict=True)},
        }
        _write_json(path / MANIFEST, manifest)
        atomic_write(root / "latest", lambda tmp: tmp.write_text(path.name + "\n"))
    _barrier()
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
        raise CheckpointError(f"cannot read {marker}: {_one_line(e)}") from None
    base = root.resolve()
    target = (root / name).resolve()
    if not name or base not in target.parents:
        raise CheckpointError(
            f"{marker} points outside {base} ({name!r}); refusing to resume from there"
        )
    if not target.is_dir():
        raise CheckpointError(f"{marker} names {name!r}, which is not a checkpoint in {root}")
    return target


def _check_private(private: Any, file: Path) -> None:
    """Refuse a rank file that does not hold what :func:`save` writes there."""
    try:
        data, rng = private["data"], private["rng"]
        streams = data["streams"]
        version, internal, gauss = rng["python"]
        name, keys, pos, has_gauss, cached = rng["numpy"]
        ok = (
            isinstance(streams, dict)
            and all(k.isdigit() and _ints(v, 3) for k, v in streams.items())
            and all(type(data[k]) is int for k in ("next_stream", "world", "num_streams"))
            and isinstance(rng["cuda"], bool)
            and type(version) is int
            and _ints(internal)
            and (gauss is None or isinstance(gauss, float))
            and name == "MT19937"
            and _ints(keys, 624)
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
    rank, world = _rank(), _world()
    manifest = _read_manifest(path)
    if manifest["world"] != world:
        raise CheckpointError(
            f"{path} was saved by {manifest['world']} ranks; resume it with the same number "
            f"of ranks (now {world})"
        )
    _verify(path, manifest)
    trainer = _read_json(path / TRAINER, "trainer state")
    if not isinstance(trainer, dict) or not all(
        k in trainer for k in ("step", "scheduler", "param_groups")
    ):
        raise CheckpointError(f"{path / TRAINER} does not hold the trainer state")
    private_file = path / f"rank_{rank}.json"
    private = _read_json(private_file, "rank state")
    _check_private(private, private_file)
    metadata = _metadata_from_json(
        _read_json(path / TENSORS, "tensor index"), path / TENSORS, manifest
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
    _dcp_load(path, state, metadata)
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
        raise CheckpointError(f"cannot restore {path}: {_one_line(e)}") from None
    log.info("resumed from %s at step %d", path, manifest["step"])
    return manifest["step"], private["data"]


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
    path = Path(checkpoint)
    manifest = _read_manifest(path)
    _verify(path, manifest)
    metadata = _metadata_from_json(
        _read_json(path / TENSORS, "tensor index"), path / TENSORS, manifest
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
    _dcp_load(path, state, metadata)
    full = to_open_clip({k: v.float() for k, v in state["model"].items()})

    def write(tmp: Path) -> None:
        torch.save(full, tmp)

    atomic_write(Path(out), write)
    return Path(out)
