"""NaFlex: native aspect ratio grids, packed sequences, the loader's mode, a training run."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from metaclip.train.config import (
    ConfigError,
    DecoderConfig,
    DistillConfig,
    config_from_dict,
    load_config,
    model_preset,
)
from metaclip.train.data import ShardStream, expand_shards
from metaclip.train.images import decode, normalize
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model
from metaclip.train.naflex import (
    batch_input,
    decode_native,
    naflex_grid,
    normalize_patches,
    pack,
    patchify,
)
from metaclip.train.siglip2 import draw_aux
from metaclip.train.train import forward_backward, run


def _tiny(pool: str):
    cfg = model_preset("test-tiny")  # 32 px, patch 8: a 4 x 4 grid
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, pool=pool))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _png(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _reference_grid(h: int, w: int, seq_len: int) -> tuple[int, int]:
    """The statement: the (gh, gw) = (ceil(h*s), ceil(w*s)) with the most patches <= seq_len
    over all scales s > 0. A pair is reachable iff the two intervals of s overlap."""
    best = (0, 0)
    for gh in range(1, seq_len + 1):
        for gw in range(1, seq_len // gh + 1):
            lo, hi = max((gh - 1) / h, (gw - 1) / w), min(gh / h, gw / w)
            if lo < hi and gh * gw > best[0] * best[1]:
                best = (gh, gw)
    return best


# --- grids ---------------------------------------------------------------------------------


def test_grid_keeps_the_aspect_ratio_within_the_length():
    assert naflex_grid(224, 224, 256) == (16, 16)  # square: the model's grid at B/16
    assert naflex_grid(100, 300, 256) == (9, 27)
    assert naflex_grid(300, 100, 576) == (41, 14)
    assert naflex_grid(1, 1000, 16) == (1, 16)  # extreme ratios keep one row
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(x) for x in rng.integers(1, 800, 2))
        seq_len = int(rng.choice([4, 9, 16, 30, 64]))
        gh, gw = naflex_grid(h, w, seq_len)
        assert (gh, gw) == _reference_grid(h, w, seq_len), (h, w, seq_len)
        assert gh * gw <= seq_len
        if min(gh, gw) >= 4:  # away from one-patch rounding, the ratio is close
            assert abs(math.log(gw / gh) - math.log(w / h)) < math.log(1.5)


def test_non_square_image_gets_the_aspect_preserving_grid():
    image = decode_native(_png(300, 100), 16, 256, None)
    assert image.shape == (3, 9 * 16, 27 * 16) and image.dtype == torch.uint8
    patches = patchify(image, 16)
    assert patches.shape == (9 * 27, 3 * 16 * 16)
    # patch (row 1, column 2) holds those pixels, channel by channel
    torch.testing.assert_close(patches[27 + 2].view(3, 16, 16), image[:, 16:32, 32:48])
    # a training crop keeps the aspect ratio too
    crop = decode_native(_png(300, 100), 16, 256, np.random.default_rng(1))
    assert crop.shape[1] * 3 == crop.shape[2] and crop.shape[1] * crop.shape[2] <= 256 * 256


# --- the model -----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "map"])
def test_square_images_at_the_model_grid_equal_the_fixed_resolution_model(pool):
    model = _tiny(pool)
    data = [_png(32, 32, seed) for seed in range(3)]
    native = [decode_native(d, 8, 16, None) for d in data]
    fixed = torch.stack([decode(d, 32, None) for d in data])
    assert torch.equal(torch.stack(native), fixed)  # the same pixels
    batch = {
        "patches": torch.cat([patchify(x, 8) for x in native]),
        "grids": torch.tensor([[4, 4]] * 3),
        "seq_len": 16,
    }
    with torch.no_grad():
        ref = model.encode_image(normalize(fixed))
        out = model.encode_image(batch_input(batch, torch.device("cpu"), pool == "cls"))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "map"])
def test_packed_images_equal_one_image_at_a_time(pool):
    model = _tiny(pool)
    cls = pool == "cls"
    grids = [(2, 3), (4, 4), (1, 5), (3, 2), (6, 2)]
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, gh * 8, gw * 8, generator=g) for gh, gw in grids]
    patches = [patchify(x, 8) for x in images]
    packed = pack(torch.cat(patches), grids, 30, cls)
    assert packed.rows == 2  # three images in the first row, two in the second
    assert sum(packed.seqlens) == packed.rows * packed.row_len
    with torch.no_grad():
        out = model.encode_image(packed)
        alone = [model.visual.forward_tokens(x[None])[0] for x in images]
        single = [
            model.encode_image(pack(p, [gr], 17, cls)) for p, gr in zip(patches, grids, strict=True)
        ]
    torch.testing.assert_close(out, torch.cat(alone), rtol=0, atol=1e-5)
    torch.testing.assert_close(out, torch.cat(single), rtol=0, atol=1e-5)


def test_packed_gradients_stay_within_each_image():
    model = _tiny("map")
    grids = [(2, 2), (3, 3)]
    patches = torch.randn(13, 3 * 64, requires_grad=True)
    out = model.encode_image(pack(patches, grids, 13, False))
    (grad,) = torch.autograd.grad(out[0].sum(), patches)
    assert grad[:4].abs().sum() > 0 and grad[4:].abs().sum() == 0
    model.set_grad_checkpointing(True, every=1)  # the mask reaches recomputed blocks too
    out = model.encode_image(pack(patches, grids, 13, False))
    (again,) = torch.autograd.grad(out[0].sum(), patches)
    torch.testing.assert_close(again, grad)


def test_accumulation_over_naflex_micro_batches_gives_the_packed_batch_gradients():
    """GradCache over two micro-batches of different lengths == one packed batch."""
    torch.manual_seed(0)
    full = build_model(dataclasses.replace(model_preset("test-tiny"), loss="sigmoid"))
    accum = copy.deepcopy(full)
    g = torch.Generator().manual_seed(1)
    grids = [(2, 2), (1, 3), (2, 2), (3, 3), (3, 2), (3, 3)]
    patches = torch.randn(sum(a * b for a, b in grids), 3 * 64, generator=g)
    tokens = torch.randint(1, 999, (6, 16), generator=g)
    tokens[:, 10] = 999
    clip_loss(full(pack(patches, grids, 40, True), tokens), "sigmoid").backward()
    cut = 4 + 3 + 4
    micro = [
        (pack(patches[:cut], grids[:3], 5, True), tokens[:3]),
        (pack(patches[cut:], grids[3:], 10, True), tokens[3:]),
    ]
    forward_backward(accum, micro, "sigmoid")
    ref = dict(full.named_parameters())
    for name, p in accum.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref[name].grad, rtol=0, atol=1e-5)


def _siglip2(pool: str):
    """test-tiny with the decoder and distillation, a teacher apart from the student and a
    decoder head that is not 0."""
    cfg = model_preset("test-tiny")
    cfg = dataclasses.replace(
        cfg,
        loss="sigmoid",
        vision=dataclasses.replace(cfg.vision, pool=pool),
        decoder=DecoderConfig(layers=2, width=32, heads=2, parallel_prob=0.5),
        distill=DistillConfig(start_fraction=0.5),
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.decoder.head.weight.normal_(std=0.3)
    return model


@pytest.mark.parametrize("pool", ["cls", "map"])
def test_aux_losses_on_square_images_equal_the_fixed_resolution_model(pool):
    """Caption, distillation and masked losses of packed square images at the model's grid
    are the fixed-resolution model's; the per-image mask draw is the square one."""
    model = _siglip2(pool)
    data = [_png(32, 32, seed) for seed in range(3)]
    fixed = normalize(torch.stack([decode(d, 32, None) for d in data]))
    batch = {
        "patches": torch.cat([patchify(decode_native(d, 8, 16, None), 8) for d in data]),
        "grids": torch.tensor([[4, 4]] * 3),
        "seq_len": 16,
    }
    packed = batch_input(batch, torch.device("cpu"), pool == "cls")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 999, (3, 16), generator=g)
    tokens[:, 12:] = 0
    local = torch.randn(3, 2, 3, 16, 16, generator=g)
    out = {}
    for name, images, patches in (("fixed", fixed, None), ("packed", packed, torch.full((3,), 16))):
        aux = draw_aux(model, 3, True, torch.Generator().manual_seed(1), patches)
        aux.local_images = local
        with torch.no_grad():
            out[name] = (aux, model(images, tokens, aux))
    (aux_f, ref), (aux_p, got) = out["fixed"], out["packed"]
    assert torch.equal(aux_f.mask, aux_p.mask) and torch.equal(aux_f.parallel, aux_p.parallel)
    assert aux_f.mask.sum(1).tolist() == [8, 8, 8]  # round(0.5 * 16) patches each
    assert set(got[4]) == {"caption", "distill", "masked"}
    for k, v in ref[4].items():
        torch.testing.assert_close(got[4][k], v, rtol=0, atol=1e-5, msg=k)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "map"])
