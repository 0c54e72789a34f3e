"""torchrun environment, device mesh and FSDP2 wrapping.

Order (as observed to work on CPU/gloo and CUDA/NCCL): activation checkpointing ->
``torch.compile`` per block -> ``fully_shard`` per block -> ``fully_shard`` at the root.
A plain ``python -m metaclip.train`` run is a world of one, on the same code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from metaclip.train.config import ConfigError

if TYPE_CHECKING:
    from metaclip.train.model import CLIP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = 'cuda' was requested but CUDA is not available")
    return requested


def build_mesh(device_type: str, world: int, mesh_shape: Sequence[int] | None) -> DeviceMesh:
    """1-D ``("dp",)`` FSDP mesh, or with ``mesh_shape = [replicate, shard]`` the 2-D
    ``("replicate", "shard")`` mesh on which ``fully_shard`` does HSDP."""
    if mesh_shape is None:
        return init_device_mesh(device_type, (world,), mesh_dim_names=("dp",))
    replicate, shard = mesh_shape
    if replicate * shard != world:
        raise ConfigError(
            f"distributed.mesh_shape {list(mesh_shape)} needs {replicate} x {shard} = "
            f"{replicate * shard} ranks, but this is a world of {world}"
        )
    return init_device_mesh(device_type, (replicate, shard), mesh_dim_names=("replicate", "shard"))


def init_distributed(
    requested_device: str = "auto", timeout_s: float = 600, mesh_shape: Sequence[int] | None = None
) -> DistInfo:
    """Join the torchrun group (or make a world of one); NCCL on CUDA, gloo on CPU. The
    mesh is 1-D (FSDP), or 2-D for HSDP with ``mesh_shape = [replicate, shard]``."""
    device_type = pick_device(requested_device)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # by torchrun
    rank = int(os.environ["RANK"]) if launched else 0
    world = int(os.environ["WORLD_SIZE"]) if launched else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if launched else 0
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s)
        if launched:
            dist.init_process_group(backend, timeout=timeout)
        else:  # a world of one: an in-memory store, no port, no environment changes
            store = dist.HashStore()
            dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    mesh = build_mesh(device_type, world, mesh_shape)
    log.info("rank %d/%d on %s (%s)", rank, world, device, dist.get_backend())
    return DistInfo(rank, world, local_rank, device, mesh)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelize(
    model: CLIP,
    mesh: DeviceMesh,
    *,
    precision: str = "bf16",
    activation_checkpointing: bool | str = False,
    checkpoint_every: int = 2,
    compile: bool = False,
    reshard_after_forward: bool = True,
) -> torch.nn.Module:
    """Apply AC, compile and FSDP2 in place: units per transformer block, the token
    embeddings (and the decoder's output layer), then the root. A 2-D ``mesh`` (replicate,
    shard) gives HSDP."""
    ac = activation_checkpointing
    if isinstance(ac, bool):
        ac = "full" if ac else "none"
    if ac not in ("none", "full", "selective"):
        raise ValueError(f"activation_checkpointing {activation_checkpointing!r}")
    if ac != "none":  # "selective": every checkpoint_every-th block
        model.set_grad_checkpointing(True, every=checkpoint_every if ac == "selective" else 1)
    if compile:
        for block in model.blocks():
            block.compile()
    param_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    # The root (patch/position embeddings, final norms, projections, logit scale and bias)
    # stays fp32, as parameters do under open_clip's AMP: bf16 would round exp(logit_scale)
    # 14.286 to 14.25, and the features and logits come out in fp32. It is ~0.4% of the
    # FLOPs and a few M parameters.
    root_mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    # A tower's last block is the first its backward needs: resharding it after forward
    # would only all-gather it again at once.
    last = {id(model.visual.transformer.resblocks[-1]), id(model.transformer.resblocks[-1])}
    for block in model.blocks():
        keep = id(block) in last
        fully_shard(
            block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward and not keep
        )
    # own units: the worldwide vocabulary (901,629 x width) makes these the largest tensors
    vocab: list[torch.nn.Module] = [model.token_embedding]
    if model.decoder is not None:
        vocab += [model.decoder.token_embedding, model.decoder.head]
    for table in vocab:
        fully_shard(table, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=root_mp, reshard_after_forward=reshard_after_forward)
    register_fsdp_forward_method(model, "encode_image")
    register_fsdp_forward_method(model, "encode_text")
    return model


def this_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy)."""
    x = x.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """The unsharded value of a (possibly DTensor) tensor, on every rank."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x
