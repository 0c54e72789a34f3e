"""The attention switch: SDPA vs a plain math reference (CPU); xformers vs SDPA (GPU)."""

import logging
import math

import pytest
import torch

from metaclip.train import attention
from metaclip.train.attention import attend, resolve_backend, xformers_installed
from metaclip.train.config import ConfigError, model_preset
from metaclip.train.model import Attention, attention_shapes, build_model


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


def test_auto_without_xformers_picks_sdpa_and_logs_why(monkeypatch, caplog):
    monkeypatch.setattr(attention, "xformers_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger="metaclip.train.attention"):
        assert resolve_backend("auto", "cpu", torch.bfloat16, [(4, 16, True)]) == "sdpa"
    assert "xformers is not installed" in caplog.text


def _raising_kernel(q, k, v, causal):
    raise RuntimeError("no kernel for this head dim")  # as a missing build/arch would


def test_auto_falls_back_to_sdpa_when_the_xformers_probe_raises(monkeypatch, caplog):
    """The probe runs the kernel once (forward and backward) before the first step does."""
    monkeypatch.setattr(attention, "xformers_installed", lambda: True)
    monkeypatch.setattr(attention, "_xformers_attention", _raising_kernel)
    with caplog.at_level(logging.INFO, logger="metaclip.train.attention"):
        got = resolve_backend("auto", "cpu", torch.float32, [(4, 16, False), (2, 80, True)])
    assert got == "sdpa"
    assert "RuntimeError: no kernel for this head dim" in caplog.text
    assert "head_dim 16" in caplog.text  # the first shape the model uses that failed
    with pytest.raises(ConfigError, match="no kernel for this head dim"):
        resolve_backend("xformers", "cpu", torch.float32, [(4, 16, False)])


def test_probe_checks_values_and_gradients(monkeypatch):
    """A kernel that runs but is wrong (here: ignores the causal mask, or cuts the gradient)
    is not used either."""

    def no_mask(q, k, v, causal):
        return attend(q, k, v, causal=False, backend="sdpa")

    def detached(q, k, v, causal):
        return attend(q, k, v, causal=causal, backend="sdpa").detach().requires_grad_()

    def right(q, k, v, causal):
        return attend(q, k, v, causal=causal, backend="sdpa")

    shapes = [(2, 16, True)]
    monkeypatch.setattr(attention, "_xformers_attention", no_mask)
    assert "differs from SDPA" in attention.probe_xformers("cpu", torch.float32, shapes)
    monkeypatch.setattr(attention, "_xformers_attention", detached)
    assert "gradient" in attention.probe_xformers("cpu", torch.float32, shapes)
    monkeypatch.setattr(attention, "_xformers_attention", right)
    assert attention.probe_xformers("cpu", torch.float32, shapes) is None


def test_model_probes_its_own_head_shapes(monkeypatch):
    seen = []

    def record(q, k, v, causal):
        seen.append((q.shape[2], q.shape[3], causal, q.dtype))
        raise RuntimeError("stop")

    monkeypatch.setattr(attention, "xformers_installed", lambda: True)
    monkeypatch.setattr(attention, "_xformers_attention", record)
    model = build_model(model_preset("test-tiny"))
    assert model.set_attention_backend("auto", "cpu", torch.bfloat16) == "sdpa"
    assert seen == [(4, 16, False, torch.bfloat16)]  # stopped at the first failing shape
    assert {m.backend for m in model.modules() if isinstance(m, Attention)} == {"sdpa"}
    assert sorted(attention_shapes(model)) == [(4, 16, False), (4, 16, True)]


def seqlens_dense(seqlens: list[int]) -> torch.Tensor:
    """The ``[S, S]`` bool mask xformers' ``BlockDiagonalMask.from_seqlens(seqlens)`` stands
    for (S = sum of the lengths): a token attends to the tokens of its own block."""
    block = torch.repeat_interleave(torch.arange(len(seqlens)), torch.tensor(seqlens))
    return block[:, None] == block[None, :]


@pytest.mark.parametrize("cls", [True, False])
@pytest.mark.parametrize(
    ("grids", "row_len"),
    [
        ([(2, 3), (4, 4), (1, 5), (3, 2), (6, 2)], 30),  # padded rows
        ([(2, 2), (2, 2), (1, 3), (3, 3)], 10),  # a full row before the next one
    ],
)
def test_block_diagonal_seqlens_stand_for_the_sdpa_mask(cls, grids, row_len):
    """What the xformers path is given (seqlens over the rows laid end to end) is the SDPA
    path's dense mask, row by row; attention over the flattened rows with it (xformers'
    call, emulated with SDPA on CPU) equals the packed rows' attention."""
    from metaclip.train.naflex import pack

    n = sum(a * b for a, b in grids)
    packed = pack(torch.zeros(n, 3 * 64), grids, row_len + cls, cls)
    mask = packed.block_mask()
    rows, t = packed.rows, packed.row_len
    assert mask.dense.shape == (rows, 1, t, t) and sum(mask.seqlens) == rows * t
    dense = seqlens_dense(mask.seqlens)
    assert torch.equal(dense, torch.block_diag(*mask.dense[:, 0].int()).bool())
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(rows, t, 2, 8, generator=g) for _ in range(3))
    flat = [x.reshape(1, rows * t, 2, 8) for x in (q, k, v)]
    emulated = attention._sdpa(*flat, False, dense).view(rows, t, 2, 8)
    got = attend(q, k, v, causal=False, backend="xformers", mask=mask)  # SDPA on CPU
    torch.testing.assert_close(got, emulated, rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not xformers_installed(), reason="needs xformers")
