"""FSDP2 on a 2-rank CPU mesh (gloo) computes the gradients of a 1-process global-batch run."""

import json
from pathlib import Path

from conftest import torchrun


def test_two_rank_fsdp_gradients_match_single_process(tmp_path):
    out = tmp_path / "grads.json"
    torchrun([str(Path(__file__).parent / "fsdp_worker.py"), str(out)], nproc=2)
    result = json.loads(out.read_text())
    assert result["world"] == 2
    cases = {(c["loss"], c["ac"], c["precision"]): c for c in result["cases"]}
    assert set(cases) == {
        ("contrastive", False, "fp32"),
        ("sigmoid", True, "fp32"),  # with activation checkpointing
        ("contrastive", False, "bf16"),  # bf16 MixedPrecisionPolicy, fp32 reduction
    }
    for case in cases.values():
        assert case["max_grad"] > 1e-3, case  # the gradients are not trivially zero
        assert case["clamped_scale_ok"], case
        if case["precision"] == "fp32":
            assert case["max_grad_diff"] < 1e-5, case
        else:  # computed in bf16 (so not fp32-exact), yet close to the fp32 gradients
            assert 1e-4 < case["max_grad_diff"] < 0.05 * case["max_grad"], case
    print({k: f"{c['max_grad_diff']:.2e}" for k, c in cases.items()})
