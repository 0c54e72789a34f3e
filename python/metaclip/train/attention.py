"""The one attention switch: xformers ``memory_efficient_attention`` or PyTorch SDPA.

The backend is chosen from the device and dtype the model computes in, never from import
success alone: :func:`resolve_backend` (called once at model build, and logged) takes
xformers only after a real forward and backward on the model's head shapes, device and
dtype (:func:`probe_xformers`; on CPU tensors xformers raises), so ``auto`` falls back to
SDPA with the reason logged instead of failing at the first step. :func:`attend` re-checks
the tensor it is given, so a model resolved for CUDA still evaluates correctly on CPU.

Tensors are passed in xformers' layout ``[batch, tokens, heads, head_dim]``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaclip.train.config import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers")
_XFORMERS_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_xops = None


@dataclass
class BlockDiagonal:
    """Packed sequences (NaFlex): each token attends only within its segment.

    ``dense`` ``[R, 1, T, T]`` bool (True: may attend) for SDPA; ``seqlens`` the segment
    lengths over the R rows laid end to end (padding runs included), for xformers."""

    dense: torch.Tensor
    seqlens: list[int]

    @classmethod
    def from_segments(cls, segments: torch.Tensor, seqlens: list[int]) -> BlockDiagonal:
        """``segments`` ``[R, T]``: each token's block id; ``seqlens``: its
        :func:`run_lengths` (computed where ``segments`` is still on the host)."""
        return cls(segments[:, None, :, None] == segments[:, None, None, :], seqlens)


def run_lengths(segments: torch.Tensor) -> list[int]:
    """The block lengths of ``segments`` ``[R, T]`` (adjacent blocks have different ids),
    row after row: the ``seqlens`` of xformers' ``BlockDiagonalMask`` over the rows laid
    end to end. A block never spans two rows, so that mask is the rows' dense masks."""
    out: list[int] = []
    for row in segments:
        out += torch.unique_consecutive(row, return_counts=True)[1].tolist()
    return out


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


def _xformers_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> torch.Tensor:
    """The one call into xformers (``[B, T, H, D]`` in and out)."""
    xops = _xformers_ops()
    bias = xops.LowerTriangularMask() if causal else None
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias)


def _xformers_block_diagonal(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: list[int]
) -> torch.Tensor:
    """Packed rows as one sequence of ``seqlens`` blocks: no dense [T, T] mask is built."""
    xops = _xformers_ops()
    bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens(seqlens)
    b, t = q.shape[:2]
    q, k, v = (x.reshape(1, b * t, *x.shape[2:]) for x in (q, k, v))
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias).view(b, t, *q.shape[2:])


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=causal
    )
    return out.transpose(1, 2)


def probe_xformers(
    device: torch.device | str, dtype: torch.dtype, shapes: Iterable[tuple[int, int, bool]]
) -> str | None:
    """Run xformers once per ``(heads, head_dim, causal)`` on tiny packed-qkv views of this
    device and dtype, forward and backward, against SDPA. None if all pass, else why not.

    Import success says little: a kernel may be missing for the GPU arch, head dim or dtype,
    and then the first training step would fail. The probe fails here instead.
    """
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    for heads, head_dim, causal in shapes:
        what = f"xformers {dtype} head_dim {head_dim} causal={causal} on {device}"
        try:
            with torch.enable_grad():
                g = torch.Generator(device=device).manual_seed(0)
                qkv = torch.randn(2, 9, 3, heads, head_dim, generator=g, device=device)
                qkv = qkv.to(dtype).requires_grad_()
                q, k, v = qkv.unbind(2)  # strided views, as the model passes them
                out = _xformers_attention(q, k, v, causal)
                (grad,) = torch.autograd.grad(out.float().square().sum(), qkv, allow_unused=True)
                with torch.no_grad():
                    ref = _sdpa(q, k, v, causal)
        except Exception as e:  # any failure here means: do not train with it
            return f"{what} failed: {type(e).__name__}: {e}"
        err = (out.float() - ref.float()).abs().max().item()
        if not err <= tol:  # also catches NaN
            return f"{what} differs from SDPA by {err:.3g}"
        if grad is None or not bool(torch.isfinite(grad).all()) or not bool(grad.abs().sum()):
            return f"{what} gave no usable gradient"
    return None


def resolve_backend(
    requested: str,
    device: torch.device | str,
    dtype: torch.dtype,
    shapes: Iterable[tuple[int, int, bool]] = ((8, 64, False),),
) -> str:
    """Turn ``auto | sdpa | xformers`` into the backend that will run; log the choice.

    ``shapes`` are the model's ``(heads, head_dim, causal)``; xformers is taken only if a
    real call with each passes (:func:`probe_xformers`), else ``auto`` logs why and uses SDPA.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"attention backend must be one of {list(BACKENDS)}, got {requested!r}")
    kind = torch.device(device).type
    why = None
    if requested != "sdpa":
        if not xformers_installed():
            why = "xformers is not installed"
        elif dtype not in _XFORMERS_DTYPES:
            why = f"xformers does not support dtype {dtype}"
        else:  # on CPU tensors xformers raises: the probe says so
            why = probe_xformers(device, dtype, shapes)
    if requested == "xformers" and why:
        raise ConfigError(f"model.attention = 'xformers' was requested but {why}; use 'auto'")
    backend = "sdpa" if requested == "sdpa" or why else "xformers"
    # a probe failure on a GPU is a surprise worth a warning; no xformers on CPU is not
    level = logging.WARNING if why and kind == "cuda" else logging.INFO
    log.log(
        level,
        "attention backend: %s (requested %s, device %s, dtype %s)%s",
        backend,
        requested,
        kind,
        dtype,
        f": {why}" if why else "",
    )
    return backend


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    backend: str,
    mask: torch.Tensor | BlockDiagonal | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over ``[B, T, H, D]`` tensors; returns ``[B, T, H, D]``.
    ``mask``: a bool tensor broadcast to ``[B, H, Tq, Tk]`` (True: may attend; SDPA), or a
    :class:`BlockDiagonal` (packed sequences; xformers' block-diagonal bias on CUDA)."""
    xformers = backend == "xformers" and q.is_cuda and q.dtype in _XFORMERS_DTYPES
    if isinstance(mask, BlockDiagonal):
        if xformers and not causal:  # not testable on CPU: kept to this one call
            return _xformers_block_diagonal(q, k, v, mask.seqlens)
        return _sdpa(q, k, v, causal, mask.dense)
    if mask is not None:
        return _sdpa(q, k, v, causal, mask)
    if xformers:
        return _xformers_attention(q, k, v, causal)
    return _sdpa(q, k, v, causal)
