"""Frozen, validated configuration for the trainer.

A run is described by one TOML (or JSON) file plus ``key=value`` overrides. The model section
names a preset (``model.preset = "ViT-H-14"``) and may override any of its fields::

    steps = 10000
    [model]
    preset = "ViT-B-32-worldwide"
    [model.vision]
    layers = 6
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, cast, get_args, get_origin, get_type_hints

from metaclip.exceptions import MetaclipError


class ConfigError(MetaclipError, ValueError):
    """A configuration value is missing, unknown or out of range."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    # "cls": class token (OpenAI CLIP); "map": no class token, a learned probe attends over
    # the patch tokens, then an MLP with residual (SigLIP's multi-head attention pooling)
    pool: str = "cls"

    def __post_init__(self) -> None:
        _choice("vision.pool", self.pool, ("cls", "map"))
        _check(
            self.patch_size > 0 and self.image_size % self.patch_size == 0,
            f"vision.image_size {self.image_size} must be a multiple of patch_size "
            f"{self.patch_size}",
        )
        _check(self.layers > 0 and self.heads > 0, "vision.layers and vision.heads must be > 0")
        _check(
            self.width % self.heads == 0,
            f"vision.width {self.width} must be divisible by heads {self.heads}",
        )
        _check(self.mlp_ratio > 0, "vision.mlp_ratio must be > 0")

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + int(self.pool == "cls")


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    pool: str = "argmax"  # "argmax" (OpenAI BPE: EOT has the largest id) or "eos"
    eos_id: int | None = None  # required for pool = "eos"; filled from the tokenizer if unset
    pad_id: int = 0

    def __post_init__(self) -> None:
        _choice("text.pool", self.pool, ("argmax", "eos"))
        _check(self.context_length > 1, "text.context_length must be > 1")
        _check(self.vocab_size > 1, "text.vocab_size must be > 1")
        _check(self.layers > 0 and self.heads > 0, "text.layers and text.heads must be > 0")
        _check(
            self.width % self.heads == 0,
            f"text.width {self.width} must be divisible by heads {self.heads}",
        )
        if self.eos_id is not None:
            _check(
                0 <= self.eos_id < self.vocab_size,
                f"text.eos_id {self.eos_id} outside the vocabulary [0, {self.vocab_size})",
            )


@dataclass(frozen=True)
class DecoderConfig:
    """LocCa captioning decoder (trained beside the towers, never exported)."""

    layers: int = 0  # 0: no decoder
    width: int = 256
    heads: int = 4
    mlp_ratio: float = 4.0
    # per example: predict every position from mask tokens at once (CapPa), else teacher forcing
    parallel_prob: float = 0.0

    def __post_init__(self) -> None:
        _check(self.layers >= 0, "model.decoder.layers must be >= 0 (0 = no decoder)")
        _check(self.width > 0 and self.heads > 0, "model.decoder.width and heads must be > 0")
        _check(
            self.width % self.heads == 0,
            f"model.decoder.width {self.width} must be divisible by heads {self.heads}",
        )
        _check(self.mlp_ratio > 0, "model.decoder.mlp_ratio must be > 0")
        _check(0 <= self.parallel_prob <= 1, "model.decoder.parallel_prob must be in [0, 1]")


@dataclass(frozen=True)
class DistillConfig:
    """SILC/TIPS self-distillation of the vision tower from its EMA teacher (SigLIP 2)."""

    # on for the last start_fraction of training (SigLIP 2: 0.2); 0 = off (no teacher)
    start_fraction: float = 0.0
    momentum: float = 0.996  # EMA momentum at the start; cosine to 1 at the last step
    mask_ratio: float = 0.5  # fraction of patch tokens the student sees as the mask token

    def __post_init__(self) -> None:
        _check(0 <= self.start_fraction <= 1, "model.distill.start_fraction must be in [0, 1]")
        _check(0 <= self.momentum <= 1, "model.distill.momentum must be in [0, 1]")
        _check(0 < self.mask_ratio < 1, "model.distill.mask_ratio must be in (0, 1)")

    @property
    def enabled(self) -> bool:
        return self.start_fraction > 0


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "ViT-B-32"
    embed_dim: int = 512
    quick_gelu: bool = False
    loss: str = "contrastive"  # or "sigmoid" (SigLIP)
    attention: str = "auto"  # "auto" | "sdpa" | "xformers"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        _check(self.embed_dim > 0, "model.embed_dim must be > 0")
        _choice("model.loss", self.loss, ("contrastive", "sigmoid"))
        _choice("model.attention", self.attention, ("auto", "sdpa", "xformers"))


# --- presets -------------------------------------------------------------------------------

WORLDWIDE_VOCAB = 901_629  # XLM-V vocabulary used by MetaCLIP 2 (pad 1, eos 2)

