"""The EMA teacher of SILC/TIPS-style self-distillation (SigLIP 2's last phase).

The teacher is ``model.teacher``, a copy of the vision tower built with the model, so FSDP2
shards it exactly like the student (same units, same placements): the EMA is then a local
elementwise update of each rank's shards, with no communication. It has no gradient and is
not in the optimizer (``param_groups`` skips parameters without ``requires_grad``); it is
in checkpoints, so a resume continues with the same teacher.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metaclip.train.config import DistillConfig


def distill_start(cfg: DistillConfig, steps: int) -> int:
    """The first step (0-based, = steps done before it) of the distillation phase."""
    if not cfg.enabled:
        return steps
    return min(steps - 1, max(0, round(steps * (1 - cfg.start_fraction))))


def teacher_momentum(cfg: DistillConfig, step: int, steps: int) -> float:
    """EMA momentum after step ``step`` (0-based): cosine from ``momentum`` to 1 at the end."""
    start = distill_start(cfg, steps)
    progress = min(1.0, max(0.0, (step - start) / max(1, steps - 1 - start)))
    return 1 - (1 - cfg.momentum) * 0.5 * (1 + math.cos(math.pi * progress))


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p  # type: ignore[operator]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_s`` for every parameter (on local shards under FSDP2);
    ``momentum = 0`` copies the student."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        raise ValueError("teacher and student differ in their parameters")
    for name, t in t_params.items():
        tl, sl = _local(t), _local(s_params[name])
        if momentum == 0:
            tl.copy_(sl)
        else:
            tl.mul_(momentum).add_(sl.to(tl.dtype), alpha=1 - momentum)
