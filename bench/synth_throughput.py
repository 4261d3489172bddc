"""Synthesis throughput: the per-image CPU baseline vs the batched engine, side by side.

Measures images/s of the 3-class pretext augmentation at ``--size`` x ``--size``, batch ``--batch``:

* ``baseline``: ``bench/cpu_baseline.py`` (PIL per image in a DataLoader) with 0, 1, 2 workers;
  with ``--device cuda`` each batch is also copied to the GPU (pinned memory), as in training.
* ``ssad``: ``ssad.synth.DefectSynthesizer`` on ``--device``; the images sit there as one tensor
  and each step draws a batch by index, as the training loop does.

Both run under glibc's default allocator, then again with freed memory kept for reuse
(``ssad.cpu.retain_freed_memory``): large per-batch tensors otherwise pay fresh page faults.

Each measurement runs ``--warmup`` batches, then ``--repeats`` times ``--batches`` batches, and
reports the rate at the median time (``bench/timing.py``: CUDA events on a GPU). Results go to
``--out`` as JSON (written atomically) and to stdout as a markdown table.

    python bench/synth_throughput.py --out bench/results/synth_throughput_cpu.json
    python bench/synth_throughput.py --device cuda --out bench/results/synth_throughput_cuda.json
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cpu_baseline import make_loader
from ssad.atomic import write_json
from ssad.cpu import retain_freed_memory
from ssad.data.layout import find_images, no_images_error
from ssad.synth import DefectSynthesizer, SynthConfig
from timing import median_seconds

DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
# The engine as the training loop runs it: the spec's defaults, without the float range check
# (one read-back per call; uint8 needs none).
ENGINE_CONFIG = SynthConfig(check_values=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--batches", type=int, default=10, help="timed batches per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    p.add_argument("--device", default="cpu", help="device of the ssad engine: cpu or cuda[:i]")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="baseline workers")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--allocators", nargs="+", choices=["default", "retain"], default=["default", "retain"],
                   help="CPU allocator settings to measure, in order ('retain' is process-wide, so it goes last)")
    p.add_argument("--images", type=Path, help="folder of images (searched recursively); "
                   "default: procedural images")
    p.add_argument("--num-images", type=int, default=256, help="images held in memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON output path")
    return p.parse_args(argv)


def load_images(folder: Path, size: int, limit: int) -> torch.Tensor:
    """Decodes up to ``limit`` images under ``folder``, resized; returns (N,3,size,size) uint8."""
    paths = find_images(folder)[:limit]
    if not paths:
        raise SystemExit(no_images_error(folder))
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        for p in paths
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def procedural_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields plus pixel noise, a stand-in for photos: (n,3,size,size) uint8."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    noisy = smooth + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def measure(step: Callable[[], None], device: torch.device, args: argparse.Namespace) -> float:
    """Images/s of ``step`` (which produces one batch) at the median time of ``args.repeats`` runs."""
    return args.batch / median_seconds(step, args.batches, args.repeats, args.warmup, device)


def bench_baseline(images: torch.Tensor, workers: int, dtype: torch.dtype, device: torch.device,
                   args: argparse.Namespace) -> float:
    """Images/s of the DataLoader baseline, batches delivered on ``device``."""
    pil_images = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    steps = args.warmup + args.repeats * args.batches
    loader = make_loader(pil_images, batch_size=args.batch, num_workers=workers, dtype=dtype,
                         seed=args.seed, samples_per_epoch=steps * args.batch,
                         pin_memory=device.type == "cuda")
    batches = iter(loader)

    def step() -> None:
        for tensor in next(batches):
            tensor.to(device, non_blocking=True)

    return measure(step, device, args)


def bench_ssad(images: torch.Tensor, dtype: torch.dtype, device: torch.device, args: argparse.Namespace) -> float:
    """Images/s of ``DefectSynthesizer`` on ``device``, drawing batches by index from ``images``."""
    images = images.to(device)
    if dtype == torch.float32:
        images = images.float() / 255
    synth = DefectSynthesizer(ENGINE_CONFIG).to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)

    @torch.inference_mode()
    def step() -> None:
        index = torch.randint(len(images), (args.batch,), generator=g, device=device)
        synth(images[index], generator=g)

    return measure(step, device, args)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_environment(**extra) -> dict:
    """What a CPU benchmark's JSON records of the machine: torch, its threads, the CPU; plus ``extra``."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu": device_name(torch.device("cpu")), **extra}


def markdown_table(results: list[dict], ratios: dict) -> str:
    lines = ["| impl | device | workers | allocator | dtype | images/s |", "|---|---|---:|---|---|---:|"]
    for r in results:
        workers = "" if r["workers"] is None else r["workers"]
        lines.append(f"| {r['impl']} | {r['device']} | {workers} | {r['allocator']} | {r['dtype']} "
                     f"| {r['images_per_s']:,.0f} |")
    lines.append("")
    lines += [f"{name}: {value:.1f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False")
    if args.images is not None:
        images = load_images(args.images, args.size, args.num_images)
    else:
        images = procedural_images(args.num_images, args.size, args.seed)

    load_before = os.getloadavg()[0]
    results = []
    # Both sides under glibc's default allocator first, then both again with freed memory kept
    # (`ssad.cpu.retain_freed_memory`, process-wide and inherited by the DataLoader workers).
    for allocator in args.allocators:
        if allocator == "retain" and not retain_freed_memory():
            print("allocator 'retain' unavailable (not glibc): skipped")
            continue
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            for workers in args.workers:
                rate = bench_baseline(images, workers, dtype, device, args)
                results.append({"impl": "baseline", "device": "cpu", "workers": workers, "allocator": allocator,
                                "dtype": dtype_name, "images_per_s": rate})
            rate = bench_ssad(images, dtype, device, args)
            results.append({"impl": "ssad", "device": str(device), "workers": None, "allocator": allocator,
                            "dtype": dtype_name, "images_per_s": rate})

    # Compare with the baseline at the most workers measured (2 by default), allocator by allocator.
    most = max(args.workers)
    rates = {(r["impl"], r["workers"], r["allocator"], r["dtype"]): r["images_per_s"] for r in results}
    ratios = {
        f"ssad_vs_baseline_{most}workers_{a}_{d}": rates["ssad", None, a, d] / rates["baseline", most, a, d]
        for a in args.allocators for d in args.dtypes if ("ssad", None, a, d) in rates
    }

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.update(images=str(args.images) if args.images else "procedural", num_images=len(images),
                  synth_config=repr(ENGINE_CONFIG))
    env = {"torch": torch.__version__, "device_name": device_name(device),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(),
           # Other busy processes skew the CPU figures; the load shows whether any were running.
           "load_avg_1m": {"before": load_before, "after": os.getloadavg()[0]}}
    payload = {"config": config, "env": env, "results": results, "ratios": ratios}
    write_json(args.out, payload)
    print(markdown_table(results, ratios))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