_TOWERS: dict[str, tuple[int, dict[str, Any], dict[str, Any]]] = {
    "test-tiny": (
        32,
        dict(image_size=32, patch_size=8, width=64, layers=2, heads=4),
        dict(context_length=16, vocab_size=1000, width=64, heads=4, layers=2),
    ),
    "ViT-B-32": (
        512,
        dict(patch_size=32, width=768, layers=12, heads=12),
        dict(width=512, heads=8, layers=12),
    ),
    "ViT-B-16": (
        512,
        dict(patch_size=16, width=768, layers=12, heads=12),
        dict(width=512, heads=8, layers=12),
    ),
    "ViT-L-14": (
        768,
        dict(patch_size=14, width=1024, layers=24, heads=16),
        dict(width=768, heads=12, layers=12),
    ),
    "ViT-H-14": (
        1024,
        dict(patch_size=14, width=1280, layers=32, heads=16),
        dict(width=1024, heads=16, layers=24),
    ),
    "ViT-bigG-14": (
        1280,
        dict(patch_size=14, width=1664, layers=48, heads=16, mlp_ratio=4.9231),
        dict(width=1280, heads=20, layers=32),
    ),
}


def preset_names() -> list[str]:
    """Every accepted preset name (towers x {"", "-worldwide"} x {"", "-quickgelu"})."""
    return [f"{t}{w}{q}" for t in _TOWERS for w in ("", "-worldwide") for q in ("", "-quickgelu")]


# SigLIP 2-style recipes: a tower with the sigmoid loss, MAP head, LocCa decoder and
# self-distillation over the last 20% (needs data.local_crops). Decoder size: our choice.
_RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "ViT-B-16-siglip2": (
        "ViT-B-16",
        dict(
            loss="sigmoid",
            vision=dict(pool="map"),
            decoder=dict(layers=6, width=512, heads=8, parallel_prob=0.5),
            distill=dict(start_fraction=0.2),
        ),
    ),
}


def recipe_names() -> list[str]:
    """Presets that are a tower plus a training recipe (``ViT-B-16-siglip2``)."""
    return list(_RECIPES)


def model_preset(name: str) -> ModelConfig:
    """The model config for a preset such as ``ViT-H-14-worldwide-quickgelu``."""
    if name in _RECIPES:
        tower, over = _RECIPES[name]
        cfg = model_preset(tower)
        parts = {
            k: dataclasses.replace(getattr(cfg, k), **v) for k, v in over.items() if k != "loss"
        }
        return dataclasses.replace(cfg, preset=name, loss=over["loss"], **parts)
    base, quick = name.removesuffix("-quickgelu"), name.endswith("-quickgelu")
    tower, worldwide = base.removesuffix("-worldwide"), base.endswith("-worldwide")
    if tower not in _TOWERS:
        names = preset_names() + recipe_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model preset {name!r}{hint}; choose from {names}")
    embed, vis, txt = _TOWERS[tower]
    txt = dict(txt)
    if worldwide:
        txt.update(vocab_size=WORLDWIDE_VOCAB, pool="eos", eos_id=2, pad_id=1)
    return ModelConfig(
        preset=name,
        embed_dim=embed,
        quick_gelu=quick,
        vision=VisionConfig(**vis),
        text=TextConfig(**txt),
    )


# --- run config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerConfig:
    # "sentencepiece" | "openai-bpe" (the vocabulary shipped with open_clip) | "hf" (a
    # Hugging Face tokenizer.json, e.g. XLM-V's: its ids are MetaCLIP 2's, pad 1, eos 2)
    kind: str = "sentencepiece"
    path: str | None = None  # SentencePiece .model, or tokenizer.json for kind = "hf"

    def __post_init__(self) -> None:
        _choice("tokenizer.kind", self.kind, ("sentencepiece", "openai-bpe", "hf"))
        _check(
            self.kind == "openai-bpe" or bool(self.path),
            f"tokenizer.path (a SentencePiece .model or a tokenizer.json) is required for "
            f"kind = {self.kind!r}",
        )


