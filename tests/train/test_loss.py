"""Losses against their textbook statement; logit-scale clamping; shape-[1] scale/bias."""

import math

import pytest
import torch
import torch.nn.functional as F

from metaclip.train.config import model_preset
from metaclip.train.loss import MAX_LOGIT_SCALE, clamp_logit_scale, clip_loss
from metaclip.train.model import build_model


def _features(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1) for _ in range(2))


def test_contrastive_loss_matches_definition():
    img, txt = _features()
    scale = torch.tensor([20.0])
    total = 0.0
    for i in range(len(img)):  # -log softmax of the matching pair, both directions
        total -= torch.log_softmax(scale * img[i] @ txt.T, 0)[i] / 2
        total -= torch.log_softmax(scale * txt[i] @ img.T, 0)[i] / 2
    got = clip_loss((img, txt, scale, None), "contrastive", local=True)
    assert got.item() == pytest.approx(total.item() / len(img), rel=1e-6)


def test_sigmoid_loss_matches_definition():
    img, txt = _features()
    scale, bias = torch.tensor([10.0]), torch.tensor([-10.0])
    total = 0.0
    for i in range(len(img)):
        for j in range(len(txt)):
            z = 1.0 if i == j else -1.0
            total -= math.log(torch.sigmoid(z * (scale * img[i] @ txt[j] + bias)).item())
    got = clip_loss((img, txt, scale, bias), "sigmoid", local=True)
    assert got.item() == pytest.approx(total / len(img), rel=1e-5)


def test_logit_scale_init_shape_and_clamp():
    m = build_model(model_preset("test-tiny"))
    assert m.logit_scale.shape == (1,) and m.logit_bias is None
    assert m.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        m.logit_scale.fill_(7.0)
    clamp_logit_scale(m)
    assert m.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    with torch.no_grad():
        m.logit_scale.fill_(-1.0)
    clamp_logit_scale(m)
    assert m.logit_scale.item() == 0.0


def test_sigmoid_model_has_bias_init():
    import dataclasses

    m = build_model(dataclasses.replace(model_preset("test-tiny"), loss="sigmoid"))
    assert m.logit_bias.shape == (1,) and m.logit_bias.item() == -10.0
    assert m.logit_scale.item() == pytest.approx(math.log(10.0))
    *_, bias = m(torch.randn(2, 3, 32, 32), torch.randint(0, 999, (2, 16)))
    assert bias is not m.logit_bias and torch.equal(bias, m.logit_bias)
