"""Resume: N steps straight == N/2 steps, stop, resume from the DCP checkpoint, N/2 more.

Runs with 2 data workers, random crops and online curation on, so the data position, the
worker round-robin and the per-epoch keep decision must all be restored exactly.
"""

import numpy as np
import torch
from conftest import tiny_config

from metaclip.train.config import config_from_dict
from metaclip.train.model import build_model
from metaclip.train.train import run

N = 6


def _cfg(shapes, out, **over):
    probs = out.parent / "probs.npy"
    np.save(probs, np.array([0.9, 0.7, 0.5, 0.8, 0.6, 0.9, 0.4]))  # colours 0-3, shapes 4-6
    return config_from_dict(
        tiny_config(
            shapes,
            out,
            steps=N,
            **{"data.num_workers": 2, "data.probabilities": str(probs), **over},
        )
    )


def test_resume_gives_the_same_parameters(shapes, tmp_path):
    straight = run(_cfg(shapes, tmp_path / "straight"))
    assert straight["step"] == N

    first = run(_cfg(shapes, tmp_path / "split", stop_at=N // 2))
    assert first["step"] == N // 2
    assert not (tmp_path / "split" / "open_clip_model.pt").exists()  # stopped, not finished
    second = run(_cfg(shapes, tmp_path / "split"))  # resume = "auto" finds the checkpoint
    assert second["start_step"] == N // 2 and second["step"] == N

    a = torch.load(tmp_path / "straight" / "open_clip_model.pt")
    b = torch.load(tmp_path / "split" / "open_clip_model.pt")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, diff
    assert straight["loss"] == second["loss"]
    # training moved the weights: this is not a comparison of two initial states
    torch.manual_seed(0)
    init = build_model(_cfg(shapes, tmp_path / "init").model).state_dict()
    moved = max((a[k] - init[k].reshape(a[k].shape)).abs().max().item() for k in a)
    assert moved > 1e-3, moved
    print(f"resume max |param diff| = {diff:.3g}")
