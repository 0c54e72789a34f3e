"""torch.compile per block (the order AC -> compile -> fully_shard) gives eager's gradients."""

import copy

import pytest
import torch

from metaclip.train.config import model_preset
from metaclip.train.distributed import full_tensor, init_distributed, parallelize, shutdown
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    info = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        eager = build_model(model_preset("test-tiny"))
        compiled = copy.deepcopy(eager)
        parallelize(
            compiled, info.mesh, precision="fp32", activation_checkpointing=True, compile=True
        )
        images, tokens = torch.randn(4, 3, 32, 32), torch.randint(1, 999, (4, 16))
        clip_loss(eager(images, tokens), "contrastive").backward()
        clip_loss(compiled(images, tokens), "contrastive").backward()
        ref = dict(eager.named_parameters())
        diff = max(
            (full_tensor(p.grad) - ref[n].grad).abs().max().item()
            for n, p in compiled.named_parameters()
        )
        assert diff < 1e-4, diff
    finally:
        shutdown()
