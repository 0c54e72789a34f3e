"""FSDP2 on a 2-rank CPU mesh (gloo) computes the gradients of a 1-process global-batch run."""

import json
from pathlib import Path

from conftest import torchrun


def test_two_rank_fsdp_gradients_match_single_process(tmp_path):
    out = tmp_path / "grads.json"
    torchrun([str(Path(__file__).parent / "fsdp_worker.py"), str(out)], nproc=2)
    result = json.loads(out.read_text())
    assert result["world"] == 2
    cases = {(c["loss"], c["ac"], c["precision"], c["accum"]): c for c in result["cases"]}
    assert set(cases) == {
        ("contrastive", False, "fp32", 1),
        ("sigmoid", True, "fp32", 1),  # with activation checkpointing
        ("contrastive", False, "bf16", 1),  # bf16 MixedPrecisionPolicy, fp32 reduction
        ("contrastive", False, "fp32", 2),  # gradient accumulation with cached features
        ("sigmoid", True, "fp32", 4),
    }
    for case in cases.values():
        assert case["max_grad"] > 1e-3, case  # the gradients are not trivially zero
        assert case["clamped_scale_ok"], case
        if case["precision"] == "fp32":
            assert case["max_grad_diff"] < 1e-5, case
        else:  # computed in bf16 (so not fp32-exact), yet close to the fp32 gradients
            assert 1e-4 < case["max_grad_diff"] < 0.05 * case["max_grad"], case
    print({k: f"{c['max_grad_diff']:.2e}" for k, c in cases.items()})


def test_token_embedding_is_its_own_fsdp_unit():
    """A 901,629-token table must not sit in the root unit (gathered with every root use)."""
    import dataclasses
    import math

    import torch
    from torch.distributed.fsdp import FSDPModule

    from metaclip.train.config import model_preset
    from metaclip.train.distributed import init_distributed, parallelize, shutdown
    from metaclip.train.loss import clip_loss
    from metaclip.train.model import build_model

    info = init_distributed("cpu")
    try:
        cfg = model_preset("test-tiny")
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=5000))
        model = build_model(cfg)
        parallelize(model, info.mesh, precision="bf16")
        units = {name for name, m in model.named_modules() if isinstance(m, FSDPModule)}
        blocks = {f"{t}transformer.resblocks.{i}" for t in ("", "visual.") for i in range(2)}
        assert units == {"", "token_embedding", *blocks}
        emb = model.token_embedding
        assert emb._get_fsdp_state()._mp_policy.param_dtype == torch.bfloat16
        nested = units - {""}
        root = {
            n for n, _ in model.named_parameters() if not any(n.startswith(u + ".") for u in nested)
        }
        assert "token_embedding.weight" not in root
        # what stays in the root: small tensors (embeddings of positions, norms, projections)
        assert root == {
            *(f"visual.{n}" for n in ("conv1.weight", "class_embedding", "proj")),
            *(f"visual.{n}" for n in ("positional_embedding", "ln_pre.weight", "ln_pre.bias")),
            *("visual.ln_post.weight", "visual.ln_post.bias", "positional_embedding"),
            *("ln_final.weight", "ln_final.bias", "text_projection", "logit_scale"),
        }
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, 4999, (2, 16), generator=g)
        loss = clip_loss(model(torch.randn(2, 3, 32, 32, generator=g), tokens), "contrastive")
        loss.backward()
        assert math.isfinite(loss.item()) and emb.weight.grad is not None
    finally:
        shutdown()


def test_decoder_vocabulary_tables_are_their_own_fsdp_units():
    """The decoder's token embedding and output layer (vocabulary-sized) are units of their
    own, like the text tower's embedding, and train in a step with the caption loss."""
    import dataclasses
    import math

    import torch
    from torch.distributed.fsdp import FSDPModule

    from metaclip.train.config import DecoderConfig, LossConfig, model_preset
    from metaclip.train.distributed import init_distributed, parallelize, shutdown
    from metaclip.train.model import build_model
    from metaclip.train.siglip2 import draw_aux
    from metaclip.train.train import forward_backward

    info = init_distributed("cpu")
    try:
        cfg = model_preset("test-tiny")
        cfg = dataclasses.replace(cfg, decoder=DecoderConfig(layers=2, width=32, heads=2))
        model = build_model(cfg)
        parallelize(model, info.mesh, precision="bf16")
        units = {name for name, m in model.named_modules() if isinstance(m, FSDPModule)}
        decoder = {"decoder.token_embedding", "decoder.head", "decoder.resblocks.0"}
        assert decoder | {"decoder.resblocks.1", "token_embedding"} <= units
        nested = units - {""}
        root = {
            n for n, _ in model.named_parameters() if not any(n.startswith(u + ".") for u in nested)
        }
        assert not {"decoder.token_embedding.weight", "decoder.head.weight"} & root
        for name in ("decoder.token_embedding", "decoder.head"):
            policy = model.get_submodule(name)._get_fsdp_state()._mp_policy
            assert policy.param_dtype == torch.bfloat16
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, 999, (2, 16), generator=g)
        images = torch.randn(2, 3, 32, 32, generator=g)
        aux = draw_aux(model, 2, False, g)
        loss = forward_backward(model, [(images, tokens)], "contrastive", [aux], LossConfig())
        assert math.isfinite(loss.item()) and model.decoder.token_embedding.weight.grad is not None
        assert model.decoder.head.weight.grad is not None
    finally:
        shutdown()


def test_hsdp_meshes_give_single_process_gradients(tmp_path):
    """distributed.mesh_shape = [replicate, shard]: HSDP on (2, 1) and (1, 2) meshes."""
    out = tmp_path / "hsdp.json"
    torchrun([str(Path(__file__).parent / "hsdp_worker.py"), str(out)], nproc=2)
    result = json.loads(out.read_text())
    assert result["world"] == 2
    meshes = {tuple(c["mesh"]) for c in result["cases"]}
    assert meshes == {(2, 1), (1, 2)} and len(result["cases"]) == 6
    for case in result["cases"]:
        assert case["max_grad"] > 1e-3, case
        assert case["max_grad_diff"] < 1e-5, case
        assert case["clamped_scale_ok"], case


def test_mesh_shape_is_validated():
    import pytest

    from metaclip.train.config import ConfigError, config_from_dict
    from metaclip.train.distributed import init_distributed, shutdown

    base = {"data": {"train_shards": "x.tar"}, "tokenizer": {"path": "sp.model"}}
    cfg = config_from_dict(base, ["distributed.mesh_shape=[2, 4]"])
    assert cfg.distributed.mesh_shape == [2, 4]
    for bad, msg in (
        ("[2]", "two"),
        ("[0, 2]", ">= 1"),
        ("['a', 1]", "list of int"),
        ("2", "list"),
    ):
        with pytest.raises(ConfigError, match=msg):
            config_from_dict(base, [f"distributed.mesh_shape={bad}"])
    try:  # a world of one cannot be a 2 x 1 mesh
        with pytest.raises(ConfigError, match=r"2 x 1 = 2 ranks.*world of 1"):
            init_distributed("cpu", mesh_shape=[2, 1])
    finally:
        shutdown()
