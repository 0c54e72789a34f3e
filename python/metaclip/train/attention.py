"""The one attention switch: xformers ``memory_efficient_attention`` or PyTorch SDPA.

The backend is chosen from the device and dtype the model computes in, never from import
success alone: xformers raises on CPU tensors, so it is used only for CUDA tensors in a dtype
its kernels support. :func:`resolve_backend` is called once at model build (and logged);
:func:`attend` re-checks the tensor it is given, so a model resolved for CUDA still evaluates
correctly on CPU.

Tensors are passed in xformers' layout ``[batch, tokens, heads, head_dim]``.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

from metaclip.train.config import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers")
_XFORMERS_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_xops = None


def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def _xformers_ops():
    global _xops
    if _xops is None:
        import xformers.ops as xops  # only ever imported for CUDA tensors

        _xops = xops
    return _xops


def xformers_usable(device: torch.device | str, dtype: torch.dtype) -> bool:
    """True when xformers is installed *and* can run on this device and dtype."""
    device = torch.device(device)
    return (
        device.type == "cuda"
        and torch.cuda.is_available()
        and dtype in _XFORMERS_DTYPES
        and xformers_installed()
    )


def resolve_backend(requested: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """Turn ``auto | sdpa | xformers`` into the backend that will run; log the choice."""
    if requested not in BACKENDS:
        raise ConfigError(f"attention backend must be one of {list(BACKENDS)}, got {requested!r}")
    usable = xformers_usable(device, dtype)
    if requested == "xformers" and not usable:
        why = (
            "xformers is not installed"
            if not xformers_installed()
            else (f"xformers does not run on device={torch.device(device).type}, dtype={dtype}")
        )
        raise ConfigError(f"model.attention = 'xformers' was requested but {why}; use 'auto'")
    backend = (
        "xformers" if (requested == "xformers" or (requested == "auto" and usable)) else ("sdpa")
    )
    log.info(
        "attention backend: %s (requested %s, device %s, dtype %s)",
        backend,
        requested,
        torch.device(device).type,
        dtype,
    )
    return backend


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, backend: str
) -> torch.Tensor:
    """Scaled dot-product attention over ``[B, T, H, D]`` tensors; returns ``[B, T, H, D]``."""
    if backend == "xformers" and q.is_cuda and q.dtype in _XFORMERS_DTYPES:
        xops = _xformers_ops()
        bias = xops.LowerTriangularMask() if causal else None
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )
    return out.transpose(1, 2)
