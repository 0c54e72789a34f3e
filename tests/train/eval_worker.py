"""Run under torchrun (CPU, gloo): evaluate an FSDP-sharded model on each config in argv[2:].

Writes ``{"runs": [{"metrics": ..., "rows": [image rows encoded per rank]}]}`` to argv[1].
"""

from __future__ import annotations

import json
import os
import sys

import torch

from metaclip.train.config import config_from_dict
from metaclip.train.distributed import init_distributed, parallelize, shutdown
from metaclip.train.evaluate import evaluate, gather_rows
from metaclip.train.model import build_model
from metaclip.train.tokenizer import build_tokenizer
from metaclip.train.train import reconcile_text_config


def main() -> None:
    info = init_distributed("cpu", timeout_s=120)
    runs = []
    for path in sys.argv[2:]:
        with open(path) as f:
            cfg = config_from_dict(json.load(f))
        tokenizer = build_tokenizer(cfg.tokenizer, cfg.model.text.context_length)
        cfg = reconcile_text_config(cfg, tokenizer)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        rows = torch.zeros(1, dtype=torch.long)

        def count(_module, args, rows=rows):
            rows += args[0].shape[0]

        model.visual.register_forward_pre_hook(count)
        parallelize(model, info.mesh, precision="fp32")
        metrics = evaluate(model, tokenizer, cfg, info.device)
        runs.append({"metrics": metrics, "rows": gather_rows(rows).tolist()})
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": info.world, "runs": runs}, f)
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as fsdp_worker.py: skip the exit-time teardown that sometimes aborts


if __name__ == "__main__":
    main()
