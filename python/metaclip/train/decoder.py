"""LocCa's captioning decoder: causal self-attention over the caption, cross-attention to
every vision token (before pooling), trained by teacher forcing; with probability
``parallel_prob`` a row is predicted from mask tokens only, all positions at once (CapPa).

Position ``i`` reads ``[start, t_0, ..., t_{i-1}]`` and predicts ``t_i``, so the first token
is predicted from the image alone. Pad targets are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from metaclip.train.config import DecoderConfig, TextConfig
from metaclip.train.loss import global_mean
from metaclip.train.model import MLP


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    # [B, T, H, D] in and out; SDPA wants [B, H, T, D]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


class DecoderBlock(nn.Module):
    """Pre-LN: ``x + self_attn(ln_1(x))``, ``x + cross_attn(ln_2(x), memory)``, ``x + mlp``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.ln_3 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), quick_gelu)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, memory_mask=None
    ) -> torch.Tensor:
        """``memory_mask`` ``[B, 1, 1, N]`` bool: the memory tokens a row may read."""
        b, t, w = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, h, -1).unbind(2)
        x = x + self.self_out(_sdpa(q, k, v, mask).reshape(b, t, w))
        q = self.q(self.ln_2(x)).view(b, t, h, -1)
        k, v = self.kv(memory.to(x.dtype)).view(b, memory.shape[1], 2, h, -1).unbind(2)
        x = x + self.cross_out(_sdpa(q, k, v, memory_mask).reshape(b, t, w))
        return x + self.mlp(self.ln_3(x))


class CaptionDecoder(nn.Module):
    def __init__(
        self, cfg: DecoderConfig, vision_width: int, text: TextConfig, quick_gelu: bool
    ) -> None:
        super().__init__()
        w = cfg.width
        self.width, self.layers = w, cfg.layers
        self.memory_proj = nn.Linear(vision_width, w)
        self.token_embedding = nn.Embedding(text.vocab_size, w)
        self.start_token = nn.Parameter(torch.empty(w))
        self.mask_token = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, w))
        self.resblocks = nn.ModuleList(
            DecoderBlock(w, cfg.heads, cfg.mlp_ratio, quick_gelu) for _ in range(cfg.layers)
        )
        self.ln_final = nn.LayerNorm(w)
        self.head = nn.Linear(w, text.vocab_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        w = self.width
        std, proj_std = w**-0.5, w**-0.5 * (2 * self.layers) ** -0.5
        for p in (self.token_embedding.weight, self.start_token, self.mask_token):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in cast(Iterable[DecoderBlock], self.resblocks):
            for out in (block.self_out, block.cross_out, block.mlp.c_proj):
                nn.init.normal_(out.weight, std=proj_std)
        nn.init.zeros_(self.head.weight)  # uniform over the vocabulary at the start

    def forward(
        self,
        memory: torch.Tensor,
        tokens: torch.Tensor,
        parallel: torch.Tensor | None = None,
        memory_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for the targets ``tokens`` ``[B, T]`` given the vision
        tokens ``memory`` ``[B, N, vision_width]``; ``parallel`` ``[B]`` bool rows see only
        mask tokens and attend both ways; ``memory_valid`` ``[B, N]`` bool: each row's own
        vision tokens (NaFlex images padded to the batch's largest)."""
        b, t = tokens.shape
        x = self.token_embedding(tokens[:, :-1])
        x = torch.cat([self.start_token.to(x.dtype).expand(b, 1, -1), x], dim=1)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        if parallel is not None:
            x = torch.where(parallel[:, None, None], self.mask_token.to(x.dtype), x)
            mask = (mask | parallel[:, None, None])[:, None]  # [B, 1, T, T]
        x = x + self.positional_embedding[:t].to(x.dtype)
        mem = self.memory_proj(memory)
        mem_mask = None if memory_valid is None else memory_valid[:, None, None, :]
        for block in self.resblocks:
            x = block(x, mem, mask, mem_mask)
        x = self.ln_final(x.to(self.ln_final.weight.dtype))
        return self.head(x)


def caption_loss(
    logits: torch.Tensor, tokens: torch.Tensor, pad_id: int, count=None, group=None
) -> torch.Tensor:
    """Cross-entropy over the non-pad targets of the global batch (:func:`global_mean`).
    ``count``: this rank's non-pad targets the mean is over (default: those of ``tokens``;
    the step's whole batch when accumulating)."""
    ce = F.cross_entropy(
        logits.float().flatten(0, 1), tokens.flatten(), ignore_index=pad_id, reduction="sum"
    )
    if count is None:
        count = (tokens != pad_id).sum()
    return global_mean(ce, count, group)