@dataclass(frozen=True)
class DataConfig:
    train_shards: str = ""  # glob or brace pattern, e.g. "data/train-{000000..000099}.tar"
    batch_size: int = 256  # per rank
    num_workers: int = -1  # DataLoader workers per rank; -1: from the cores (at most 8)
    # Streams per rank (0: one per worker). Batches depend on the streams, not the workers:
    # fix it (a multiple of every worker count you use) to keep the order across machines.
    streams: int = 0
    shuffle: bool = True
    shuffle_window: int = 8  # shards a stream reads at once, drawing samples among them
    augment: bool = True  # RandomResizedCrop(scale 0.9-1) as in the recipe; else center crop
    # Entry probabilities (.npy) -> online curation; a probs.json beside it (written by
    # `metaclip-curate shards`) maps each language's entry ids into the array.
    probabilities: str | None = None
    curation_seed: int = 0
    start_method: str = "forkserver"  # DataLoader workers: "forkserver" | "spawn" | "fork"
    # extra random crops per image at local_crop_size (scale 0.05-0.4) as "local_images"
    # (model.distill needs them); 0 = none, the batches are as before
    local_crops: int = 0
    local_crop_size: int = 0  # 0: half the image size (rounded down to the patch size)
    # NaFlex (SigLIP 2): images at their native aspect ratio as at most L patches, L drawn
    # per batch from this list (e.g. [256, 576, 1024]); the batch then holds "patches" and
    # "grids" instead of "images". None: square images at model.vision.image_size
    naflex_seq_lens: list[int] | None = None

    def __post_init__(self) -> None:
        lens = self.naflex_seq_lens
        _check(
            lens is None or (len(lens) > 0 and min(lens) >= 1),
            f"data.naflex_seq_lens must be a non-empty list of lengths >= 1, got {lens}",
        )
        _check(self.local_crops >= 0 and self.local_crop_size >= 0, "data.local_crops/size >= 0")
        _check(bool(self.train_shards), "data.train_shards is required")
        _choice("data.start_method", self.start_method, ("forkserver", "spawn", "fork"))
        _check(self.batch_size > 0, "data.batch_size must be > 0")
        _check(self.num_workers >= -1, "data.num_workers must be >= 0, or -1 (from the cores)")
        _check(self.streams >= 0, "data.streams must be >= 0")
        _check(self.shuffle_window >= 1, "data.shuffle_window must be >= 1")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.2
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0  # 0 = off
    # micro-batches of data.batch_size per step (GradCache): the loss and gradients are
    # those of one batch of accum_steps x batch_size per rank, with one micro-batch's
    # activations in memory; costs one extra no-grad forward per micro-batch
    accum_steps: int = 1

    def __post_init__(self) -> None:
        _check(self.accum_steps >= 1, f"optim.accum_steps must be >= 1, got {self.accum_steps}")
        _check(self.lr > 0 and math.isfinite(self.lr), "optim.lr must be a positive number")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim betas must be in [0, 1)")
        _check(
            self.weight_decay >= 0 and self.warmup_steps >= 0 and self.grad_clip >= 0,
            "optim.weight_decay, warmup_steps and grad_clip must be >= 0",
        )
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the losses added to the contrastive/sigmoid loss (each needs its part)."""

    caption_weight: float = 1.0  # LocCa decoder cross-entropy (model.decoder.layers > 0)
    distill_weight: float = 1.0  # local-to-global cosine (model.distill)
    masked_weight: float = 0.25  # masked patch prediction cosine (model.distill)

    def __post_init__(self) -> None:
        for name in ("caption_weight", "distill_weight", "masked_weight"):
            v = getattr(self, name)
            _check(v >= 0 and math.isfinite(v), f"loss.{name} must be >= 0, got {v}")


@dataclass(frozen=True)
class EvalConfig:
    zeroshot_shards: str | None = None  # tars whose json has an integer "label"
    classnames: str | None = None  # JSON {"classnames": [...], "templates": [...]}
    retrieval_shards: str | None = None
    every_steps: int = 0  # 0 = only at the end
    batch_size: int = 128  # images (and prompts) per forward, per rank
    num_workers: int = 0  # DataLoader workers decoding the eval images, per rank

    def __post_init__(self) -> None:
        _check(
            not self.zeroshot_shards or bool(self.classnames),
            "eval.classnames is required with eval.zeroshot_shards",
        )
        _check(self.every_steps >= 0 and self.batch_size > 0, "bad eval.every_steps/batch_size")
        _check(self.num_workers >= 0, f"eval.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class DistributedConfig:
    # [replicate, shard]: HSDP on a 2-D mesh; parameters are sharded over the `shard` ranks
    # of a group (e.g. one node's GPUs) and replicated over the `replicate` groups, so the
    # all-gathers stay inside a group. The product must be the world size. None: FSDP
    # over all ranks (a 1-D mesh).
    mesh_shape: list[int] | None = None

    def __post_init__(self) -> None:
        m = self.mesh_shape
        if m is not None:
            _check(len(m) == 2, f"distributed.mesh_shape must be two ints [replicate, shard]: {m}")
            _check(min(m) >= 1, f"distributed.mesh_shape entries must be >= 1, got {m}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 1000  # length of the schedule
    stop_at: int = 0  # stop (checkpoint, no export) after this step; 0 = run all steps
    seed: int = 0
    output_dir: str = "runs/default"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "bf16"  # FSDP2 MixedPrecisionPolicy param dtype: "bf16" | "fp32"
    # "none" | "full" (every block) | "selective" (every k-th block, k below); a boolean
    # means "none"/"full". Selective trades memory for less recomputation.
    activation_checkpointing: bool | str = "none"
    activation_checkpointing_every: int = 2
    compile: bool = False
    # also when the loss is synced to the host and checked: a non-finite loss stops the run
    # at the next log (or checkpoint) step, naming the step where it first appeared
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end
    resume: str = "auto"  # "auto" (latest in output_dir) | "none" | a checkpoint directory
    export: bool = True  # write an open_clip-compatible state dict at the end
    # released weights to start from (before sharding): an open_clip state dict .pt, or a
    # checkpoint with one under "state_dict"; the vision position embedding is resized
    # (bicubic) when model.vision.image_size differs. A resumed run loads its checkpoint.
    init_from: str | None = None

    def __post_init__(self) -> None:
        _check(self.steps > 0, "steps must be > 0")
        _check(0 <= self.stop_at <= self.steps, "stop_at must be in [0, steps]")
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _choice("precision", self.precision, ("bf16", "fp32"))
        ac = self.activation_checkpointing
        if isinstance(ac, bool):
            object.__setattr__(self, "activation_checkpointing", "full" if ac else "none")
        _choice(
            "activation_checkpointing",
            str(self.activation_checkpointing),
            ("none", "full", "selective"),
        )
        _check(
            self.activation_checkpointing_every >= 1,
            "activation_checkpointing_every must be >= 1",
        )
        _check(self.log_every > 0 and self.checkpoint_every >= 0, "bad log/checkpoint interval")
        _check(self.init_from is None or bool(self.init_from), "init_from must not be empty")
        tok, txt = self.tokenizer, self.model.text
        if tok.kind == "openai-bpe":
            _check(txt.pool == "argmax", "the OpenAI BPE tokenizer needs text.pool = 'argmax'")
            _check(txt.vocab_size >= 49408, "the OpenAI BPE tokenizer needs vocab_size >= 49408")
        m = self.model
        _check(
            not m.distill.enabled or self.data.local_crops > 0,
            "model.distill needs local crops: set data.local_crops >= 1",
        )
        # a compiled block sees each packing's block lengths (a Python list) and row length
        # as constants, so nearly every NaFlex batch would recompile it
        _check(
            self.data.naflex_seq_lens is None or not self.compile,
            "compile does not support data.naflex_seq_lens: every packing would recompile",
        )
        if self.data.local_crops:
            size = local_crop_size(self.data, m.vision)
            _check(
                0 < size <= m.vision.image_size and size % m.vision.patch_size == 0,
                f"data.local_crop_size {size} must be a multiple of vision.patch_size "
                f"{m.vision.patch_size} in (0, image_size]",
            )


def local_crop_size(data: DataConfig, vision: VisionConfig) -> int:
    """The configured local crop size, or half the image size rounded to the patch size."""
    if data.local_crop_size:
        return data.local_crop_size
    return max(vision.patch_size, vision.image_size // 2 // vision.patch_size * vision.patch_size)


# --- loading ---------------------------------------------------------------------------------


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}")
        typ = hints[key]
        if is_dataclass(typ):
            _check(isinstance(value, dict), f"{where} must be a table")
            kwargs[key] = _build(cast(type, typ), value, f"{where}.")
        else:
            kwargs[key] = _coerce(value, typ, where)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def _coerce(value: Any, typ: Any, where: str) -> Any:
    allowed = getattr(typ, "__args__", (typ,))
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for a in allowed:
        if get_origin(a) is list:  # list[int]: a TOML array of ints
            (item,) = get_args(a)
            ok = isinstance(value, list) and all(
                isinstance(v, item) and not isinstance(v, bool) for v in value
            )
            _check(ok, f"{where} must be a list of {item.__name__}, got {value!r}")
            return list(value)
    if not isinstance(value, tuple(a for a in allowed if isinstance(a, type))):
        names = " | ".join(getattr(a, "__name__", str(a)) for a in allowed)
        raise ConfigError(f"{where} must be {names}, got {value!r}")
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where} must not be a boolean, got {value!r}")
    return value


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as a TOML literal, else kept as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(raw: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from a nested dict plus ``key=value`` overrides."""
    raw = json.loads(json.dumps(raw))  # deep copy
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            _check(isinstance(node, dict), f"override {item!r}: {part!r} is not a table")
        node[path[-1]] = value
    model = raw.get("model", {})
    if isinstance(model, str):
        model = {"preset": model}
    _check(isinstance(model, dict), "model must be a preset name or a table")
    base = dataclasses.asdict(model_preset(model.get("preset", "ViT-B-32")))
    raw["model"] = _merge(base, model)
    _check("data" in raw, "the [data] section is required (data.train_shards)")
    return _build(TrainConfig, raw, "")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML or JSON config file and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return config_from_dict(raw, overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
