"""NaFlex (SigLIP 2): images at their native aspect ratio, several sequence lengths, one model.

- :func:`naflex_grid`: the patch grid ``(gh, gw)`` with ``gh * gw <= seq_len`` for an image,
  its aspect ratio kept as well as whole patches allow; :func:`decode_native` resizes the
  image to ``(gh * p, gw * p)`` and :func:`patchify` cuts it into ``[gh * gw, 3 * p * p]``.
- :func:`pack`: images' patch sequences laid into rows of ``row_len`` tokens (next fit); each
  image attends only to itself (a block-diagonal mask) and is pooled on its own (its class
  token, or the MAP head over its tokens). :func:`encode_packed` runs the vision tower on it,
  with the learned square position grid resized per image (bicubic, antialiased shrinking).
- :func:`choose_seq_len`: the sequence length of a loader batch, from the seed and the
  stream's position, so a resumed run draws the same lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from metaclip.train.attention import BlockDiagonal, run_lengths
from metaclip.train.images import MEAN, STD, decode_with
from metaclip.train.siglip2 import resize_grid

if TYPE_CHECKING:
    from metaclip.train.model import VisionTransformer

NATIVE_SCALE = (0.9, 1.0)  # area share of the training crop (aspect ratio kept)


def naflex_grid(height: int, width: int, seq_len: int) -> tuple[int, int]:
    """The patch grid for an image of ``height x width`` and at most ``seq_len`` patches.

    As SigLIP 2's NaFlex: the largest scale ``s`` for which the scaled image, each side
    rounded up to whole patches, has at most ``seq_len`` of them. That largest ``s`` is a
    point where one side is exactly ``k`` patches, so those points are tried (exact integer
    arithmetic); gh and gw only grow with ``s``, so the most patches means the largest ``s``.
    """
    if height < 1 or width < 1 or seq_len < 1:
        raise ValueError(f"bad size {height}x{width} or seq_len {seq_len}")
    best = (1, 1)
    for k in range(1, seq_len + 1):
        for gh, gw in ((k, -(-width * k // height)), (-(-height * k // width), k)):
            if best[0] * best[1] < gh * gw <= seq_len:
                best = (gh, gw)
    return best


def _native_box(
    w: int, h: int, rng: np.random.Generator | None
) -> tuple[float, float, float, float]:
    """Training: a random crop of 90-100% of the area with the image's aspect ratio; eval:
    the whole image."""
    if rng is None:
        return 0, 0, w, h
    side = rng.uniform(*NATIVE_SCALE) ** 0.5
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return x0, y0, x0 + cw, y0 + ch


def decode_native(
    data: bytes, patch: int, seq_len: int, rng: np.random.Generator | None
) -> torch.Tensor:
    """``[3, gh * patch, gw * patch]`` uint8 with ``(gh, gw) = naflex_grid(...)`` of the
    (cropped) image. Raises ``images.BadImage`` for unusable bytes."""

    def plan(w: int, h: int):
        box = _native_box(w, h, rng)
        gh, gw = naflex_grid(round(box[3] - box[1]), round(box[2] - box[0]), seq_len)
        return box, (gw * patch, gh * patch)

    return decode_with(data, plan)


def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """``[C, gh * p, gw * p]`` -> ``[gh * gw, C * p * p]``, patches in row-major order, each
    flattened as (channel, row, column): the layout of the patch convolution's weight."""
    c, h, w = image.shape
    x = image.reshape(c, h // patch, patch, w // patch, patch)
    return x.permute(1, 3, 0, 2, 4).reshape((h // patch) * (w // patch), c * patch * patch)


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3 * p * p]`` patches -> float32 with the CLIP mean/std."""
    n = patches.shape[0]
    mean = torch.tensor(MEAN, device=patches.device).view(1, 3, 1)
    std = torch.tensor(STD, device=patches.device).view(1, 3, 1)
    x = (patches.float().view(n, 3, -1) / 255.0 - mean) / std
    return x.view(n, -1)


def choose_seq_len(seq_lens: Sequence[int], seed: int, epoch: int, stream: int, draw: int) -> int:
    """The sequence length of the batch a stream starts at this position (pass, draws)."""
    if len(seq_lens) == 1:
        return seq_lens[0]
    # the trailing 1 keeps these draws apart from the stream's shard coins
    rng = np.random.default_rng([seed, epoch, stream, draw, 1])
    return int(seq_lens[int(rng.integers(len(seq_lens)))])


@dataclass
class NaFlexBatch:
    """Images as packed patch rows: the input :func:`encode_packed` (and ``CLIP``) take.

    ``patches`` ``[N, 3 * p * p]`` (normalized) are the images' patches one image after
    another; ``grids`` their ``(gh, gw)``. Positions index the flattened ``[rows * row_len]``
    token slots: ``dest`` of each patch, ``cls_dest`` of each image's class token (None with
    MAP pooling), ``tok_index``/``tok_valid`` ``[B, max patches]`` each image's patch slots."""

    patches: torch.Tensor
    grids: list[tuple[int, int]]
    rows: int
    row_len: int
    segments: torch.Tensor  # [rows, row_len]: image index; padding -1 - row (its own block)
    seqlens: list[int]  # block lengths over the rows end to end (xformers)
    dest: torch.Tensor
    cls_dest: torch.Tensor | None
    tok_index: torch.Tensor
    tok_valid: torch.Tensor

    def __len__(self) -> int:
        return len(self.grids)

    def block_mask(self) -> BlockDiagonal:
        """The attention mask: each image (and each row's padding) attends only to itself."""
        return BlockDiagonal.from_segments(self.segments, self.seqlens)

    def to(self, device: torch.device | str) -> NaFlexBatch:
        move = {
            k: getattr(self, k).to(device, non_blocking=True)
            for k in ("patches", "segments", "dest", "tok_index", "tok_valid")
        }
        cls = None if self.cls_dest is None else self.cls_dest.to(device, non_blocking=True)
        return NaFlexBatch(
            grids=self.grids,
            rows=self.rows,
            row_len=self.row_len,
            seqlens=self.seqlens,
            cls_dest=cls,
            **move,
        )


def pack(
    patches: torch.Tensor, grids: Sequence[tuple[int, int]], row_len: int, cls: bool
) -> NaFlexBatch:
    """Lay each image's tokens (its class token first when ``cls``, then its patches) into
    rows of ``row_len``, in order, starting a new row when the next image does not fit."""
    grids = [(int(a), int(b)) for a, b in grids]
    sizes = [gh * gw for gh, gw in grids]
    if sum(sizes) != patches.shape[0]:
        raise ValueError(f"{patches.shape[0]} patches for grids totalling {sum(sizes)}")
    starts: list[tuple[int, int]] = []  # (row, offset) of each image's first token
    row, fill = 0, 0
    for n in sizes:
        if n + cls > row_len:
            raise ValueError(f"an image of {n} patches (+ class token) exceeds row_len {row_len}")
        if fill + n + cls > row_len:
            row, fill = row + 1, 0
        starts.append((row, fill))
        fill += n + cls
    rows = row + 1 if sizes else 0
    segments = torch.empty(rows, row_len, dtype=torch.long)
    for r in range(rows):
        segments[r] = -1 - r
    dest, cls_dest = [], []
    tok_index = torch.zeros(len(sizes), max(sizes, default=0), dtype=torch.long)
    tok_valid = torch.zeros(tok_index.shape, dtype=torch.bool)
    for i, ((r, off), n) in enumerate(zip(starts, sizes, strict=True)):
        segments[r, off : off + n + cls] = i
        first = r * row_len + off + cls
        if cls:
            cls_dest.append(first - 1)
        dest.append(torch.arange(first, first + n))
        tok_index[i, :n] = dest[-1]
        tok_valid[i, :n] = True
    return NaFlexBatch(
        patches=patches,
        grids=grids,
        rows=rows,
        row_len=row_len,
        segments=segments,
        seqlens=run_lengths(segments),  # padding is one block
        dest=torch.cat(dest) if dest else torch.zeros(0, dtype=torch.long),
        cls_dest=torch.tensor(cls_dest, dtype=torch.long) if cls else None,
        tok_index=tok_index,
        tok_valid=tok_valid,
    )


def batch_input(batch: dict, device: torch.device, cls: bool) -> NaFlexBatch:
    """A loader batch in NaFlex mode (uint8 ``patches``, ``grids``, ``seq_len``) as the
    model's input on ``device``: one row per ``seq_len`` patches (plus the class token)."""
    grids = [tuple(g) for g in batch["grids"].tolist()]
    packed = pack(batch["patches"], grids, int(batch["seq_len"]) + cls, cls).to(device)
    packed.patches = normalize_patches(packed.patches)
    return packed


def encode_packed(
    visual: VisionTransformer,
    batch: NaFlexBatch,
    mask: torch.Tensor | None = None,
    mask_token: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision tower on packed images: (pooled embeddings ``[B, embed]``, each image's
    normalized patch tokens ``[B, max patches, width]``, valid where ``batch.tok_valid``),
    as :meth:`VisionTransformer.forward_tokens` gives for each image alone (to float error).
    ``mask`` ``[B, max patches]`` replaces those patch inputs by ``mask_token``."""
    weight = visual.conv1.weight  # [width, 3, p, p]: the convolution as a matmul on patches
    x = batch.patches.to(weight.dtype) @ weight.flatten(1).t()
    if mask is not None:
        assert mask_token is not None
        x = torch.where(mask[batch.tok_valid][:, None], mask_token.to(x.dtype), x)
    width = x.shape[-1]
    pos = visual.positional_embedding.to(x.dtype)
    cls = visual.class_embedding
    grid_pos = pos if cls is None else pos[1:]
    resized = {g: resize_grid(grid_pos, visual.grid, g) for g in set(batch.grids)}
    x = x + torch.cat([resized[g] for g in batch.grids])
    flat = x.new_zeros(batch.rows * batch.row_len, width).index_put((batch.dest,), x)
    if cls is not None:
        assert batch.cls_dest is not None
        first = (cls.to(x.dtype) + pos[0]).expand(len(batch), width)
        flat = flat.index_put((batch.cls_dest,), first)
    x = visual.ln_pre(flat.view(batch.rows, batch.row_len, width))
    x = visual.transformer(x, batch.block_mask())
    x = visual.ln_post(x.to(visual.ln_post.weight.dtype)).view(-1, width)
    tokens = x[batch.tok_index]
    if cls is not None:
        return x[batch.cls_dest] @ visual.proj, tokens
    assert visual.attn_pool is not None
    return visual.attn_pool(tokens, batch.tok_valid) @ visual.proj, tokens
