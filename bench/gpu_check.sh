#!/usr/bin/env bash
# GPU check of the trainer, about 6-8 minutes on one H100/H200:
#   1. the GPU-marked tests (xformers vs SDPA forward+backward on packed-qkv views in bf16,
#      NaFlex packed images through xformers' BlockDiagonalMask vs SDPA's dense mask,
#      the xformers probe, FSDP + activation checkpointing + torch.compile on CUDA);
#   2. bench/train_throughput.py for B/32, L/14, H/14 (bf16; SDPA vs xformers; AC off, full,
#      selective): pairs/s, MFU, peak memory, and the attention kernels that ran;
#   3. a torch.compile pass (B/32 and H/14, selective AC) counting TORCH_LOGS=recompiles.
# Installs nothing: it needs what `pip install -e ".[train]"` brings (xformers optional; its
# rows say n/a without it). Results go to $OUT_DIR (default bench/out/gpu_check).
#   bench/gpu_check.sh              # on a GPU machine
#   bench/gpu_check.sh --cpu-smoke  # the same plumbing on CPU with the tiny model
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-bench/out/gpu_check}
PY=${PYTHON:-python}
BATCH=${BATCH:-128}
mkdir -p "$OUT_DIR"

smoke=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then
    smoke=1
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--cpu-smoke]" >&2
    exit 2
fi

bench() {  # bench SECONDS NAME [args...]: one throughput run, JSON to $OUT_DIR/NAME.json
    local limit=$1 name=$2
    shift 2
    if ((smoke)); then
        set -- --smoke "$@"
    fi
    timeout "$limit" "$PY" bench/train_throughput.py --json "$OUT_DIR/$name.json" "$@"
}

echo "== environment"
"$PY" - <<'PY'
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
spec = importlib.util.find_spec("xformers")
if spec is None:
    print("xformers: not installed (its rows are n/a)")
else:
    import xformers
    print("xformers", xformers.__version__)
PY
if ((!smoke)); then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "no CUDA device: run with --cpu-smoke" >&2
        exit 2
    }
fi

echo "== GPU tests"
if ((smoke)); then  # they skip without CUDA; this checks that they collect
    timeout 300 "$PY" -m pytest -q -m gpu tests/train -p no:cacheprovider
else
    timeout 240 "$PY" -m pytest -q -m gpu tests/train -p no:cacheprovider -rs
fi

echo "== throughput (eager): B/32, L/14, H/14 x {sdpa, xformers} x AC {off, full, selective}"
bench 300 eager --models ViT-B-32,ViT-L-14,ViT-H-14 --batch "$BATCH" \
    --steps 5 --warmup 2 --attention sdpa,xformers --ac off,full,selective --kernels \
    2> "$OUT_DIR/eager.log"

echo "== throughput (compiled blocks), recompiles logged"
TORCH_LOGS=recompiles bench 240 compiled --models ViT-B-32,ViT-H-14 \
    --batch "$BATCH" --steps 5 --warmup 3 --attention sdpa,xformers --ac selective --compile \
    2> "$OUT_DIR/compiled.log"
recompiles=$(grep -c "Recompiling function" "$OUT_DIR/compiled.log" || true)
echo "recompiles (TORCH_LOGS=recompiles): $recompiles (details: $OUT_DIR/compiled.log)"

echo "== attention kernels that ran"
"$PY" - "$OUT_DIR/eager.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
for r in rows:
    if r["status"] == "ok":
        names = ", ".join(k[:60] for k in r.get("kernels", [])) or "(no CUDA profile)"
        print(f"{r['model']:<10} {r['attention']:<9} AC {r['activation_checkpointing']:<9} {names}")
PY
