"""Training throughput on one GPU: pairs/s, MFU and peak memory per model and setting.

For each model (default B/32, L/14, H/14) it times full training steps (forward, loss,
backward, AdamW) on synthetic data through the trainer's own code path (FSDP2 on a world of
one, bf16 MixedPrecisionPolicy) with xformers vs SDPA attention and with/without activation
checkpointing (off / full / selective), and prints the figures side by side with the ratio
to SDPA at the same checkpointing setting, measured in the same run ("-" where that
baseline ran out of memory). With ``--kernels`` one extra profiled step per row names the
attention kernels that ran (which xformers or SDPA kernel was dispatched).

MFU = pairs/s x 3 x forward FLOPs per pair / peak FLOP/s (trainer-notes: ViT-H/14 is 1.145
TFLOP per trained pair; H100/H200 SXM dense bf16 peak is 989 TFLOP/s).

    python bench/train_throughput.py --batch 256 --json bench/out/throughput.json
    python bench/train_throughput.py --smoke          # tiny CPU run: checks that it works
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import sys
import time

import torch

from metaclip.train.attention import xformers_usable
from metaclip.train.config import ConfigError, OptimConfig, model_preset
from metaclip.train.distributed import init_distributed, parallelize, shutdown
from metaclip.train.loss import clamp_logit_scale, clip_loss
from metaclip.train.model import build_model, forward_flops_per_pair
from metaclip.train.train import build_optimizer

_KERNEL_WORDS = ("flash", "fmha", "attention", "attn", "cutlass", "efficient")


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS


def _attention_kernels(step, device: torch.device) -> list[str]:
    """Names of the attention kernels one profiled step launches (CUDA only)."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    names = {e.key for e in prof.key_averages()}
    return sorted(n for n in names if any(w in n.lower() for w in _KERNEL_WORDS))


def measure(name: str, attention: str, ac: str, args, info) -> dict:
    device = info.device
    cfg = dataclasses.replace(model_preset(name), attention=attention)
    row = {
        "model": name,
        "attention": attention,
        "activation_checkpointing": ac,
        "batch": args.batch,
        "precision": args.precision,
        "device": device.type,
    }
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if attention == "xformers" and not xformers_usable(device, dtype):
        return {**row, "status": "n/a (xformers not usable here)"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    # compiled code of the previous configuration must neither be reused nor count against
    # this one's recompile limit
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = opt = None
    kernels: list[str] = []
    try:
        torch.manual_seed(0)
        model = build_model(cfg, device)
        model.set_attention_backend(attention, device, dtype)
        parallelize(
            model,
            info.mesh,
            precision=args.precision,
            activation_checkpointing={"off": "none", "on": "full"}.get(ac, ac),
            checkpoint_every=args.ac_every,
            compile=args.compile,
        )
        opt = build_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.2), device)
        v, t = cfg.vision, cfg.text
        images = torch.randn(args.batch, 3, v.image_size, v.image_size, device=device)
        tokens = torch.randint(1, t.vocab_size - 1, (args.batch, t.context_length), device=device)
        tokens[:, t.context_length // 2] = t.vocab_size - 1  # EOT for argmax pooling

        def step() -> None:
            loss = clip_loss(model(images, tokens), cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_logit_scale(model)

        for _ in range(args.warmup):
            step()
        if args.compile and not counters["stats"]["unique_graphs"]:
            raise RuntimeError(f"--compile: nothing was compiled for {name} ({dict(counters)})")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if args.kernels:
            kernels = _attention_kernels(step, device)
    except torch.OutOfMemoryError:
        return {**row, "status": "OOM"}
    except ConfigError as e:  # xformers installed but its probe failed: say why
        return {**row, "status": f"n/a ({e})"}
    finally:
        model = opt = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    pairs_s = args.batch * args.steps / dt
    train_flops = 3 * sum(forward_flops_per_pair(cfg))
    return {
        **row,
        "status": "ok",
        "pairs_per_s": pairs_s,
        "step_s": dt / args.steps,
        "train_tflop_per_pair": train_flops / 1e12,
        "mfu": pairs_s * train_flops / (args.peak_tflops * 1e12),
        "peak_mem_gib": _peak_bytes(device) / 2**30,
        "graph_breaks": sum(counters["graph_break"].values()),
        "kernels": kernels,
    }


def table(rows: list[dict]) -> str:
    """The rows side by side; "vs sdpa" is pairs/s over SDPA's at the same model and AC."""
    base = {
        (r["model"], r["activation_checkpointing"]): r["pairs_per_s"]
        for r in rows
        if r["status"] == "ok" and r["attention"] == "sdpa"
    }
    head = (
        f"{'model':<12} {'attention':<9} {'AC':<9} {'batch':>5} {'pairs/s':>9} "
        f"{'vs sdpa':>7} {'MFU':>6} {'peak GiB':>8}  status"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        ac = r["activation_checkpointing"]
        lead = f"{r['model']:<12} {r['attention']:<9} {ac:<9} {r['batch']:>5}"
        if r["status"] != "ok":
            out.append(f"{lead} {'-':>9} {'-':>7} {'-':>6} {'-':>8}  {r['status']}")
            continue
        b = base.get((r["model"], ac))
        ratio = f"{r['pairs_per_s'] / b:>6.2f}x" if b else f"{'-':>7}"
        out.append(
            f"{lead} {r['pairs_per_s']:>9.1f} {ratio} {100 * r['mfu']:>5.1f}% "
            f"{r['peak_mem_gib']:>8.2f}  ok"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="ViT-B-32,ViT-L-14,ViT-H-14")
    p.add_argument("--batch", type=int, default=256, help="pairs per step on the GPU")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attention", default="sdpa,xformers")
    p.add_argument("--ac", default="off,full,selective", help="activation checkpointing")
    p.add_argument("--ac-every", type=int, default=2, help="selective AC: every k-th block")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--kernels", action="store_true", help="name the attention kernels run")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model, fp32, CPU allowed, 2 steps: checks the bench works",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.batch, args.steps, args.warmup = "test-tiny", 8, 2, 1
        args.precision = "fp32"
    info = init_distributed("auto" if not args.smoke else "cpu")
    if info.device.type != "cuda" and not args.smoke:
        print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
        shutdown()
        return 2
    rows = []
    try:
        for name in args.models.split(","):
            for attention in args.attention.split(","):
                for ac in args.ac.split(","):
                    rows.append(measure(name, attention, ac, args, info))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        shutdown()
    device = torch.cuda.get_device_name() if info.device.type == "cuda" else "CPU"
    print(
        f"# train throughput on {device}, {args.precision}, {args.steps} timed steps; "
        f"MFU vs {args.peak_tflops:g} TFLOP/s"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
