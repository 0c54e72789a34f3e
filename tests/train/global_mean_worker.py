"""Run under torchrun (CPU, gloo, 2 ranks): the caption loss and the masked-prediction
distance over ranks holding different counts (NaFlex images mask different numbers of
patches; captions differ in length). Writes the rank-averaged gradients as JSON."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from metaclip.train.decoder import caption_loss
from metaclip.train.siglip2 import _cosine_distance


def data(seed: int = 0):
    """The global batch: rank 0 holds rows [0, 2), rank 1 rows [2, 7) (unequal)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 6, 8, generator=g)  # [rows, tokens, width]
    tokens = torch.randint(1, 10, (7, 6), generator=g)
    tokens[0, 2:] = 0  # padding: rank 0 has few caption targets
    tokens[1, 1:] = 0
    mask = torch.rand(7, 6, generator=g) < 0.6
    mask[0, :] = False
    mask[0, 0] = True  # rank 0 masks one token, rank 1 many
    target = torch.randn(7, 6, 8, generator=g)
    return x, tokens, mask, target


def losses(w: torch.Tensor, x, tokens, mask, target) -> torch.Tensor:
    """Both losses through one shared weight ``w`` [8, 10]."""
    logits = x @ w  # [rows, tokens, 10]
    cap = caption_loss(logits, tokens, pad_id=0)
    y = x @ w[:, :8]
    return cap + _cosine_distance(y[mask], target[mask], None)


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x, tokens, mask, target = data()
    rows = slice(0, 2) if rank == 0 else slice(2, 7)
    w = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
    loss = losses(w, x[rows], tokens[rows], mask[rows], target[rows])
    loss.backward()
    grad = w.grad.clone()  # type: ignore[union-attr]
    dist.all_reduce(grad)
    grad /= dist.get_world_size()  # what FSDP does with the ranks' gradients
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"grad": grad.tolist()}, f)
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
