"""Real learning with SigLIP 2's options: sigmoid + MAP head + LocCa decoder + distillation
against the sigmoid loss alone, on the same data, seeds and schedule (the recipe distills
over the last 30%), zero-shot on 480 held-out images, averaged over two seeds.

Measured on this task's CPU (120 steps; sigmoid vs recipe, top-1 on the 480 images): seed 0
0.329 vs 0.329, seed 1 0.358 vs 0.406, seed 2 0.308 vs 0.342, seed 3 0.383 vs 0.338; at 240
steps, seed 0: 0.390 vs 0.375. The recipe is ahead on average (+0.01 over four seeds) but a
seed moves the difference by about ±0.04, so plain ">=" would pass or fail by the seed; the
mean of two seeds is checked to within 0.05 (about two standard errors), which a broken
recipe (near chance, 0.083) still fails by far.
"""

from pathlib import Path

import pytest
import synth
from conftest import tiny_config

from metaclip.train.config import config_from_dict
from metaclip.train.train import run

STEPS = 120
CHANCE = 1 / 12
SEEDS = (0, 1)
RECIPE = {
    "model.vision.pool": "map",
    "model.decoder.layers": 1,
    "model.decoder.width": 64,
    "model.decoder.heads": 4,
    "model.decoder.parallel_prob": 0.5,
    "model.distill.start_fraction": 0.3,
    "data.local_crops": 1,
    "data.local_crop_size": 16,
}


@pytest.fixture(scope="module")
def heldout(shapes) -> str:
    """40 images per class (480), drawn apart from the training and the small eval split."""
    return synth.make_split(Path(shapes["root"]) / "data", "heldout", 40, 1, seed=7)


def _top1(shapes, heldout, out, seed, **over) -> float:
    cfg = tiny_config(
        shapes,
        out,
        steps=STEPS,
        log_every=STEPS,
        seed=seed,
        **{
            "model.loss": "sigmoid",
            "data.batch_size": 48,
            "optim.lr": 4e-3,
            "optim.warmup_steps": 10,
            "eval.zeroshot_shards": heldout,
            "eval.classnames": shapes["classnames"],
            "export": False,
            **over,
        },
    )
    summary = run(config_from_dict(cfg))
    assert summary["step"] == STEPS
    return summary["eval"]["zeroshot/top1"]


def test_siglip2_recipe_learns_as_well_as_sigmoid(shapes, heldout, tmp_path):
    base = [_top1(shapes, heldout, tmp_path / f"sigmoid{s}", s) for s in SEEDS]
    recipe = [_top1(shapes, heldout, tmp_path / f"recipe{s}", s, **RECIPE) for s in SEEDS]
    for s, b, r in zip(SEEDS, base, recipe, strict=True):
        print(f"seed {s}: zero-shot top-1 sigmoid {b:.3f}, +MAP+decoder+distill {r:.3f}")
    assert min(base) > 2 * CHANCE  # the baseline learns, so the comparison means something
    assert min(recipe) > 2 * CHANCE
    assert sum(recipe) / len(SEEDS) >= sum(base) / len(SEEDS) - 0.05
