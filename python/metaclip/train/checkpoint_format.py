"""The checkpoint files: their names, the manifest of sizes and sha256 digests (written
last, checked first), and DCP's tensor index stored as JSON (``tensors.json``) so that
DCP's pickled ``.metadata`` is never read. ``checkpoint.py`` saves and loads with these."""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, cast

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

from metaclip.exceptions import MetaclipError
from metaclip.pipeline.io import atomic_write
from metaclip.train.distributed import this_rank, world_size

FORMAT = "metaclip-train-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
TRAINER = "trainer.json"
TENSORS = "tensors.json"
DCP_METADATA = ".metadata"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # a file right in the checkpoint folder


class CheckpointError(MetaclipError, ValueError):
    """A checkpoint that cannot be used: missing, incomplete, damaged or not ours."""


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _all_reduce(t: torch.Tensor, op: Any) -> torch.Tensor:
    """All-reduce a small CPU tensor across ranks (on the GPU when the backend is NCCL)."""
    if world_size() == 1:
        return t
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else t.device
    )
    x = t.to(device)
    dist.all_reduce(x, op=op)
    return x.cpu()


# --- files and checksums ---------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _sha256(path: Path) -> tuple[int, bytes]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return size, h.digest()


def digests(path: Path, files: list[str]) -> list[tuple[int, str]]:
    """``(size, sha256)`` of each file; the ranks share the hashing (collective)."""
    rank, world = this_rank(), world_size()
    table = torch.zeros(len(files), 33, dtype=torch.int64)
    for i in range(rank, len(files), world):
        size, digest = _sha256(path / files[i])
        table[i, 0] = size
        table[i, 1:] = torch.tensor(list(digest))
    table = _all_reduce(table, dist.ReduceOp.SUM)
    return [(int(row[0]), bytes(row[1:].tolist()).hex()) for row in table]


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} {path}: {one_line(e)}") from None


def read_manifest(path: Path) -> dict:
    """The manifest of checkpoint ``path``, checked for shape (not yet the files it lists)."""
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    if not (path / MANIFEST).is_file():
        raise CheckpointError(
            f"{path} has no {MANIFEST}: it is incomplete (the save was interrupted) or was "
            "written by an older metaclip, whose pickled checkpoints are no longer read"
        )
    doc = read_json(path / MANIFEST, "checkpoint manifest")
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
    needed = {DCP_METADATA, TRAINER, TENSORS, *(f"rank_{r}.json" for r in range(world))}
    if missing := sorted(needed - files.keys()):
        raise CheckpointError(f"{path / MANIFEST} does not list {missing[0]}")
    return doc


def verify(path: Path, manifest: dict) -> None:
    """Check every file against the manifest (collective: the ranks share the reading)."""
    names = sorted(manifest["files"])
    rank, world = this_rank(), world_size()
    first_bad = len(names)
    problem = ""
    for i in range(rank, len(names), world):
        file, entry = path / names[i], manifest["files"][names[i]]
        try:
            if file.is_symlink() or not file.is_file():
                raise FileNotFoundError("missing or not a regular file")
            size, digest = _sha256(file)
        except OSError as e:
            problem = f"cannot read {file}: {one_line(e)}"
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


def metadata_to_json(metadata: Metadata) -> dict:
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


def ints(xs: Any, n: int | None = None) -> bool:
    return (
        isinstance(xs, list)
        and (n is None or len(xs) == n)
        and all(type(x) is int and x >= 0 for x in xs)
    )


def metadata_from_json(doc: Any, file: Path, manifest: dict) -> Metadata:
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
        if not isinstance(t, dict) or not ints(t.get("size")):
            raise bad
        dtype = vars(torch).get(str(t.get("dtype")))
        chunks = t.get("chunks")
        ndim = len(t["size"])
        if not isinstance(dtype, torch.dtype) or not isinstance(chunks, list):
            raise bad
        if not all(
            isinstance(c, list)
            and len(c) == 2
            and ints(c[0], ndim)
            and ints(c[1], ndim)
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
        if not (ints(r.get("offsets")) and ints([r.get("start"), r.get("length")])):
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
    return one_line(e)


def dcp_load(path: Path, state: dict, metadata: Metadata) -> None:
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
