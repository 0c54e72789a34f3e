"""The attention switch: SDPA vs a plain math reference (CPU); xformers vs SDPA (GPU)."""

import math

import pytest
import torch

from metaclip.train.attention import attend, resolve_backend, xformers_installed
from metaclip.train.config import ConfigError


def reference(q, k, v, causal):
    """softmax(q k^T / sqrt(d)) v, written out; tensors are [B, T, H, D]."""
    q, k, v = (x.transpose(1, 2).double() for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        t = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_sdpa_matches_math_reference(causal, dtype, tol):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 77, 4, 32, generator=g).to(dtype) for _ in range(3))
    out = attend(q, k, v, causal=causal, backend="sdpa")
    assert out.shape == q.shape and out.dtype == dtype
    ref = reference(q, k, v, causal)
    assert (out.double() - ref).abs().max().item() < tol
    if causal:  # the first token only attends to itself
        assert torch.allclose(out[:, 0].double(), v[:, 0].double(), atol=tol)


def test_backend_is_chosen_by_device_not_import():
    assert resolve_backend("auto", "cpu", torch.float32) == "sdpa"
    assert resolve_backend("auto", "cpu", torch.bfloat16) == "sdpa"
    assert resolve_backend("sdpa", "cpu", torch.float32) == "sdpa"
    with pytest.raises(ConfigError, match="xformers"):
        resolve_backend("xformers", "cpu", torch.float32)
    with pytest.raises(ConfigError, match="one of"):
        resolve_backend("flash", "cpu", torch.float32)


def test_xformers_backend_falls_back_to_sdpa_for_cpu_tensors():
    """A model resolved for CUDA+xformers must still evaluate CPU tensors correctly."""
    q, k, v = (torch.randn(1, 10, 2, 16) for _ in range(3))
    out = attend(q, k, v, causal=True, backend="xformers")
    assert (out.double() - reference(q, k, v, True)).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not xformers_installed(), reason="needs xformers")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 80, 104])  # B/L, H/14, bigG/14 head widths
def test_xformers_matches_sdpa_on_cuda(causal, head_dim):
    assert resolve_backend("auto", "cuda", torch.bfloat16) == "xformers"
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(4, 257, 16, head_dim, device="cuda", generator=g, dtype=torch.bfloat16)
        for _ in range(3)
    )
    a = attend(q, k, v, causal=causal, backend="xformers")
    b = attend(q, k, v, causal=causal, backend="sdpa")
    assert (a.float() - b.float()).abs().max().item() < 2e-2
