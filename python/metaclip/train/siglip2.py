"""SigLIP 2's additions to the vision tower and the step that trains them.

- :class:`MAPHead`: multi-head attention pooling (a learned probe attends over the tokens,
  then an MLP with residual), used with ``vision.pool = "map"``.
- :func:`resize_grid`: the position grid interpolated to another patch grid (local crops).
- :func:`aux_forward`: the towers plus the auxiliary losses (LocCa captioning, SILC/TIPS
  self-distillation) in one FSDP forward; :class:`AuxInputs` carries its random draws, so a
  test can give every rank its rows of one global draw, and :func:`split_aux` every
  micro-batch its rows of one step's draw (``optim.accum_steps``, exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from metaclip.train.attention import attend
from metaclip.train.loss import global_mean

if TYPE_CHECKING:
    from metaclip.train.model import CLIP


class MAPHead(nn.Module):
    """``y = attn(probe, x); y + mlp(ln(y))`` -> ``[B, width]``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(torch.empty(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def init_weights(self) -> None:
        w = self.probe.shape[-1]
        nn.init.normal_(self.probe, std=w**-0.5)
        for lin in (self.q, self.kv, self.out_proj, self.mlp[0], self.mlp[2]):
            assert isinstance(lin, nn.Linear)
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.ones_(self.ln.weight)
        nn.init.zeros_(self.ln.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid`` ``[B, T]`` bool: the tokens each row pools over (NaFlex padding)."""
        b, t, w = x.shape
        q = self.q(self.probe.to(x.dtype)).expand(b, 1, w).reshape(b, 1, self.heads, -1)
        k, v = self.kv(x).view(b, t, 2, self.heads, -1).unbind(2)
        mask = None if valid is None else valid[:, None, None, :]
        y = attend(q, k, v, causal=False, backend="sdpa", mask=mask)
        y = self.out_proj(y.reshape(b, 1, w))
        return (y + self.mlp(self.ln(y)))[:, 0]


def resize_grid(pos: torch.Tensor, grid: int, new: tuple[int, int]) -> torch.Tensor:
    """``[grid*grid, W]`` patch position embeddings -> ``[h*w, W]``: bicubic, antialiased
    when shrinking; as is if equal."""
    if new == (grid, grid):
        return pos
    w = pos.shape[-1]
    g = pos.reshape(1, grid, grid, w).permute(0, 3, 1, 2).float()
    shrink = new[0] < grid or new[1] < grid
    g = F.interpolate(g, size=new, mode="bicubic", align_corners=False, antialias=shrink)
    return g.permute(0, 2, 3, 1).reshape(new[0] * new[1], w).to(pos.dtype)


@dataclass
class AuxInputs:
    """What the auxiliary losses need besides (images, tokens); ``None`` skips a part."""

    distill: bool = False  # the distillation phase: teacher, local crops, masked prediction
    local_images: torch.Tensor | None = None  # [B, n, 3, s, s], normalized
    # [B, patches] bool, True = shown as the mask token; NaFlex: [B, max patches], aligned
    # with NaFlexBatch.tok_index (False beyond an image's patches)
    mask: torch.Tensor | None = None
    parallel: torch.Tensor | None = None  # [B] bool: CapPa parallel prediction for that row
    # what each loss is divided by: the step's whole batch when it is accumulated over
    # micro-batches (see split_aux); None: this call's own count
    totals: dict[str, torch.Tensor] | None = None


def draw_aux(
    model: CLIP,
    batch: int,
    distill: bool,
    generator: torch.Generator,
    patches: torch.Tensor | None = None,
) -> AuxInputs:
    """The random parts of :class:`AuxInputs` for one batch (masks, parallel rows).

    ``patches`` ``[B]``: each image's patch count (NaFlex); None: the model's square grid.
    Each row masks ``round(mask_ratio * its patches)`` of them (at least one)."""
    cfg = model.cfg
    device = generator.device
    out = AuxInputs(distill=distill)
    if cfg.decoder.layers and cfg.decoder.parallel_prob > 0:
        u = torch.rand(batch, generator=generator, device=device)
        out.parallel = u < cfg.decoder.parallel_prob
    if distill:
        full = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
        n = torch.full((batch,), full) if patches is None else patches
        n = n.to(device)
        width = int(n.max()) if batch else 0
        u = torch.rand(batch, width, generator=generator, device=device)
        u = u.masked_fill(torch.arange(width, device=device) >= n[:, None], 2.0)  # sorts last
        k = (cfg.distill.mask_ratio * n.double()).round().clamp_min(1)
        out.mask = u.argsort(dim=1).argsort(dim=1) < k[:, None]
    return out


def split_aux(aux: AuxInputs, micro: list, pad_id: int) -> list[AuxInputs]:
    """One step's :class:`AuxInputs` (drawn for the union of the ``(images, tokens)``
    micro-batches) cut into each micro-batch's rows, every part dividing its losses by the
    whole batch's counts: the micro-batches' losses then sum to the whole batch's."""
    sizes = [tokens.shape[0] for _, tokens in micro]

    def rows(x: torch.Tensor | None) -> list:
        return [None] * len(sizes) if x is None else list(x.split(sizes))

    all_tokens = torch.cat([tokens for _, tokens in micro])
    totals = {"caption": (all_tokens != pad_id).sum().float()}
    if aux.local_images is not None:
        totals["distill"] = torch.tensor(float(aux.local_images.shape[:2].numel()))
    if aux.mask is not None:
        totals["masked"] = aux.mask.sum().float()
    out = []
    for (images, _), local, mask, par in zip(
        micro, rows(aux.local_images), rows(aux.mask), rows(aux.parallel), strict=True
    ):
        if mask is not None and hasattr(images, "tok_valid"):  # NaFlex: this batch's width
            mask = mask[:, : images.tok_valid.shape[1]]
        out.append(AuxInputs(aux.distill, local, mask, par, totals))
    return out


def _cosine_distance(a: torch.Tensor, b: torch.Tensor, total) -> torch.Tensor:
    """Mean cosine distance over the global batch (``total``: this rank's count to divide
    by, default its own pairs)."""
    d = 1 - F.cosine_similarity(a.float(), b.float(), dim=-1)
    return global_mean(d.sum(), d.numel() if total is None else total)


def aux_forward(model: CLIP, images, tokens: torch.Tensor, aux: AuxInputs):
    """``model(images, tokens)``'s outputs plus a dict of unweighted auxiliary losses.

    ``images``: a tensor or a packed :class:`~metaclip.train.naflex.NaFlexBatch`.
    ``caption``: the decoder's cross-entropy on the caption tokens (pad ignored), reading
    all vision tokens before pooling. ``distill``: cosine distance between the student's
    embedding of each local crop and the EMA teacher's embedding of the whole image.
    ``masked``: cosine distance between the student's output tokens at masked positions
    (input replaced by ``mask_token``) and the teacher's tokens of the unmasked image."""
    from metaclip.train.decoder import caption_loss

    emb, vtokens = model.visual.forward_tokens(images)
    valid = getattr(images, "tok_valid", None)  # NaFlex: each image's own tokens
    img = F.normalize(emb, dim=-1)
    txt = model._encode_text(tokens, normalize=True)
    bias = None if model.logit_bias is None else model.logit_bias.clone()
    total = aux.totals or {}
    losses: dict[str, torch.Tensor] = {}
    if model.decoder is not None:
        logits = model.decoder(vtokens, tokens, aux.parallel, valid)
        pad = model.cfg.text.pad_id
        losses["caption"] = caption_loss(logits, tokens, pad, total.get("caption"))
    if aux.distill:
        assert model.teacher is not None and model.mask_token is not None
        assert aux.local_images is not None and aux.mask is not None
        with torch.no_grad():
            t_emb, t_tokens = model.teacher.forward_tokens(images)
        b, n = aux.local_images.shape[:2]
        s_emb, _ = model.visual.forward_tokens(aux.local_images.flatten(0, 1))
        d = _cosine_distance(s_emb.view(b, n, -1), t_emb[:, None], total.get("distill"))
        losses["distill"] = d
        _, m_tokens = model.visual.forward_tokens(images, aux.mask, model.mask_token)
        m = aux.mask
        losses["masked"] = _cosine_distance(m_tokens[m], t_tokens[m], total.get("masked"))
    return img, txt, model.logit_scale.exp(), bias, losses


def uses_aux(cfg) -> bool:
    """Whether a :class:`TrainConfig` trains the decoder or distills (the step below)."""
    return cfg.model.decoder.layers > 0 or cfg.model.distill.enabled


def aux_loss(losses: dict[str, torch.Tensor], weights) -> torch.Tensor:
    """The weighted sum of :func:`aux_forward`'s losses (a ``LossConfig``'s ``*_weight``)."""
    w = {"caption": weights.caption_weight, "distill": weights.distill_weight}
    w["masked"] = weights.masked_weight
    return sum((w[k] * v for k, v in losses.items()), torch.zeros(()))


def step_aux(model, batches: list[dict], micro: list, cfg, step: int, device) -> list[AuxInputs]:
    """The auxiliary inputs of one training step, one per micro-batch (:func:`split_aux`).

    ``step`` counts the steps done; the distillation phase copies the student into the
    teacher at its first step. The random draws depend on (seed, step, rank) only and are
    made for the step's whole batch, so k micro-batches of b draw what one of k*b does."""
    from metaclip.train.distill import distill_start, ema_update
    from metaclip.train.distributed import this_rank
    from metaclip.train.images import normalize

    d = cfg.model.distill
    start = distill_start(d, cfg.steps)
    distill = d.enabled and step >= start
    if distill and step == start:
        ema_update(model.teacher, model.visual, 0.0)
    seed = cfg.seed * 1_000_003 + step * 8191 + this_rank()
    gen = torch.Generator(device=device).manual_seed(seed)
    images = [x for x, _ in micro]
    patches = None
    if hasattr(images[0], "tok_valid"):  # NaFlex: each image's patch count
        patches = torch.cat([x.tok_valid.sum(1) for x in images])
    batch = sum(t.shape[0] for _, t in micro)
    aux = draw_aux(model, batch, distill, gen, patches)
    if distill:
        local = torch.cat([b["local_images"] for b in batches])
        aux.local_images = normalize(local.to(device, non_blocking=True))
    return split_aux(aux, micro, cfg.model.text.pad_id)


def after_step(model, cfg, step: int) -> None:
    """After the optimizer step ``step`` (0-based): the teacher's EMA update, if distilling."""
    from metaclip.train.distill import distill_start, ema_update, teacher_momentum

    d = cfg.model.distill
    if d.enabled and step >= distill_start(d, cfg.steps):
        ema_update(model.teacher, model.visual, teacher_momentum(d, step, cfg.steps))
