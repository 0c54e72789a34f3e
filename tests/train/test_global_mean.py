"""Per-sample auxiliary losses are means over the global batch even when ranks hold
different counts: 2 gloo ranks with 2 and 5 rows (1 vs many masked tokens, short vs long
captions) give the gradient of one process on all 7 rows."""

import json
from pathlib import Path

import torch
from conftest import torchrun
from global_mean_worker import data, losses


def test_ranks_with_unequal_counts_give_the_global_mean(tmp_path):
    out = tmp_path / "grad.json"
    torchrun([str(Path(__file__).parent / "global_mean_worker.py"), str(out)], nproc=2)
    got = torch.tensor(json.loads(out.read_text())["grad"])
    w = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
    losses(w, *data()).backward()
    want = w.grad
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    # The per-rank mean (each rank divides by its own count) would differ.
    x, tokens, mask, target = data()
    w2 = w.detach().clone().requires_grad_()
    parts = [losses(w2, x[r], tokens[r], mask[r], target[r]) for r in (slice(0, 2), slice(2, 7))]
    (sum(parts) / 2).backward()
    assert not torch.allclose(w2.grad, want, atol=1e-4)
