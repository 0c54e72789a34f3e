"""Trainer knobs: full/selective activation checkpointing, last block kept unsharded,
fused AdamW on CUDA."""

import dataclasses

import pytest
import torch

from metaclip.train.config import ConfigError, config_from_dict, model_preset
from metaclip.train.distributed import init_distributed, parallelize, shutdown
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model
from metaclip.train.train import build_optimizer


def _model(layers=4):
    cfg = model_preset("test-tiny")
    return build_model(
        dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, layers=layers))
    )


def _batch(n=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(1, 999, (n, 16), generator=g)


def _forward_calls(model) -> list[int]:
    """How often each vision block runs its forward in one training step (2 = recomputed)."""
    blocks = list(model.visual.transformer.resblocks)
    calls = [0] * len(blocks)
    for i, b in enumerate(blocks):
        b.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    clip_loss(model(*_batch()), "contrastive").backward()
    return calls


@pytest.mark.parametrize(
    ("mode", "every", "want"),
    [
        ("none", 2, [1, 1, 1, 1]),
        ("full", 2, [2, 2, 2, 2]),
        ("selective", 2, [2, 1, 2, 1]),
        ("selective", 3, [2, 1, 1, 2]),
    ],
)
def test_activation_checkpointing_modes(mode, every, want):
    model = _model()
    model.set_grad_checkpointing(mode != "none", every=every if mode == "selective" else 1)
    assert _forward_calls(model) == want


def _raw(**top):
    return {"data": {"train_shards": "x.tar"}, "tokenizer": {"kind": "openai-bpe"}, **top}


def test_activation_checkpointing_config_keeps_booleans():
    assert config_from_dict(_raw()).activation_checkpointing == "none"
    assert config_from_dict(_raw(activation_checkpointing=False)).activation_checkpointing == (
        "none"
    )
    assert config_from_dict(_raw(activation_checkpointing=True)).activation_checkpointing == (
        "full"
    )
    cfg = config_from_dict(_raw(activation_checkpointing="selective"))
    assert cfg.activation_checkpointing == "selective" and cfg.activation_checkpointing_every == 2
    with pytest.raises(ConfigError, match="activation_checkpointing must be one of"):
        config_from_dict(_raw(activation_checkpointing="some"))
    with pytest.raises(ConfigError, match="activation_checkpointing_every"):
        config_from_dict(_raw(activation_checkpointing_every=0))


def test_parallelize_selective_and_last_blocks_stay_unsharded_after_forward():
    info = init_distributed("cpu")
    try:
        model = _model()
        calls_model = model
        parallelize(model, info.mesh, precision="fp32", activation_checkpointing="selective")
        out = model(*_batch())
        vis, txt = model.visual.transformer.resblocks, model.transformer.resblocks

        def unsharded(block):
            return block._get_fsdp_state()._fsdp_param_group.is_unsharded

        # the last block of each tower is the first backward needs: not resharded after
        # forward (it would be all-gathered again at once); the others are
        assert [unsharded(b) for b in vis] == [False, False, False, True]
        assert [unsharded(b) for b in txt] == [False, True]
        clip_loss(out, "contrastive").backward()
        assert not any(unsharded(b) for b in [*vis, *txt])  # resharded after backward
        assert _forward_calls(calls_model) == [2, 1, 2, 1]
    finally:
        shutdown()


def test_fused_adamw_only_on_cuda():
    model = _model(2)
    o = config_from_dict(_raw()).optim
    assert not build_optimizer(model, o, torch.device("cpu")).defaults["fused"]
    # the choice is by device; CUDA parameters are not needed to read it
    assert build_optimizer(model, o, torch.device("cuda")).defaults["fused"] is True
