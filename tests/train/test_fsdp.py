"""FSDP2 on a 2-rank CPU mesh (gloo) computes the gradients of a 1-process global-batch run."""

import json
from pathlib import Path

from conftest import torchrun


def test_two_rank_fsdp_gradients_match_single_process(tmp_path):
    out = tmp_path / "grads.json"
    torchrun([str(Path(__file__).parent / "fsdp_worker.py"), str(out)], nproc=2, timeout=180)
    result = json.loads(out.read_text())
    assert result["world"] == 2
    assert {(c["loss"], c["ac"]) for c in result["cases"]} == {
        ("contrastive", False),
        ("sigmoid", True),
    }
    for case in result["cases"]:
        assert case["max_grad"] > 1e-3, case  # the gradients are not trivially zero
        assert case["max_grad_diff"] < 1e-5, case
        assert case["clamped_scale_ok"], case