def test_packed_decoder_and_masked_tokens_equal_one_image_at_a_time(pool):
    model = _siglip2(pool)
    grids = [(2, 3), (4, 4), (1, 5), (3, 2), (6, 2)]
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, gh * 8, gw * 8, generator=g) for gh, gw in grids]
    packed = pack(torch.cat([patchify(x, 8) for x in images]), grids, 30, pool == "cls")
    tokens = torch.randint(1, 999, (5, 16), generator=g)
    sizes = torch.tensor([a * b for a, b in grids])
    mask = draw_aux(model, 5, True, g, sizes).mask
    assert mask is not None and mask.shape == (5, 16)
    assert mask.sum(1).tolist() == [3, 8, 2, 3, 6]  # round(0.5 * n), as Python rounds
    assert not (mask & ~packed.tok_valid).any()
    with torch.no_grad():
        _, vtokens = model.visual.forward_tokens(packed)
        logits = model.decoder(vtokens, tokens, None, packed.tok_valid)
        _, masked = model.visual.forward_tokens(packed, mask, model.mask_token)
        for i, (x, n) in enumerate(zip(images, sizes.tolist(), strict=True)):
            _, alone = model.visual.forward_tokens(x[None])
            torch.testing.assert_close(vtokens[i, :n], alone[0], rtol=0, atol=1e-5)
            own = model.decoder(alone, tokens[i : i + 1])
            torch.testing.assert_close(logits[i], own[0], rtol=1e-4, atol=1e-5)
            _, m = model.visual.forward_tokens(x[None], mask[i : i + 1, :n], model.mask_token)
            torch.testing.assert_close(masked[i, :n], m[0], rtol=0, atol=1e-5)
            assert not torch.allclose(m[0], alone[0], atol=1e-3)  # the mask did something


