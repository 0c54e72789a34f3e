"""init_from: start from released open_clip weights (a state dict or a training checkpoint),
with the vision position embedding resized when the image size differs."""

import dataclasses

import pytest
import torch
from conftest import tiny_config

from metaclip.train.checkpoint import load_init_from
from metaclip.train.config import ConfigError, VisionConfig, config_from_dict, model_preset
from metaclip.train.model import build_model, resize_pos_embed
from metaclip.train.train import run

open_clip = pytest.importorskip("open_clip")


def _theirs(image_size: int = 32):
    """open_clip's CLIP in the test-tiny shape (a custom model config, no download)."""
    torch.manual_seed(1)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=image_size, patch_size=8, width=64, layers=2, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=1000, width=64, heads=4, layers=2),
    ).eval()


def _ours(image_size: int = 32):
    cfg = model_preset("test-tiny")
    vision = VisionConfig(image_size=image_size, patch_size=8, width=64, layers=2, heads=4)
    torch.manual_seed(2)  # not open_clip's weights until loaded
    return build_model(dataclasses.replace(cfg, vision=vision)).eval()


def test_init_from_state_dict_and_checkpoint_match_open_clip(tmp_path):
    theirs = _theirs()
    plain = tmp_path / "open_clip_model.pt"
    torch.save(theirs.state_dict(), plain)
    ckpt = tmp_path / "epoch_1.pt"  # what open_clip's training writes (DDP names)
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": state}, ckpt)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    tokens = torch.randint(1, 998, (3, 16), generator=g)
    tokens[:, 7] = 999  # argmax pooling: the EOT has the largest id
    with torch.no_grad():
        ref_img, ref_txt = theirs.encode_image(images), theirs.encode_text(tokens)
    for path in (plain, ckpt):
        ours = _ours()
        with torch.no_grad():
            assert (ours.encode_image(images) - ref_img).abs().max() > 1e-2  # not yet loaded
        load_init_from(ours, path)
        with torch.no_grad():
            assert (ours.encode_image(images) - ref_img).abs().max().item() < 1e-5
            assert (ours.encode_text(tokens) - ref_txt).abs().max().item() < 1e-5
        assert ours.logit_scale.item() == pytest.approx(theirs.logit_scale.item())


def test_resized_position_embedding_tracks_the_original(tmp_path):
    # as 224 -> 378 px at patch 14: a 16 x 16 grid becomes 27 x 27
    theirs = _theirs(image_size=128)
    u = (torch.arange(16) + 0.5) / 16  # patch centers in [0, 1]
    smooth = torch.sin(2 * u)[:, None] + torch.cos(2 * u)[None, :]
    scale = torch.linspace(0.5, 1.5, 64)  # per channel
    with torch.no_grad():
        pe = theirs.visual.positional_embedding
        pe[1:] = smooth.reshape(256, 1) * scale
    path = tmp_path / "m.pt"
    torch.save(theirs.state_dict(), path)

    ours = _ours(image_size=216)
    load_init_from(ours, path)
    new = ours.visual.positional_embedding.detach()
    assert new.shape == (1 + 27 * 27, 64)
    assert torch.equal(new[0], pe[0])  # the class token is kept as it is
    v = (torch.arange(27) + 0.5) / 27
    want = torch.sin(2 * v)[:, None] + torch.cos(2 * v)[None, :]
    got = new[1:].reshape(27, 27, 64) / scale
    inner = slice(6, 21)  # away from the border, where bicubic extrapolates flat
    assert (got[inner, inner] - want[inner, inner, None]).abs().max().item() < 0.02
    assert (got - want[..., None]).abs().max().item() < 0.05
    with torch.no_grad():  # the rest loaded as is, and the model runs at 216 px
        assert torch.equal(ours.visual.proj, theirs.visual.proj)
        assert ours.encode_image(torch.randn(1, 3, 216, 216)).shape == (1, 32)

    small = resize_pos_embed(pe.detach(), 1 + 8 * 8)  # shrinking: antialiased
    assert small.shape == (65, 64) and torch.equal(small[0], pe[0])
    w = (torch.arange(8) + 0.5) / 8
    want = torch.sin(2 * w)[:, None] + torch.cos(2 * w)[None, :]
    assert (small[1:].reshape(8, 8, 64) / scale - want[..., None]).abs()[2:6, 2:6].max() < 0.02


def test_init_from_errors(tmp_path):
    ours = _ours()
    with pytest.raises(ConfigError, match="does not exist"):
        load_init_from(ours, tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        load_init_from(ours, tmp_path / "junk.pt")
    state = _theirs().state_dict()
    state["positional_embedding"] = state["positional_embedding"][:8]  # context 8, not 16
    torch.save(state, tmp_path / "ctx.pt")
    with pytest.raises(ConfigError, match="positional_embedding"):
        load_init_from(ours, tmp_path / "ctx.pt")
    with pytest.raises(ConfigError, match="square"):
        resize_pos_embed(torch.zeros(11, 4), 17)


def test_training_starts_from_init_from(tmp_path, shapes):
    theirs = _theirs()
    path = tmp_path / "released.pt"
    torch.save(theirs.state_dict(), path)
    out = tmp_path / "run"
    # one step at a vanishing learning rate: the exported weights are still the released ones
    raw = tiny_config(shapes, out, steps=1, init_from=str(path), **{"optim.lr": 1e-12})
    run(config_from_dict(raw))
    exported = torch.load(out / "open_clip_model.pt", weights_only=True)
    ref = theirs.state_dict()
    diff = max((exported[k] - ref[k]).abs().max().item() for k in exported)
    assert set(exported) == set(ref) - {"attn_mask"} and diff < 1e-6
