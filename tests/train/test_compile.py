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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attention", ["sdpa", "xformers"])
def test_fsdp_bf16_checkpointing_compile_on_cuda(attention):
    """bf16 FSDP2 + selective AC + compiled blocks on CUDA: eager's loss and gradients."""
    from metaclip.train.attention import xformers_installed

    if attention == "xformers" and not xformers_installed():
        pytest.skip("needs xformers")
    info = init_distributed("cuda")
    try:
        cfg = model_preset("ViT-B-32")
        runs = {}
        for compiled in (False, True):
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = build_model(cfg, info.device)
            assert model.set_attention_backend(attention, info.device, torch.bfloat16) == attention
            parallelize(
                model,
                info.mesh,
                precision="bf16",
                activation_checkpointing="selective",
                compile=compiled,
            )
            g = torch.Generator(device="cuda").manual_seed(1)
            images = torch.randn(16, 3, 224, 224, device="cuda", generator=g)
            tokens = torch.randint(1, 49407, (16, 77), device="cuda", generator=g)
            tokens[:, 20] = 49407
            losses = []
            for _ in range(2):  # the second step runs the compiled code without compiling
                model.zero_grad(set_to_none=True)
                loss = clip_loss(model(images, tokens), "contrastive")
                loss.backward()
                losses.append(loss.item())
            grads = {n: full_tensor(p.grad).float() for n, p in model.named_parameters()}
            runs[compiled] = (losses, grads)
        (l_eager, g_eager), (l_comp, g_comp) = runs[False], runs[True]
        assert l_comp == pytest.approx(l_eager, rel=1e-2)
        num = sum((g_comp[n] - g_eager[n]).norm() ** 2 for n in g_eager) ** 0.5
        den = sum(g.norm() ** 2 for g in g_eager.values()) ** 0.5
        assert (num / den).item() < 0.05  # bf16 kernels differ; a wrong graph would not
    finally:
        shutdown()
