"""A small generated image-caption set: coloured shapes on noise, captions in English and German.

12 classes (4 colours x 3 shapes). Everything is generated here, so nothing is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metaclip.train.data import write_shard

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 20),
}
SHAPES = ("circle", "square", "triangle")
DE_COLOURS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"}
DE_SHAPES = {"circle": ("Kreis", "er"), "square": ("Quadrat", "es"), "triangle": ("Dreieck", "es")}
CLASSES = [(c, s) for c in COLOURS for s in SHAPES]
TEMPLATES = ["a photo of a {}.", "ein Bild: {}."]


def class_names() -> list[list[str]]:
    """Per class: its English and German name (both are used as prompts)."""
    out = []
    for c, s in CLASSES:
        noun, ending = DE_SHAPES[s]
        out.append([f"{c} {s}", f"{DE_COLOURS[c]}{ending} {noun}"])
    return out


def captions(c: str, s: str) -> list[str]:
    noun, ending = DE_SHAPES[s]
    adj = DE_COLOURS[c] + ending
    return [
        f"a {c} {s} on a noisy background",
        f"a photo of a {c} {s}.",
        f"ein {adj} {noun} vor Rauschen",
        f"ein Bild: {adj} {noun}.",
    ]


def draw(c: str, s: str, rng: np.random.Generator, size: int = 32) -> bytes:
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // 2 + 64
    img = Image.fromarray(noise)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 4, size // 2 - 2))
    cx, cy = (int(rng.integers(r, size - r)) for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    col = tuple(int(v) for v in np.clip(np.array(COLOURS[c]) + rng.integers(-20, 21, 3), 0, 255))
    if s == "circle":
        d.ellipse(box, fill=col)
    elif s == "square":
        d.rectangle(box, fill=col)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_split(
    out: Path, name: str, per_class: int, n_shards: int, seed: int, with_entries: bool = False
) -> str:
    """Write shards ``{name}-{i:03d}.tar``; returns the brace pattern."""
    rng = np.random.default_rng(seed)
    samples = []
    for label, (c, s) in enumerate(CLASSES):
        for i in range(per_class):
            meta = {"texts": captions(c, s), "label": label}
            if with_entries:  # entry ids: colour (0-3) and shape (4-6)
                meta["entry_ids"] = [list(COLOURS).index(c), 4 + SHAPES.index(s)]
            samples.append((f"{name}_{label:02d}_{i:04d}", draw(c, s, rng), "png", meta))
    order = rng.permutation(len(samples))
    samples = [samples[i] for i in order]
    out.mkdir(parents=True, exist_ok=True)
    for k in range(n_shards):
        write_shard(out / f"{name}-{k:03d}.tar", samples[k::n_shards])
    return str(out / f"{name}-{{000..{n_shards - 1:03d}}}.tar")


def make_corpus(out: Path) -> Path:
    """Caption text for tokenizer training."""
    lines = [t for c, s in CLASSES for t in captions(c, s)]
    lines += [n for ns in class_names() for n in ns]
    lines += [t.format(n) for ns in class_names() for n in ns for t in TEMPLATES]
    path = out / "corpus.txt"
    path.write_text("\n".join(lines * 3) + "\n")
    return path


def write_classnames(out: Path) -> Path:
    path = out / "classnames.json"
    path.write_text(json.dumps({"classnames": class_names(), "templates": TEMPLATES}))
    return path
