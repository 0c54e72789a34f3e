"""Config presets, files, overrides and errors."""

import json

import pytest
from click.testing import CliRunner

from metaclip.train.cli import cli
from metaclip.train.config import (
    ConfigError,
    config_from_dict,
    load_config,
    model_preset,
    preset_names,
)
from metaclip.train.model import build_model, forward_flops_per_pair

BASE = {"data": {"train_shards": "x.tar"}, "tokenizer": {"path": "sp.model"}}


def test_presets_build_and_match_published_sizes():
    assert len(preset_names()) == 24
    n = {}
    for name in ("ViT-B-32", "ViT-H-14", "ViT-H-14-worldwide", "ViT-bigG-14-worldwide-quickgelu"):
        m = build_model(model_preset(name), device="meta")  # no memory is allocated
        n[name] = sum(p.numel() for p in m.parameters())
    assert 986e6 < n["ViT-H-14"] < 987e6  # ~986M with the 49,408 vocabulary (trainer notes)
    extra = n["ViT-H-14-worldwide"] - n["ViT-H-14"]
    assert extra == (901_629 - 49_408) * 1024  # the multilingual text embedding
    big = model_preset("ViT-bigG-14-worldwide-quickgelu")
    assert big.quick_gelu and big.text.pool == "eos" and big.vision.width // big.vision.heads == 104
    vision, text = forward_flops_per_pair(model_preset("ViT-H-14"))
    assert vision / 1e9 == pytest.approx(334.6, abs=0.1) and text / 1e9 == pytest.approx(47.1, 0.1)


def test_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'steps = 10\n[model]\npreset = "ViT-B-16"\n[model.vision]\nlayers = 3\n'
        '[data]\ntrain_shards = "x.tar"\n[tokenizer]\npath = "sp.model"\n'
    )
    cfg = load_config(path, ["optim.lr=1e-3", "model.text.layers=2", "output_dir=runs/a"])
    assert cfg.steps == 10 and cfg.optim.lr == 1e-3 and cfg.output_dir == "runs/a"
    assert cfg.model.vision.layers == 3 and cfg.model.vision.patch_size == 16
    assert cfg.model.text.layers == 2 and cfg.model.embed_dim == 512
    res = CliRunner().invoke(cli, ["train", str(path), "--set", "seed=5", "--print-config"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["seed"] == 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "did you mean 'optim.lr'"),
        ("optim.lr=-1", "optim.lr must be a positive"),
        ("steps=ten", "steps must be int"),
        ("steps=true", "must not be a boolean"),
        ("model.preset=ViT-B-33", "did you mean 'ViT-B-32'"),
        ("model.vision.image_size=100", "multiple of patch_size"),
        ("model.text.width=100", "divisible by heads"),
        ("precision=fp8", "precision must be one of"),
        ("model.attention=flash", "model.attention must be one of"),
        ("tokenizer.path=''", "tokenizer.path"),
        ("stop_at=5000", "stop_at"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_configs_raise_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(BASE, [override])


def test_missing_sections_and_files(tmp_path):
    with pytest.raises(ConfigError, match=r"\[data\] section"):
        config_from_dict({})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "none.toml")])
    assert res.exit_code != 0
