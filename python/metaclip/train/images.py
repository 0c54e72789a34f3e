"""Image decode and transforms. Workers hand uint8 tensors to the trainer, which moves them
to the device and normalises there (4x less host-to-device traffic than float32).

JPEGs are decoded with PIL's draft mode: the DCT-domain downscale (1/2, 1/4, 1/8) to the
smallest size still covering the crop at the target resolution, the largest decode saving
for images several times the model's size (``bench/loader_bench.py`` measures it).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
STD = (0.26862954, 0.26130258, 0.27577711)
# Decoded pixels over this are not decoded (a 16k x 16k image): counted as too large.
MAX_PIXELS = 1 << 28


class BadImage(ValueError):
    """Image bytes that cannot be used; ``reason`` is ``bad_image`` or ``too_large``."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


def crop_box(
    w: int,
    h: int,
    size: int,
    rng: np.random.Generator | None,
    area: tuple[float, float] = (0.9, 1.0),
) -> tuple[float, float, float, float]:
    """Train (``rng``): RandomResizedCrop(scale 0.9-1, ratio 3/4-4/3); eval: the center
    square of the short side (resize short side + center crop). ``area``: the crop's
    share of the image's area (local crops for self-distillation use 0.05-0.4)."""
    if rng is not None:
        for _ in range(10):
            share = w * h * rng.uniform(*area)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = round((share * ratio) ** 0.5), round((share / ratio) ** 0.5)
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                return x0, y0, x0 + cw, y0 + ch
    s = min(w, h)
    x0, y0 = (w - s) // 2, (h - s) // 2
    return x0, y0, x0 + s, y0 + s


def decode(
    data: bytes,
    size: int,
    rng: np.random.Generator | None,
    area: tuple[float, float] = (0.9, 1.0),
) -> torch.Tensor:
    """``[3, size, size]`` uint8: decoded, cropped (see ``crop_box``) and resized (bicubic).
    Raises ``BadImage`` for bytes that are not a whole image, or too many pixels."""
    return decode_with(data, lambda w, h: (crop_box(w, h, size, rng, area), (size, size)))


def decode_with(
    data: bytes,
    plan: Callable[[int, int], tuple[tuple[float, float, float, float], tuple[int, int]]],
) -> torch.Tensor:
    """Decode, crop to ``plan(w, h)``'s box and resize (bicubic) to its ``(width, height)``:
    ``[3, height, width]`` uint8. Raises ``BadImage`` as :func:`decode` does."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage("too_large", f"{w}x{h} pixels")
            box, (out_w, out_h) = plan(w, h)
            if img.format == "JPEG":
                # the draft keeps at least the output's pixels across the crop
                scale = max(1, int(min((box[2] - box[0]) // out_w, (box[3] - box[1]) // out_h)))
                img.draft("RGB", (max(1, w // scale), max(1, h // scale)))
                fx, fy = img.size[0] / w, img.size[1] / h
                box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
            img = img.convert("RGB")
            img = img.resize((out_w, out_h), Image.Resampling.BICUBIC, box=box)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_large", str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # PIL's errors for bad bytes
        raise BadImage("bad_image", " ".join(str(e).split()) or type(e).__name__) from None
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (on the device) → float32 with the CLIP mean/std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
