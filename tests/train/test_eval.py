"""Evaluation streams the eval set, shards it over ranks and reduces the metrics."""

import json
from collections import Counter
from pathlib import Path

import pytest
import synth
import torch
import torch.nn.functional as F
from conftest import tiny_config, torchrun

from metaclip.train.config import config_from_dict
from metaclip.train.data import expand_shards
from metaclip.train.evaluate import EvalSamples, _prompts, evaluate, zero_shot_classifier
from metaclip.train.model import build_model
from metaclip.train.samples import read_samples
from metaclip.train.tokenizer import build_tokenizer
from metaclip.train.train import reconcile_text_config


def _setup(shapes, tmp_path, shards: str, **over):
    raw = tiny_config(shapes, tmp_path, **{"eval.zeroshot_shards": shards, **over})
    raw["eval"].update(classnames=shapes["classnames"], retrieval_shards=shards, batch_size=4)
    cfg = config_from_dict(raw)
    tokenizer = build_tokenizer(cfg.tokenizer, cfg.model.text.context_length)
    return raw, reconcile_text_config(cfg, tokenizer), tokenizer


def _keys(shards: str, rank: int, world: int) -> Counter:
    return Counter(x["key"] for x in EvalSamples(shards, 32, rank, world) if "key" in x)


def test_eval_parts_are_disjoint_and_cover_the_set(tmp_path, shapes):
    three = synth.make_split(tmp_path / "ev3", "ev3", 2, 3, seed=2)
    for shards in (shapes["eval"], three):  # fewer shards than ranks, and more
        everything = Counter(s.key for p in expand_shards(shards) for s in read_samples(p)[0])
        for world in (2, 4):
            parts = [_keys(shards, r, world) for r in range(world)]
            assert sum(parts, Counter()) == everything  # each sample exactly once
            assert all(0 < sum(p.values()) < sum(everything.values()) for p in parts)


def test_zero_shot_classifier_batches_all_prompts(shapes, tmp_path):
    _, cfg, tokenizer = _setup(shapes, tmp_path, shapes["eval"])
    spec = json.loads(Path(shapes["classnames"]).read_text())
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    calls = []
    encode = model.encode_text
    model.encode_text = lambda t, normalize=False: (calls.append(len(t)), encode(t, normalize))[1]
    w = zero_shot_classifier(model, tokenizer, spec["classnames"], spec["templates"], "cpu", 64)
    n_prompts = sum(len(_prompts(c, spec["templates"])) for c in spec["classnames"])
    assert sum(calls) == n_prompts and len(calls) == -(-n_prompts // 64)  # not one per class
    with torch.no_grad():  # the reference: one forward per class, mean, renormalize
        ref = torch.stack(
            [
                F.normalize(
                    encode(torch.from_numpy(tokenizer(_prompts(c, spec["templates"]))), True).mean(
                        0
                    ),
                    dim=-1,
                )
                for c in spec["classnames"]
            ],
            dim=1,
        )
    assert w.shape == ref.shape == (cfg.model.embed_dim, len(spec["classnames"]))
    assert (w - ref).abs().max().item() < 1e-6


def test_two_rank_eval_equals_one_process(shapes, tmp_path):
    three = synth.make_split(tmp_path / "ev3", "ev3", 3, 3, seed=2)  # 36 samples, 3 shards
    paths, expected = [], []
    for i, shards in enumerate((shapes["eval"], three)):
        raw, cfg, tokenizer = _setup(shapes, tmp_path, shards)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        expected.append(evaluate(model, tokenizer, cfg, torch.device("cpu")))
        paths.append(tmp_path / f"cfg{i}.json")
        paths[-1].write_text(json.dumps(raw))
    # DataLoader workers decode in another order: the same metrics
    raw, cfg, tokenizer = _setup(shapes, tmp_path, three, **{"eval.num_workers": 2})
    torch.manual_seed(0)
    assert evaluate(build_model(cfg.model), tokenizer, cfg, torch.device("cpu")) == pytest.approx(
        expected[1], abs=1e-6
    )

    out = tmp_path / "eval.json"
    torchrun([str(Path(__file__).parent / "eval_worker.py"), str(out), *map(str, paths)])
    result = json.loads(out.read_text())
    assert result["world"] == 2
    for run, ref, n in zip(result["runs"], expected, (120, 36), strict=True):
        assert set(run["metrics"]) == set(ref)
        for k, v in ref.items():
            assert abs(run["metrics"][k] - v) < 1e-6, (k, run["metrics"][k], v)
        # the ranks split the images (zero-shot, then retrieval): each encoded a part, plus
        # one-image dummy batches while the other had more
        assert sum(run["rows"]) >= 2 * n and all(r < 2 * n for r in run["rows"]), run
    print(result["runs"][0]["metrics"])
