"""bf16 FSDP2 keeps open_clip-AMP numerics: fp32 logit scale/bias, features and logits."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from metaclip.train.config import model_preset
from metaclip.train.distributed import init_distributed, parallelize, shutdown
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model


@pytest.fixture
def world_of_one():
    info = init_distributed("cpu")
    try:
        yield info
    finally:
        shutdown()


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 999, (n, 16), generator=g)
    tokens[:, 10] = 999
    return torch.randn(n, 3, 32, 32, generator=g), tokens


@pytest.mark.parametrize("loss", ["contrastive", "sigmoid"])
def test_bf16_model_returns_fp32_scale_bias_and_features(world_of_one, loss):
    cfg = dataclasses.replace(model_preset("test-tiny"), loss=loss)
    model = build_model(cfg)
    parallelize(model, world_of_one.mesh, precision="bf16")
    img, txt, scale, bias = model(*_batch())
    want = 1 / 0.07 if loss == "contrastive" else 10.0
    assert scale.dtype == torch.float32
    # bf16 would round exp(ln(1/0.07)) = 14.2857 to 14.25
    assert scale.item() == pytest.approx(want, rel=1e-6)
    if loss == "sigmoid":
        assert bias.dtype == torch.float32 and bias.item() == -10.0
    assert img.dtype == txt.dtype == torch.float32
    # the blocks still compute in bf16
    blk = model.visual.transformer.resblocks[0]
    assert blk._get_fsdp_state()._mp_policy.param_dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["contrastive", "sigmoid"])
def test_loss_of_bf16_features_is_computed_in_fp32(kind):
    g = torch.Generator().manual_seed(0)
    img, txt = (F.normalize(torch.randn(16, 32, generator=g), dim=-1) for _ in range(2))
    img16, txt16 = img.bfloat16(), txt.bfloat16()
    scale, bias = torch.tensor([1 / 0.07]), torch.tensor([-10.0])
    got = clip_loss((img16, txt16, scale, bias), kind, local=True)
    want = clip_loss((img16.float(), txt16.float(), scale, bias), kind, local=True)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
