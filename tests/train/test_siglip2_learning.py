"""Real learning with SigLIP 2's options: sigmoid + MAP head + LocCa decoder + distillation
reaches at least the zero-shot accuracy of the sigmoid loss alone on the same steps.

Both runs share data, seed and schedule; the recipe's run distills over the last 30%.
"""

from conftest import tiny_config

from metaclip.train.config import config_from_dict
from metaclip.train.train import run

STEPS = 240
CHANCE = 1 / 12


def _top1(shapes, out, **over) -> float:
    cfg = tiny_config(
        shapes,
        out,
        steps=STEPS,
        log_every=STEPS,
        **{
            "model.loss": "sigmoid",
            "data.batch_size": 48,
            "optim.lr": 4e-3,
            "optim.warmup_steps": 10,
            "eval.zeroshot_shards": shapes["eval"],
            "eval.classnames": shapes["classnames"],
            "export": False,
            **over,
        },
    )
    summary = run(config_from_dict(cfg))
    assert summary["step"] == STEPS
    return summary["eval"]["zeroshot/top1"]


def test_siglip2_recipe_learns_at_least_as_well_as_sigmoid(shapes, tmp_path):
    base = _top1(shapes, tmp_path / "sigmoid")
    recipe = _top1(
        shapes,
        tmp_path / "recipe",
        **{
            "model.vision.pool": "map",
            "model.decoder.layers": 1,
            "model.decoder.width": 64,
            "model.decoder.heads": 4,
            "model.decoder.parallel_prob": 0.5,
            "model.distill.start_fraction": 0.3,
            "data.local_crops": 1,
            "data.local_crop_size": 16,
        },
    )
    print(f"zero-shot top-1: sigmoid {base:.3f}, +MAP+decoder+distill {recipe:.3f}")
    assert base > 2 * CHANCE  # the baseline learns, so the comparison means something
    assert recipe > 2 * CHANCE
    # Runs are deterministic on one machine (measured here: sigmoid 0.350, recipe 0.358);
    # float rounding differs across CPUs, so "at least" allows 6 of the 120 eval images.
    assert recipe >= base - 0.05
