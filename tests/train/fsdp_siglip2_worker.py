"""Run under torchrun (CPU, gloo): FSDP2 with SigLIP 2's auxiliary losses (MAP head, decoder,
distillation), in one micro-batch and in two (optim.accum_steps = 2), vs one process on the
global batch: loss, gradients and the teacher's EMA.

Writes the largest differences as JSON to argv[1].
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys

import torch

from metaclip.train.config import DecoderConfig, DistillConfig, LossConfig, model_preset
from metaclip.train.distill import ema_update
from metaclip.train.distributed import (
    all_reduce_mean,
    full_tensor,
    init_distributed,
    parallelize,
    shutdown,
)
from metaclip.train.loss import clip_loss
from metaclip.train.model import build_model
from metaclip.train.siglip2 import AuxInputs, aux_loss, draw_aux, split_aux
from metaclip.train.train import forward_backward


def main() -> None:
    info = init_distributed("cpu", timeout_s=120)
    base = model_preset("test-tiny")
    cfg = dataclasses.replace(
        base,
        loss="sigmoid",
        vision=dataclasses.replace(base.vision, pool="map"),
        decoder=DecoderConfig(layers=2, width=32, heads=2, parallel_prob=0.5),
        distill=DistillConfig(start_fraction=0.5),
    )
    weights = LossConfig(caption_weight=0.7, masked_weight=0.5)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # a teacher apart from the student; a decoder head that is not 0
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.decoder.head.weight.normal_(std=0.1)
    ref = copy.deepcopy(model)
    accum = copy.deepcopy(model)
    per_rank = 4
    n = per_rank * info.world
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 32, 32, generator=g)
    tokens = torch.randint(1, 999, (n, 16), generator=g)
    tokens[:, 10] = 999  # EOT for argmax pooling
    tokens[::2, 11:] = 0  # padding (ignored by the caption loss)
    aux = draw_aux(ref, n, True, torch.Generator().manual_seed(2))
    aux.local_images = torch.randn(n, 2, 3, 16, 16, generator=g)
    assert aux.parallel is not None and aux.mask is not None
    assert 0 < int(aux.parallel.sum()) < n

    out = ref(images, tokens, aux)  # one process, global batch
    ref_loss = clip_loss(out[:4], "sigmoid", local=True) + aux_loss(out[4], weights)
    ref_loss.backward()

    parallelize(model, info.mesh, precision="fp32")
    rows = slice(info.rank * per_rank, (info.rank + 1) * per_rank)
    mine = AuxInputs(True, aux.local_images[rows], aux.mask[rows], aux.parallel[rows])
    out = model(images[rows], tokens[rows], mine)
    loss = clip_loss(out[:4], "sigmoid") + aux_loss(out[4], weights)
    loss.backward()
    loss_diff = abs(all_reduce_mean(loss).item() - ref_loss.item())

    # accum_steps = 2: each rank's rows as two micro-batches (one draw, split)
    parallelize(accum, info.mesh, precision="fp32")
    half = per_rank // 2
    micro = [(images[rows][i : i + half], tokens[rows][i : i + half]) for i in (0, half)]
    parts = split_aux(mine, micro, pad_id=0)
    acc_loss = forward_backward(accum, micro, "sigmoid", parts, weights)
    acc_loss_diff = abs(all_reduce_mean(acc_loss).item() - ref_loss.item())

    def grad_diff(m) -> tuple[float, float, int]:
        diff, scale, teacher_grads = 0.0, 0.0, 0
        for name, p in m.named_parameters():
            gr = ref_params[name].grad
            if name.startswith("teacher."):
                teacher_grads += (p.grad is not None) + (gr is not None)
                continue
            diff = max(diff, (full_tensor(p.grad).float() - gr).abs().max().item())
            scale = max(scale, gr.abs().max().item())
        return diff, scale, teacher_grads

    ref_params = dict(ref.named_parameters())
    diff, scale, teacher_grads = grad_diff(model)
    acc_diff, _, acc_teacher_grads = grad_diff(accum)
    ema_update(model.teacher, model.visual, 0.9)  # on the local shards
    ema_update(ref.teacher, ref.visual, 0.9)
    ema_diff = max(
        (full_tensor(p) - ref_params[n]).abs().max().item()
        for n, p in model.named_parameters()
        if n.startswith("teacher.")
    )
    if info.is_main:
        result = {
            "world": info.world,
            "loss": ref_loss.item(),
            "loss_diff": loss_diff,
            "max_grad_diff": diff,
            "max_grad": scale,
            "teacher_grads": teacher_grads + acc_teacher_grads,
            "accum_loss_diff": acc_loss_diff,
            "accum_max_grad_diff": acc_diff,
            "ema_diff": ema_diff,
            "aux": {k: v.item() for k, v in out[4].items()},
        }
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as fsdp_worker.py: skip the exit-time teardown that can abort a rank


if __name__ == "__main__":
    main()
