"""Decode + augment throughput of the image loader, per CPU core and through the real loader.

Issue #20. What it measures, all on JPEGs it generates (photo-like: smooth colour fields,
shapes, texture and sensor-like noise; quality 90, 4:2:0, ~1.8 bits/pixel) at 512x384 and
1024x768:

1. Decode + the trainer's train augment (RandomResizedCrop scale 0.9-1, ratio 3/4-4/3,
   bicubic, to 224x224 uint8 HWC RGB) in one process on one thread, per decoder:
   PIL plain; PIL with JPEG draft mode (DCT scaling by 1/2, 1/4, 1/8, crop box scaled to
   match); simplejpeg and PyTurboJPEG (DCT-domain downscale by any n/8 libjpeg-turbo offers,
   then a PIL resize); pillow-simd plain and draft (in its own interpreter, --simd-python).
   All decoders get the same crop boxes, so the mean absolute pixel difference (MAD) to PIL
   plain says how much the DCT scaling changes the pixels. img/s per core = images per
   CPU-second of the thread (a pass preempted by other work costs wall time, not CPU time);
   the wall-clock rate is printed beside it.
2. The loader's own img/s by wall clock (``ResumableLoader`` over ``ShardStream``, its own
   decode and augment, batches of 64) with 1 and 2 DataLoader workers, on WebDataset shards
   it writes.
3. The CPU cores one GPU needs to be fed 400 img/s (ViT-H/14 at 45% MFU on an H100) with
   the fastest decoder: ceil(400 / img/s/core).

Every figure is the best of --repeat runs (default 3; repeats go round all decoders in
turn): the machine is shared, and the best run is the one least disturbed by other work.

    python bench/loader_bench.py                       # 200 images per size, 3 repeats
    python bench/loader_bench.py --json bench/out/loader.json
    python bench/loader_bench.py --smoke               # tiny, < 60 s: checks that it works

Optional decoders are rows saying "not installed" when missing: ``pip install simplejpeg``;
PyTurboJPEG needs the libturbojpeg0 Debian package, and Debian 12's (libjpeg-turbo 2.1)
works with PyTurboJPEG 1.x only (``pip install "PyTurboJPEG<2"``). pillow-simd replaces
Pillow, so it is never installed here; it is measured when --simd-python names an
interpreter that has it (default /tmp/simdvenv/bin/python; builds in ~1 minute):

    python -m venv /tmp/simdvenv && /tmp/simdvenv/bin/pip install numpy
    CC="cc -mavx2" /tmp/simdvenv/bin/pip install --no-binary pillow-simd pillow-simd
"""

from __future__ import annotations

import os

# One thread per process: the figures are per core. Set before numpy is imported so that
# no BLAS/OpenMP pool starts; Pillow and the JPEG libraries do not thread on their own.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

SIZES = ((512, 384), (1024, 768))
OUT = 224
TARGET_IMG_S = 400  # ViT-H/14 at 45% MFU on one H100 (docs/performance.md, Training)
BICUBIC = Image.Resampling.BICUBIC
NOISE = 5.0  # sensor noise sigma: ~1.8 bits/pixel, like photos saved at quality 90

# --- images ----------------------------------------------------------------------------------


