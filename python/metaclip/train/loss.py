"""Contrastive (CLIP) and sigmoid (SigLIP) losses with "local loss + gather with grad".

Each rank all-gathers the features of every rank *with* gradient, scores only its own rows
against all columns, and takes the mean over its rows. Averaging the ranks' gradients (as
FSDP does) then gives exactly the gradient of the loss over the global batch.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)


def global_mean(total: torch.Tensor, count, group=None) -> torch.Tensor:
    """This rank's share of a mean over the global batch: its ``total`` over the global
    ``count`` (summed over ranks) times the world size. The mean of the ranks' gradients
    (what FSDP gives) is then the gradient of the global mean, whatever each rank's count
    (NaFlex images mask different numbers of patches, captions have different lengths)."""
    count = torch.as_tensor(count, dtype=torch.float32, device=total.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        count = count.detach().clone()
        dist.all_reduce(count, group=group)
        count = count / dist.get_world_size(group)
    return total / count.clamp_min(1.0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient for the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        group = ctx.group
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        grad = grad.contiguous()
        n = grad.shape[0] // world
        if dist.get_backend(group) == "nccl":
            out = grad.new_empty((n, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, group=group)
            return out, None
        dist.all_reduce(grad, group=group)  # gloo has no reduce_scatter
        return grad[rank * n : (rank + 1) * n].clone(), None


def _distributed(group, local: bool) -> bool:
    if local or not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


def gather_with_grad(x: torch.Tensor, group=None, local: bool = False) -> torch.Tensor:
    """All ranks' rows of ``x`` (gradient flows back to the owners); ``x`` when not distributed."""
    return _GatherWithGrad.apply(x, group) if _distributed(group, local) else x


def _offset(n: int, group, local: bool) -> int:
    return dist.get_rank(group) * n if _distributed(group, local) else 0


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, group=None, local: bool = False
) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch; ``scale`` is ``exp(logit_scale)``, shape [1].

    ``local=True`` scores only this process's batch (no collectives)."""
    img, txt, scale = img.float(), txt.float(), scale.float()  # fp32 logits, as under AMP
    all_img, all_txt = gather_with_grad(img, group, local), gather_with_grad(txt, group, local)
    n = img.shape[0]
    labels = torch.arange(n, device=img.device) + _offset(n, group, local)
    logits_per_image = scale * img @ all_txt.T
    logits_per_text = scale * txt @ all_img.T
    loss = F.cross_entropy(logits_per_image, labels)
    return (loss + F.cross_entropy(logits_per_text, labels)) / 2


def sigmoid_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    group=None,
    local: bool = False,
) -> torch.Tensor:
    """SigLIP: every (image, text) pair is a binary problem; summed, divided by local images."""
    img, txt, scale, bias = img.float(), txt.float(), scale.float(), bias.float()
    all_txt = gather_with_grad(txt, group, local)
    n = img.shape[0]
    logits = scale * img @ all_txt.T + bias
    rows = torch.arange(n, device=img.device)
    signs = torch.full_like(logits, -1.0)
    signs[rows, rows + _offset(n, group, local)] = 1.0
    return -F.logsigmoid(signs * logits).sum() / n


def clip_loss(outputs, kind: str, group=None, local: bool = False) -> torch.Tensor:
    """The configured loss of ``model(images, tokens)`` outputs."""
    img, txt, scale, bias = outputs
    if kind == "sigmoid":
        return sigmoid_loss(img, txt, scale, bias, group, local)
    return contrastive_loss(img, txt, scale, group, local)


@torch.no_grad()
def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Clamp ``logit_scale`` to [0, ln 100] in place (works on FSDP2 DTensor shards)."""
    p = cast(torch.Tensor, model.logit_scale)
    local = p.to_local() if hasattr(p, "to_local") else p
    local.clamp_(0.0, MAX_LOGIT_SCALE)
