"""OpenAI-CLIP-style vision and text transformers (pre-LN blocks, causal text mask).

Parameter names follow the OpenAI CLIP layout (as open_clip's ``CLIP`` class does) so a
consolidated state dict exchanges with open_clip with only ``logit_scale``/``logit_bias``
reshaped: here they are shape-[1] parameters, because FSDP2 cannot shard 0-D tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from metaclip.train.attention import BlockDiagonal, attend, resolve_backend
from metaclip.train.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from metaclip.train.siglip2 import MAPHead, resize_grid

if TYPE_CHECKING:
    from metaclip.train.decoder import CaptionDecoder
    from metaclip.train.naflex import NaFlexBatch


class QuickGELU(nn.Module):
    """Sigmoid approximation of GELU; the OpenAI and MetaCLIP checkpoints use it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal, self.backend = heads, causal, "sdpa"
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: BlockDiagonal | None = None) -> torch.Tensor:
        b, t, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, self.heads, -1)
        q, k, v = qkv.unbind(2)
        out = attend(q, k, v, causal=self.causal, backend=self.backend, mask=mask)
        return self.out_proj(out.reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, quick_gelu: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU() if quick_gelu else nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LN residual block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool, causal: bool
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, causal)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), quick_gelu)

    def forward(self, x: torch.Tensor, mask: BlockDiagonal | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool, causal: bool
    ) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.checkpoint_every = 0  # 0: none; k: blocks 0, k, 2k, ... recompute in backward
        self.resblocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, quick_gelu, causal) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: BlockDiagonal | None = None) -> torch.Tensor:
        """``mask``: packed sequences (NaFlex); None attends over the whole row."""
        k = self.checkpoint_every
        extra = () if mask is None else (mask,)  # blocks see the same call as before
        for i, block in enumerate(self.resblocks):
            if k and i % k == 0 and torch.is_grad_enabled():
                x = checkpoint(block, x, *extra, use_reentrant=False)
            else:
                x = block(x, *extra)
        return x

    def init_weights(self) -> None:
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in cast(Iterable[Block], self.resblocks):
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.zeros_(block.mlp.c_fc.bias)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            nn.init.zeros_(block.mlp.c_proj.bias)
            for ln in (block.ln_1, block.ln_2):
                nn.init.ones_(ln.weight)
                nn.init.zeros_(ln.bias)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        w = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        # "map" pools with attn_pool instead of a class token (SigLIP); None keeps the names
        self.class_embedding = nn.Parameter(torch.empty(w)) if cfg.pool == "cls" else None
        self.positional_embedding = nn.Parameter(torch.empty(cfg.num_tokens, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu, False)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, embed_dim))
        self.attn_pool = MAPHead(w, cfg.heads, cfg.mlp_ratio) if cfg.pool == "map" else None

    def init_weights(self) -> None:
        scale = self.ln_pre.weight.shape[0] ** -0.5
        nn.init.normal_(self.conv1.weight, std=scale)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding, std=scale)
        if self.attn_pool is not None:
            self.attn_pool.init_weights()
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        for ln in (self.ln_pre, self.ln_post):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)
        self.transformer.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.grid * self.conv1.kernel_size[0]
        if self.class_embedding is None or tuple(x.shape[-2:]) != (size, size):
            return self.forward_tokens(x)[0]
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, patches, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        # blocks may compute in bf16; the head runs in the root's (fp32) dtype, as AMP would
        return self.ln_post(x[:, 0].to(self.ln_post.weight.dtype)) @ self.proj

    def forward_tokens(
        self,
        images: torch.Tensor | NaFlexBatch,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled embedding ``[B, embed]``, normalized patch tokens ``[B, patches, width]``)
        at any image size that is a multiple of the patch size (position grid resized);
        ``mask`` ``[B, patches]`` replaces those patch inputs by ``mask_token``. Packed
        images (NaFlex): each image's tokens padded to the largest (``images.tok_valid``)."""
        if not isinstance(images, torch.Tensor):
            from metaclip.train.naflex import encode_packed

            return encode_packed(self, images, mask, mask_token)
        x = self.conv1(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if mask is not None:
            assert mask_token is not None
            x = torch.where(mask[..., None], mask_token.to(x.dtype), x)
        pos = self.positional_embedding.to(x.dtype)
        cls = self.class_embedding
        if cls is not None:
            x = torch.cat([cls.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
            grid_pos = resize_grid(pos[1:], self.grid, (h, w))
            x = x + torch.cat([pos[:1], grid_pos])
        else:
            x = x + resize_grid(pos, self.grid, (h, w))
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x.to(self.ln_post.weight.dtype))
        if cls is not None:
            return x[:, 0] @ self.proj, x[:, 1:]
        assert self.attn_pool is not None
        return self.attn_pool(x) @ self.proj, x


class CLIP(nn.Module):
    """Two towers; ``forward`` returns normalized features, ``exp(logit_scale)`` and the bias."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        t: TextConfig = cfg.text
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.transformer = Transformer(
            t.width, t.layers, t.heads, t.mlp_ratio, cfg.quick_gelu, True
        )
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))
        sigmoid = cfg.loss == "sigmoid"
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1)) if sigmoid else None
        if t.pool == "eos" and t.eos_id is None:
            raise ValueError("text.pool = 'eos' needs text.eos_id (set it or use a tokenizer)")
        # SigLIP 2 training-only parts (none by default): never exported to open_clip
        self.decoder: CaptionDecoder | None = None
        if cfg.decoder.layers:
            from metaclip.train.decoder import CaptionDecoder

            self.decoder = CaptionDecoder(cfg.decoder, cfg.vision.width, t, cfg.quick_gelu)
        self.teacher: VisionTransformer | None = None
        self.mask_token: nn.Parameter | None = None
        if cfg.distill.enabled:  # EMA copy of the vision tower: no gradient, not optimized
            self.teacher = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
            self.teacher.requires_grad_(False)
            self.mask_token = nn.Parameter(torch.empty(cfg.vision.width))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        t = self.cfg.text
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=t.width**-0.5)
        nn.init.ones_(self.ln_final.weight)
        nn.init.zeros_(self.ln_final.bias)
        self.visual.init_weights()
        self.transformer.init_weights()
        if self.decoder is not None:
            self.decoder.init_weights()
        if self.teacher is not None and self.mask_token is not None:
            self.teacher.load_state_dict(self.visual.state_dict())
            nn.init.normal_(self.mask_token, std=0.02)
        if self.logit_bias is None:
            self.logit_scale.fill_(math.log(1 / 0.07))
        else:
            self.logit_scale.fill_(math.log(10.0))
            self.logit_bias.fill_(-10.0)

    def set_attention_backend(
        self, requested: str, device: torch.device | str, dtype: torch.dtype
    ) -> str:
        backend = resolve_backend(requested, device, dtype, sorted(attention_shapes(self)))
        for m in self.modules():
            if isinstance(m, Attention):
                m.backend = backend
        return backend

    def set_grad_checkpointing(self, enable: bool = True, every: int = 1) -> None:
        """Recompute every ``every``-th block's activations in backward (1 = all blocks)."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.visual.transformer.checkpoint_every = every if enable else 0
        self.transformer.checkpoint_every = every if enable else 0

    def blocks(self) -> list[nn.Module]:
        """FSDP units (and compile units): the towers' blocks, then decoder/teacher blocks."""
        extra: list[nn.Module] = []
        if self.decoder is not None:
            extra += list(self.decoder.resblocks)
        if self.teacher is not None:
            extra += list(self.teacher.transformer.resblocks)
        return [*self.visual.transformer.resblocks, *self.transformer.resblocks, *extra]

    # encode_image / encode_text are registered as FSDP forward methods (they unshard and
    # reshard the root); forward() calls the private versions so it is one FSDP forward.
    def encode_image(
        self, images: torch.Tensor | NaFlexBatch, normalize: bool = False
    ) -> torch.Tensor:
        return self._encode_image(images, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._encode_text(tokens, normalize)

    def _encode_image(self, images: torch.Tensor | NaFlexBatch, normalize: bool) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = self.visual(images)
        else:  # NaFlex: packed patches at native aspect ratios
            x = self.visual.forward_tokens(images)[0]
        return F.normalize(x, dim=-1) if normalize else x

    def _encode_text(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x)
        x = self.ln_final(x.to(self.ln_final.weight.dtype))
        t = self.cfg.text
        if t.pool == "argmax":
            idx = tokens.argmax(dim=-1)
        else:  # first EOS (set, as __init__ checks); a sequence without one pools at position 0
            idx = (tokens == cast(int, t.eos_id)).int().argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), idx] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, aux=None):
        if aux is not None:  # siglip2.AuxInputs: adds a dict of auxiliary losses
            from metaclip.train.siglip2 import aux_forward

            return aux_forward(self, images, tokens, aux)
        img = self._encode_image(images, normalize=True)
        txt = self._encode_text(tokens, normalize=True)
        # new tensors, not the parameters: FSDP frees unsharded storage after forward
        bias = None if self.logit_bias is None else self.logit_bias.clone()
        return img, txt, self.logit_scale.exp(), bias