def photo_jpeg(w: int, h: int, rng: np.random.Generator, quality: int = 90) -> bytes:
    """A JPEG that compresses like a photo: flat noise or pure gradients would be far smaller
    or far larger than a real picture, and decode time follows the coded size."""
    # smooth colour field: a tiny random image upscaled (sky, walls, out-of-focus background)
    field = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(6, 14))):  # objects with hard edges
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 12, w // 2)), y0 + int(rng.integers(h // 12, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    field = field.filter(ImageFilter.BoxBlur(1))  # lens softness
    # texture at several scales, then sensor noise: what makes real JPEGs 1-3 bits/pixel
    arr = np.asarray(field, dtype=np.float32)
    for cells, amp in ((w // 32, 14.0), (w // 8, 8.0)):
        small = amp * rng.standard_normal((max(cells * h // w, 1), cells), np.float32)
        tex = Image.fromarray(small, mode="F").resize((w, h), BICUBIC)
        arr += np.asarray(tex)[..., None]
    arr += NOISE * rng.standard_normal(arr.shape, np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def crop_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The trainer's RandomResizedCrop box, in whole pixels."""
    from metaclip.train.images import crop_box as trainer_box

    x0, y0, x1, y1 = trainer_box(w, h, OUT, rng)
    return int(x0), int(y0), int(x1), int(y1)


# --- decoders: (jpeg bytes, crop box in full-size pixels) -> 224x224x3 uint8 ------------------

Decoder = Callable[[bytes, tuple[int, int, int, int]], np.ndarray]


def _scaled_resize(img: Image.Image, box, full: tuple[int, int]) -> np.ndarray:
    # the image was decoded at a fraction of its size: scale the box by the same fraction
    # (float box: Pillow resamples from sub-pixel coordinates, no rounding drift)
    sx, sy = img.width / full[0], img.height / full[1]
    x0, y0, x1, y1 = box
    scaled = (x0 * sx, y0 * sy, min(x1 * sx, img.width), min(y1 * sy, img.height))
    return np.asarray(img.resize((OUT, OUT), BICUBIC, box=scaled))


def pil_plain(data: bytes, box) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(img.resize((OUT, OUT), BICUBIC, box=box))


def pil_draft(data: bytes, box) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    full = img.size
    cw, ch = box[2] - box[0], box[3] - box[1]
    # largest DCT scale 1/s that keeps the crop >= 224 px both ways: never upsample
    s = next((s for s in (8, 4, 2) if cw / s >= OUT and ch / s >= OUT), 1)
    if s > 1:
        # Pillow picks the largest scale whose result is >= the size asked for
        img.draft("RGB", (full[0] // s, full[1] // s))
    return _scaled_resize(img.convert("RGB"), box, full)


def make_simplejpeg() -> Decoder:
    import simplejpeg

    def decode(data: bytes, box) -> np.ndarray:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        cw, ch = box[2] - box[0], box[3] - box[1]
        # it picks the smallest libjpeg-turbo scale n/8 giving at least these dimensions
        arr = simplejpeg.decode_jpeg(
            data, "RGB", min_width=math.ceil(OUT * w / cw), min_height=math.ceil(OUT * h / ch)
        )
        return _scaled_resize(Image.fromarray(arr), box, (w, h))

    return decode


def make_turbojpeg() -> Decoder:
    from turbojpeg import TJPF_RGB, TurboJPEG

    tj = TurboJPEG()
    factors = sorted(tj.scaling_factors, key=lambda f: f[0] / f[1])

    def decode(data: bytes, box) -> np.ndarray:
        w, h, _, _ = tj.decode_header(data)
        cw, ch = box[2] - box[0], box[3] - box[1]
        # smallest scale that keeps the crop >= 224 px both ways
        f = next(f for f in factors if cw * f[0] / f[1] >= OUT and ch * f[0] / f[1] >= OUT)
        arr = tj.decode(data, pixel_format=TJPF_RGB, scaling_factor=f)
        return _scaled_resize(Image.fromarray(arr), box, (w, h))

    return decode


def pil_decoders(prefix: str) -> dict[str, Callable[[], Decoder]]:
    return {f"{prefix} plain": lambda: pil_plain, f"{prefix} draft": lambda: pil_draft}


# --- measurement -----------------------------------------------------------------------------


def time_pass(fn: Decoder, images: list[bytes], boxes: list) -> tuple[float, float]:
    """Seconds of (wall clock, this thread's CPU) for one pass over all images."""
    w0, c0 = time.perf_counter(), time.thread_time()
    for data, box in zip(images, boxes, strict=True):
        fn(data, box)
    return time.perf_counter() - w0, time.thread_time() - c0


def measure_decoders(
    factories: dict[str, Callable[[], Decoder]], work: dict, repeat: int
) -> list[dict]:
    """One row per (decoder, size). ``work[size]`` holds the images, boxes and reference
    outputs (PIL plain, computed by whoever made ``work``, so pillow-simd compares to Pillow).

    Repeats go round all decoders in turn, so a burst of someone else's work on the shared
    cores costs every decoder a pass rather than all passes of one decoder."""
    rows, timed = [], []
    for name, factory in factories.items():
        try:
            fn = factory()
        except Exception as e:  # ImportError, or a library the package cannot load
            reason = " ".join(str(e).split())[:80] or type(e).__name__
            for size in work:
                rows.append({"decoder": name, "size": size, "status": f"not installed ({reason})"})
            continue
        for size, w in work.items():
            outs = [fn(d, b) for d, b in zip(w["images"], w["boxes"], strict=True)]  # warm-up
            bad = [o.shape for o in outs if o.shape != (OUT, OUT, 3) or o.dtype != np.uint8]
            if bad:
                raise AssertionError(f"{name}: output {bad[0]}, want ({OUT}, {OUT}, 3) uint8")
            diff = np.mean(
                [np.abs(o.astype(np.int16) - r).mean() for o, r in zip(outs, w["ref"], strict=True)]
            )
            row = {"decoder": name, "size": size, "mad": float(diff), "status": "ok"}
            row["wall_s"] = row["cpu_s"] = math.inf
            rows.append(row)
            timed.append((row, fn, w))
    for _ in range(repeat):
        for row, fn, w in timed:
            wall, cpu = time_pass(fn, w["images"], w["boxes"])
            row["wall_s"], row["cpu_s"] = min(row["wall_s"], wall), min(row["cpu_s"], cpu)
    for row, _, w in timed:
        # img/s per core: images per second of CPU this thread got (a preempted pass costs
        # wall time, not CPU time); the wall-clock figure is kept beside it
        row["img_s"] = len(w["images"]) / row["cpu_s"]
        row["img_s_wall"] = len(w["images"]) / row["wall_s"]
    return rows


def measure_simd(python: str, work: dict, repeat: int) -> tuple[list[dict], str]:
    """pillow-simd's rows, measured by this script in the interpreter that has it."""
    if not Path(python).is_file():
        return [], f"not measured (no interpreter at {python}; see the module docstring)"
    probe = subprocess.run(
        [python, "-c", "import PIL; print(PIL.__version__)"], capture_output=True, text=True
    )
    # pillow-simd versions are Pillow's plus ".postN"
    if probe.returncode != 0 or ".post" not in probe.stdout:
        found = f"Pillow {probe.stdout.strip()}" if probe.returncode == 0 else "no PIL"
        return [], f"not measured ({python} has {found}, not pillow-simd)"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "work.pkl", Path(tmp) / "rows.json"
        src.write_bytes(pickle.dumps(work))
        run = subprocess.run(
            [python, __file__, "--simd-worker", str(src), str(dst), "--repeat", str(repeat)],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            tail = " ".join(run.stderr.split()[-20:])
            return [], f"not measured (worker failed: {tail})"
        return json.loads(dst.read_text()), f"pillow-simd {probe.stdout.strip()}"


def simd_worker(src: str, dst: str, repeat: int) -> None:
    work = pickle.loads(Path(src).read_bytes())  # written by this script a moment ago
    rows = measure_decoders(pil_decoders("pillow-simd"), work, repeat)
    Path(dst).write_text(json.dumps(rows))


# --- the loader ------------------------------------------------------------------------------


class ZeroTokenizer:
    """Tokens are not what this bench measures. A module-level class, not a lambda: the
    loader's forkserver workers receive it pickled."""

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 77), np.int64)


def write_shards(folder: Path, images: list[bytes], n_shards: int) -> list[str]:
    from metaclip.train.data import write_shard

    paths = []
    for s in range(n_shards):
        samples = [
            (f"s{s:03d}-{i:05d}", data, "jpg", {"texts": [f"a photo number {i}"]})
            for i, data in enumerate(images[s::n_shards])
        ]
        path = folder / f"shard-{s:03d}.tar"
        write_shard(path, samples)
        paths.append(str(path))
    return paths


def loader_version() -> str:
    """Which loader code gave the figures: it is being rewritten, so name the files' content."""
    import hashlib

    import metaclip.train.data as data

    folder = Path(data.__file__).parent
    files = [f for f in ("data.py", "images.py", "samples.py") if (folder / f).is_file()]
    digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in files))
    return f"{'+'.join(files)} sha256 {digest.hexdigest()[:12]}"


def loader_img_s(shards: list[str], workers: int, batch: int, batches: int, repeat: int) -> float:
    """Best img/s of ``repeat`` windows of ``batches`` batches, after 2 warm-up batches (worker
    start-up and the first shard reads are not what a long run sees). Kept small and in one
    place: the loader's API is being reworked."""
    from metaclip.train.data import ResumableLoader, ShardStream

    stream = ShardStream(
        shards,
        rank=0,
        world=1,
        num_workers=workers,
        batch_size=batch,
        tokenizer=ZeroTokenizer(),
        image_size=OUT,
        seed=0,
    )
    loader = ResumableLoader(stream, workers)
    try:
        for _ in range(2):
            next(loader)
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            n = sum(len(next(loader)["images"]) for _ in range(batches))
            best = min(best, (time.perf_counter() - t0) / n)
        return 1 / best
    finally:
        loader.close()


def measure_loader(work: dict, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="loader_bench-") as tmp:
        for size, w in work.items():
            folder = Path(tmp) / size
            folder.mkdir()
            try:
                shards = write_shards(folder, w["images"], args.shards)
            except Exception as e:
                rows.append({"size": size, "status": f"cannot write shards: {e!r}"})
                continue
            for workers in (1, 2):
                row = {"size": size, "workers": workers, "batch": args.batch}
                try:
                    rate = loader_img_s(shards, workers, args.batch, args.batches, args.repeat)
                    rows.append({**row, "img_s": rate, "status": "ok"})
                except Exception as e:  # the API moved: report it, keep the other figures
                    rows.append({**row, "status": f"failed: {type(e).__name__}: {e}"})
    return rows


# --- main ------------------------------------------------------------------------------------


def make_work(n: int) -> dict:
    rng = np.random.default_rng(20)
    work = {}
    for w, h in SIZES:
        images = [photo_jpeg(w, h, rng) for _ in range(n)]
        boxes = [crop_box(w, h, rng) for _ in range(n)]
        ref = [pil_plain(d, b) for d, b in zip(images, boxes, strict=True)]
        work[f"{w}x{h}"] = {"images": images, "boxes": boxes, "ref": ref}
    return work


def print_table(rows: list[dict], sizes: list[str], simd_note: str) -> None:
    names = list(dict.fromkeys(r["decoder"] for r in rows))
    cells = {(r["decoder"], r["size"]): r for r in rows}
    head = f"{'decoder':<20}" + "".join(f"{s + ' img/s':>17}{'(wall)':>8}{'MAD':>7}" for s in sizes)
    print(head)
    print("-" * len(head))
    for name in names:
        line = f"{name:<20}"
        for size in sizes:
            r = cells[(name, size)]
            if r["status"] == "ok":
                line += f"{r['img_s']:>17.0f}{r['img_s_wall']:>8.0f}{r['mad']:>7.3f}"
            else:
                line += f"  {r['status']}"
                break
        print(line)
    if not any(n.startswith("pillow-simd") for n in names):
        print(f"{'pillow-simd':<20}  {simd_note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) that checks it works")
    p.add_argument("--images", type=int, default=200, help="JPEGs per size")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept")
    p.add_argument("--shards", type=int, default=8, help="loader shards per size")
    p.add_argument("--batch", type=int, default=64, help="loader batch size")
    p.add_argument("--batches", type=int, default=8, help="loader batches per timed window")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--simd-python", default="/tmp/simdvenv/bin/python")
    p.add_argument("--simd-worker", nargs=2, help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    if args.simd_worker:
        simd_worker(*args.simd_worker, args.repeat)
        return 0
    if args.smoke:
        args.images, args.repeat, args.shards, args.batch, args.batches = 10, 1, 2, 4, 2

    print(
        f"loader_bench: {args.images} JPEGs per size (q90, photo-like), crop to {OUT}x{OUT} "
        f"bicubic; every figure is the best of {args.repeat} run(s); one process, one thread"
    )
    print(
        f"python {platform.python_version()}, Pillow {PIL.__version__}, "
        f"{os.cpu_count()} CPUs (shared: figures are noisy)"
    )
    t0 = time.perf_counter()
    work = make_work(args.images)
    sizes = list(work)
    kb = {s: np.mean([len(d) for d in w["images"]]) / 1024 for s, w in work.items()}
    print("mean JPEG size: " + ", ".join(f"{s} {v:.0f} KB" for s, v in kb.items()))
    print(f"generated in {time.perf_counter() - t0:.1f} s\n")

    factories = {
        **pil_decoders("PIL"),
        "simplejpeg": make_simplejpeg,
        "PyTurboJPEG": make_turbojpeg,
    }
    rows = measure_decoders(factories, work, args.repeat)
    simd_rows, simd_note = measure_simd(args.simd_python, work, args.repeat)
    rows += simd_rows
    print(
        "1. Decode + RandomResizedCrop to 224 (uint8 HWC) on one thread. img/s = images per "
        "CPU-second\n   (per core), (wall) = per wall-clock second; MAD = mean |pixel - PIL "
        "plain| on the same\n   crop (0-255 scale)"
    )
    print_table(rows, sizes, simd_note)
    if simd_rows:
        print(f"   ({simd_note}, run in {args.simd_python})")

    print(
        f"\n2. The loader (ResumableLoader + ShardStream, its own decode and augment), img/s "
        f"by wall clock,\n   batch {args.batch}, {args.shards} shards per size, best "
        f"{args.batches}-batch window after 2 warm-up batches"
    )
    try:
        version = loader_version()
    except Exception as e:
        version = f"unknown ({type(e).__name__}: {e})"
    print(f"   loader code: {version}")
    loader_rows = measure_loader(work, args)
    for r in loader_rows:
        what = f"{r['img_s']:.0f} img/s" if r["status"] == "ok" else r["status"]
        print(f"   {r['size']:<10} workers={r.get('workers', '-')}: {what}")

    print(f"\n3. Cores per GPU for >= {TARGET_IMG_S} img/s (ViT-H/14, 45% MFU, H100)")
    cores = {}
    for size in sizes:
        ok = [r for r in rows if r["size"] == size and r["status"] == "ok"]
        best = max(ok, key=lambda r: r["img_s"])
        cores[size] = {
            "decoder": best["decoder"],
            "img_s": best["img_s"],
            "cores": math.ceil(TARGET_IMG_S / best["img_s"]),
        }
        line = f"   {size:<10} best decoder {best['decoder']:<18} {best['img_s']:>5.0f} img/s/core"
        print(f"{line} -> {cores[size]['cores']} core(s)")
    # the loader as it stands, for comparison: one worker is one core (plus normalize, batching)
    for r in loader_rows:
        if r.get("workers") == 1 and r["status"] == "ok":
            line = f"   {r['size']:<10} the loader, 1 worker       {r['img_s']:>5.0f} img/s/core"
            print(f"{line} -> {math.ceil(TARGET_IMG_S / r['img_s'])} core(s)")
    print(f"done in {time.perf_counter() - t0:.1f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "images": args.images,
            "repeat": args.repeat,
            "smoke": args.smoke,
            "pillow": PIL.__version__,
            "cpus": os.cpu_count(),
            "jpeg_kb": kb,
            "pillow_simd": simd_note,
            "loader_code": version,
        }
        doc = {"meta": meta, "decode": rows, "loader": loader_rows, "cores_per_gpu": cores}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