def test_xformers_probe_on_cuda(monkeypatch, caplog):
    shapes = [(16, 64, False), (16, 80, False), (16, 104, False), (16, 64, True)]
    assert attention.probe_xformers("cuda", torch.bfloat16, shapes) is None
    monkeypatch.setattr(attention, "_xformers_attention", _raising_kernel)
    with caplog.at_level(logging.WARNING, logger="metaclip.train.attention"):
        assert resolve_backend("auto", "cuda", torch.bfloat16, shapes) == "sdpa"
    assert "no kernel for this head dim" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not xformers_installed(), reason="needs xformers")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("heads", "width"), [(16, 1280), (16, 1024), (20, 1280)])
def test_xformers_layer_matches_sdpa_forward_and_backward(causal, heads, width):
    """The model's Attention layer (packed-qkv views, bf16): same outputs and gradients."""
    torch.manual_seed(0)
    layers = {}
    for backend in ("sdpa", "xformers"):
        torch.manual_seed(0)
        layer = Attention(width, heads, causal).cuda().bfloat16()
        torch.nn.init.normal_(layer.in_proj_weight, std=width**-0.5)
        layer.backend = backend
        x = torch.randn(
            4, 257, width, device="cuda", generator=torch.Generator("cuda").manual_seed(1)
        )
        x = x.bfloat16().requires_grad_()
        out = layer(x)
        out.float().square().mean().backward()
        layers[backend] = (out.float(), x.grad.float(), layer.in_proj_weight.grad.float())
    for a, b in zip(layers["sdpa"], layers["xformers"], strict=True):
        assert (a - b).abs().max().item() <= 3e-2 * max(a.abs().max().item(), 1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not xformers_installed(), reason="needs xformers")
@pytest.mark.parametrize("pool", ["cls", "map"])
def test_xformers_block_diagonal_matches_sdpa_on_packed_images(pool):
    """NaFlex on CUDA: xformers' BlockDiagonalMask path gives SDPA's embeddings and
    gradients for packed images of several grids (fp32 and bf16)."""
    import dataclasses

    from metaclip.train.naflex import pack

    cfg = model_preset("test-tiny")
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, pool=pool))
    grids = [(2, 3), (4, 4), (1, 5), (3, 2), (6, 2)]
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(sum(a * b for a, b in grids), 3 * 64, generator=g)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        runs = {}
        for backend in ("sdpa", "xformers"):
            torch.manual_seed(0)
            model = build_model(cfg, "cuda")
            assert model.set_attention_backend(backend, "cuda", dtype) == backend
            x = patches.cuda().requires_grad_()
            packed = pack(x, grids, 30, pool == "cls").to("cuda")
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                out = model.encode_image(packed)
            out.float().square().sum().backward()
            runs[backend] = (out.float(), x.grad.float())
        for a, b in zip(runs["sdpa"], runs["xformers"], strict=True):
            assert (a - b).abs().max().item() <= tol * max(a.abs().max().item(), 1e-3)