def test_normalize_patches_matches_image_normalize():
    image = decode(_png(32, 32), 32, None)
    expect = patchify(normalize(image[None])[0], 8)
    torch.testing.assert_close(normalize_patches(patchify(image, 8)), expect)


# --- the loader ----------------------------------------------------------------------------


class _Tok:
    def __call__(self, texts):
        return np.zeros((len(texts), 4), dtype=np.int64)


def _naflex_stream(pattern, state=None, seq_lens=(4, 9, 16)):
    return ShardStream(
        expand_shards(pattern),
        rank=0,
        world=1,
        num_workers=0,
        batch_size=4,
        tokenizer=_Tok(),
        image_size=32,
        seed=5,
        state=state,
        streams=1,
        naflex_seq_lens=seq_lens,
        patch_size=8,
    )


def _take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_loader_batches_are_grouped_by_a_seeded_length(shapes):
    batches = _take(_naflex_stream(shapes["train"]), 12)
    lens = [b["seq_len"] for b in batches]
    assert set(lens) <= {4, 9, 16} and len(set(lens)) > 1
    for b in batches:
        assert "images" not in b and b["patches"].dtype == torch.uint8
        side = math.isqrt(b["seq_len"])  # the shapes are square: a full square grid
        assert b["grids"].tolist() == [[side, side]] * 4
        assert b["patches"].shape == (4 * side * side, 3 * 8 * 8)
    again = _take(_naflex_stream(shapes["train"]), 12)
    assert [b["seq_len"] for b in again] == lens
    assert all(torch.equal(a["patches"], b["patches"]) for a, b in zip(batches, again, strict=True))
    # a resume from batch 5's position draws the lengths (and patches) that followed it
    state = {"streams": {"0": batches[5]["position"]}}
    resumed = _take(_naflex_stream(shapes["train"], state), 6)
    assert [b["seq_len"] for b in resumed] == lens[6:]
    assert all(
        torch.equal(a["patches"], b["patches"]) for a, b in zip(batches[6:], resumed, strict=True)
    )


def test_default_loader_is_unchanged(shapes):
    (batch,) = _take(_naflex_stream(shapes["train"], seq_lens=()), 1)
    assert batch["images"].shape == (4, 3, 32, 32) and "patches" not in batch


