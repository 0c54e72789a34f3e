"""What SigLIP 2's options cost: measured step time at a small size on CPU (ratios to the
sigmoid/cls baseline in the same run; the distillation phase is on), and forward FLOPs per pair
estimated from the shapes at any preset (matmuls + attention, as ``forward_flops_per_pair``).

    python bench/siglip2_cost.py                  # small model on CPU + the B/16 estimate
    python bench/siglip2_cost.py --steps 5 --preset ViT-B-16
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from metaclip.train.config import (
    DecoderConfig,
    DistillConfig,
    LossConfig,
    ModelConfig,
    model_preset,
)
from metaclip.train.loss import clip_loss
from metaclip.train.model import _tower_flops, build_model, forward_flops_per_pair
from metaclip.train.siglip2 import aux_loss, draw_aux


def variant(cfg: ModelConfig, name: str, dec: DecoderConfig) -> ModelConfig:
    cfg = dataclasses.replace(cfg, loss="sigmoid")
    if name != "base":
        cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, pool="map"))
    if name in ("+decoder", "+distill"):
        cfg = dataclasses.replace(cfg, decoder=dec)
    if name == "+distill":
        cfg = dataclasses.replace(cfg, distill=DistillConfig(start_fraction=0.2))
    return cfg


def flops(cfg: ModelConfig, crops: int, crop: int) -> dict[str, float]:
    """Forward FLOPs per pair of each part (the teacher's forward has no backward)."""
    v, t, d = cfg.vision, cfg.text, cfg.decoder
    vis, txt = forward_flops_per_pair(cfg)
    patches, w = (v.image_size // v.patch_size) ** 2, v.width
    out = {"vision": vis, "text": txt}
    if v.pool == "map":
        hidden = int(w * v.mlp_ratio)
        out["map_head"] = (
            2 * patches * 2 * w * w + 4 * patches * w + 2 * (2 * w * w + 2 * w * hidden)
        )
    if d.layers:
        ctx = t.context_length
        per = _tower_flops(ctx, d.width, 1, d.mlp_ratio)
        per += 2 * ctx * 2 * d.width**2 + 2 * patches * 2 * d.width**2 + 4 * ctx * patches * d.width
        out["decoder"] = (
            d.layers * per + 2 * patches * w * d.width + 2 * ctx * d.width * t.vocab_size
        )
    if cfg.distill.enabled:
        small = dataclasses.replace(v, image_size=crop)
        local, _ = forward_flops_per_pair(dataclasses.replace(cfg, vision=small))
        out["teacher (no grad)"] = vis
        out["masked student"] = vis
        out["local crops"] = crops * local
    return out


def train_flops(parts: dict[str, float]) -> float:
    return sum(f if k == "teacher (no grad)" else 3 * f for k, f in parts.items())


def measure(cfg: ModelConfig, steps: int, batch: int, crops: int, crop: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    images = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = torch.randint(4, cfg.text.vocab_size, (batch, cfg.text.context_length))
    weights = LossConfig(caption_weight=1, distill_weight=1, masked_weight=0.25)
    aux = draw_aux(model, batch, cfg.distill.enabled, torch.Generator().manual_seed(0))
    aux.local_images = torch.randn(batch, crops, 3, crop, crop)
    use_aux = cfg.decoder.layers > 0 or cfg.distill.enabled

    def step() -> None:
        opt.zero_grad()
        out = model(images, tokens, aux if use_aux else None)
        loss = clip_loss(out[:4], "sigmoid")
        if use_aux:
            loss = loss + aux_loss(out[4], weights)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--preset", default="ViT-B-16", help="for the FLOP estimate")
    args = ap.parse_args()
    small = model_preset("test-tiny")
    small = dataclasses.replace(
        small,
        vision=dataclasses.replace(small.vision, image_size=64, width=128, heads=4, layers=4),
        text=dataclasses.replace(small.text, width=128, layers=4),
    )
    small_dec = DecoderConfig(layers=2, width=128, heads=4, parallel_prob=0.5)
    names = ["base", "+map", "+decoder", "+distill"]
    print(f"measured on CPU, {small.vision.image_size}px/patch 8, width 128, batch {args.batch}")
    print(f"{'variant':<10} {'params M':>9} {'s/step':>8} {'ratio':>6}")
    base_t = None
    for name in names:
        cfg = variant(small, name, small_dec)
        n = sum(p.numel() for p in build_model(cfg, "meta").parameters()) / 1e6
        dt = measure(cfg, args.steps, args.batch, 2, 32)
        base_t = base_t or dt
        print(f"{name:<10} {n:>9.2f} {dt:>8.3f} {dt / base_t:>6.2f}")
    big = model_preset(args.preset)
    big_dec = DecoderConfig(layers=6, width=512, heads=8)
    print(f"\nestimated at {args.preset} (2 local crops at 96 px), training GFLOP per pair")
    base_f = None
    for name in names:
        cfg = variant(big, name, big_dec)
        parts = flops(cfg, 2, 96)
        total = train_flops(parts) / 1e9
        base_f = base_f or total
        n = sum(p.numel() for p in build_model(cfg, "meta").parameters()) / 1e6
        detail = ", ".join(
            f"{k} {v / 1e9:.1f}" for k, v in parts.items() if k not in ("vision", "text")
        )
        print(f"{name:<10} {n:>8.1f}M {total:>7.1f} x{total / base_f:.2f}  {detail}")


if __name__ == "__main__":
    main()
