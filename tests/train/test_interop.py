"""open_clip interop: a randomly built open_clip model loads into ours with matching outputs,
and our consolidated export loads back into open_clip (no download: pretrained=None)."""

import dataclasses

import pytest
import torch

from metaclip.train.checkpoint import from_open_clip, load_open_clip_into, to_open_clip
from metaclip.train.config import TextConfig, VisionConfig, model_preset
from metaclip.train.model import build_model

open_clip = pytest.importorskip("open_clip")


def _compare(ours, theirs, images, tokens):
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        di = (ours.encode_image(images) - theirs.encode_image(images)).abs().max().item()
        dt = (ours.encode_text(tokens) - theirs.encode_text(tokens)).abs().max().item()
    return di, dt


def test_open_clip_vit_b32_roundtrip():
    torch.manual_seed(0)
    theirs = open_clip.create_model("ViT-B-32", pretrained=None)
    ours = build_model(model_preset("ViT-B-32"))
    load_open_clip_into(ours, theirs.state_dict())
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 224, 224, generator=g)
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat", "ein Hund im Schnee"])
    di, dt = _compare(ours, theirs, images, tokens)
    print(f"open_clip -> ours: image {di:.2e}, text {dt:.2e}")
    assert di < 1e-5 and dt < 1e-5
    assert ours.logit_scale.shape == (1,) and theirs.logit_scale.shape == ()
    assert torch.equal(ours.logit_scale.reshape(()), theirs.logit_scale)

    # export: perturb ours so the check cannot pass by leaving open_clip untouched
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.01 * torch.randn_like(p))
    exported = to_open_clip(ours.state_dict())
    fresh = open_clip.create_model("ViT-B-32", pretrained=None)
    fresh.load_state_dict(exported, strict=True)
    di, dt = _compare(ours, fresh, images, tokens)
    print(f"ours -> open_clip: image {di:.2e}, text {dt:.2e}")
    assert di < 1e-5 and dt < 1e-5


def test_eos_pooling_quickgelu_model_matches_open_clip():
    """A small SentencePiece-style text tower (EOS pooling, pad 1, eos 2) with QuickGELU."""
    vision = dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16)
    text = dict(
        context_length=16,
        vocab_size=500,
        width=64,
        heads=4,
        layers=2,
        pool_type="eos",
        eos_id=2,
        pad_id=1,
    )
    torch.manual_seed(0)
    theirs = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    cfg = dataclasses.replace(
        model_preset("test-tiny"),
        embed_dim=32,
        quick_gelu=True,
        vision=VisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=4),
        text=TextConfig(
            context_length=16,
            vocab_size=500,
            width=64,
            heads=4,
            layers=2,
            pool="eos",
            eos_id=2,
            pad_id=1,
        ),
    )
    ours = build_model(cfg)
    load_open_clip_into(ours, theirs.state_dict())
    tokens = torch.randint(3, 500, (4, 16))
    tokens[:, 9:] = 1
    tokens[:, 8] = 2
    images = torch.randn(4, 3, 32, 32)
    di, dt = _compare(ours, theirs, images, tokens)
    assert di < 1e-5 and dt < 1e-5
    # EOS pooling + causal mask: what follows the EOS cannot change the text embedding
    other = tokens.clone()
    other[:, 9:] = torch.randint(3, 500, (4, 7))
    with torch.no_grad():
        assert torch.allclose(ours.encode_text(tokens), ours.encode_text(other), atol=1e-6)


def test_import_rejects_a_mismatched_state_dict():
    ours = build_model(model_preset("test-tiny"))
    state = to_open_clip(ours.state_dict())
    state.pop("ln_final.weight")
    with pytest.raises(KeyError, match=r"ln_final\.weight"):
        load_open_clip_into(ours, state)
    assert "attn_mask" not in from_open_clip({"attn_mask": torch.zeros(2, 2)})