# --- config and training -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"data.naflex_seq_lens": []}, "non-empty"),
        ({"data.naflex_seq_lens": [16, 0]}, ">= 1"),
        ({"data.naflex_seq_lens": 16}, "list of int"),
        ({"data.naflex_seq_lens": [16], "compile": True}, "every packing would recompile"),
    ],
)
def test_bad_naflex_values_are_config_errors(tmp_path, over, match):
    raw = tiny_config({"train": "x.tar", "tokenizer": "sp.model"}, tmp_path, **over)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_example_config_naflex_overrides(shapes):
    """The overrides the SigLIP 2 example documents for NaFlex give a valid config."""
    example = Path(__file__).parents[2] / "docs/examples/siglip2-b16.toml"
    lines = [x for x in example.read_text().splitlines() if x.startswith("#   --set")]
    over = [m.strip("'") for line in lines for m in shlex.split(line[1:])[1::2]]
    assert len(over) == 1
    cfg = load_config(example, [*over, f"data.train_shards={shapes['train']}"])
    assert cfg.data.naflex_seq_lens == [256, 576, 1024] and cfg.model.vision.pool == "map"
    assert cfg.model.decoder.layers > 0 and cfg.model.distill.enabled and cfg.data.local_crops
    assert naflex_grid(480, 640, 256) == (14, 18)  # a 4:3 photo: 252 patches


def test_naflex_training_loss_is_finite_and_decreases(shapes, tmp_path):
    steps = 40
    cfg = tiny_config(
        shapes,
        tmp_path,
        steps=steps,
        export=False,
        **{
            "model.loss": "sigmoid",
            "model.vision.pool": "map",
            "data.naflex_seq_lens": [4, 9, 16],
            "data.num_workers": 0,
            "optim.lr": 4e-3,
            "optim.warmup_steps": 5,
        },
    )
    summary = run(config_from_dict(cfg))
    assert summary["step"] == steps
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    print(f"NaFlex loss: first 8 steps {first:.3f}, last 8 {last:.3f}")
    assert last < 0.8 * first


def test_naflex_training_with_decoder_distillation_and_local_crops(shapes, tmp_path):
    """train_step on NaFlex loader batches (with local crops) and every auxiliary loss:
    each loss on a held-out packed batch goes down."""
    from metaclip.train.images import normalize
    from metaclip.train.siglip2 import aux_loss
    from metaclip.train.tokenizer import build_tokenizer
    from metaclip.train.train import build_optimizer, lr_lambda, train_step

    over = {"model.loss": "sigmoid", "model.vision.pool": "map", "model.decoder.layers": 1}
    over |= {"model.decoder.width": 64, "model.decoder.heads": 4}
    over |= {"model.distill.start_fraction": 1.0, "data.local_crops": 2}
    over |= {"data.local_crop_size": 16, "data.naflex_seq_lens": [4, 9, 16], "optim.lr": 2e-3}
    cfg = config_from_dict(tiny_config(shapes, tmp_path, steps=60, **over))
    tok = build_tokenizer(cfg.tokenizer, 16)
    stream = ShardStream(
        expand_shards(shapes["train"]),
        rank=0,
        world=1,
        num_workers=0,
        batch_size=32,
        tokenizer=tok,
        image_size=32,
        seed=0,
        local_crops=2,
        local_crop_size=16,
        naflex_seq_lens=[4, 9, 16],
        patch_size=8,
    )
    it = iter(stream)
    held = next(it)
    assert held["local_images"].shape == (32, 2, 3, 16, 16) and "patches" in held
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optim = build_optimizer(model, cfg.optim, torch.device("cpu"))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(2, cfg.steps, 0.0))

    @torch.no_grad()
    def losses() -> dict[str, float]:
        images = batch_input(held, torch.device("cpu"), cls=False)
        gen = torch.Generator().manual_seed(123)
        aux = draw_aux(model, 32, True, gen, images.tok_valid.sum(1))
        aux.local_images = normalize(held["local_images"])
        img, txt, scale, bias, extra = model(images, held["tokens"], aux)
        out = {k: v.item() for k, v in extra.items()}
        out["sigmoid"] = clip_loss((img, txt, scale, bias), "sigmoid").item()
        out["total"] = out["sigmoid"] + aux_loss(extra, cfg.loss).item()
        return out

    before = losses()
    for _ in range(cfg.steps):
        train_step(model, [next(it)], optim, sched, cfg, torch.device("cpu"))
    after = losses()
    print(before, after)
    assert set(after) == {"sigmoid", "caption", "distill", "masked", "total"}
    for k in after:
        assert after[k] < before[k], (k, before, after)