def attention_shapes(model: nn.Module) -> set[tuple[int, int, bool]]:
    """The ``(heads, head_dim, causal)`` of every attention layer (what xformers must run)."""
    return {
        (m.heads, m.in_proj_weight.shape[1] // m.heads, m.causal)
        for m in model.modules()
        if isinstance(m, Attention)
    }


def resize_pos_embed(pe: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """A ViT position embedding ``[1 + g*g, width]`` for ``num_tokens = 1 + n*n``: the class
    token's row kept, the 2-D grid resized bicubically (antialiased when shrinking)."""
    old, new = math.isqrt(pe.shape[0] - 1), math.isqrt(num_tokens - 1)
    if old * old != pe.shape[0] - 1 or new * new != num_tokens - 1:
        raise ConfigError(
            f"position embedding of {pe.shape[0]} rows -> {num_tokens}: the patches must "
            "form a square grid (plus the class token)"
        )
    grid = resize_grid(pe[1:].float(), old, (new, new))
    return torch.cat([pe[:1].float(), grid]).to(pe.dtype)


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> CLIP:
    """Build and initialize a CLIP model (on ``device``; ``"meta"`` allocates nothing)."""
    with torch.device(device):
        return CLIP(cfg)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay for params with ndim < 2 (norms, biases, logit scale)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _tower_flops(tokens: int, width: int, layers: int, mlp_ratio: float) -> float:
    hidden = int(width * mlp_ratio)
    matmul = 2 * tokens * (4 * width * width + 2 * width * hidden)
    attn = 4 * tokens * tokens * width
    return layers * (matmul + attn)


def forward_flops_per_pair(cfg: ModelConfig) -> tuple[float, float]:
    """Forward FLOPs (vision, text) for one image-text pair (matmuls + attention)."""
    v, t = cfg.vision, cfg.text
    patches = (v.image_size // v.patch_size) ** 2
    patch_embed = 2 * patches * 3 * v.patch_size**2 * v.width
    vision = patch_embed + _tower_flops(v.num_tokens, v.width, v.layers, v.mlp_ratio)
    vision += 2 * v.width * cfg.embed_dim
    text = _tower_flops(t.context_length, t.width, t.layers, t.mlp_ratio)
    text += 2 * t.width * cfg.embed_dim
    return float(vision), float(text)
