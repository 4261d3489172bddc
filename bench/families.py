"""Defect families: the batched engine against a per-image CPU reference of the same family.

For each family (Perlin blob, Poisson patch) and each ``--size``, images/s of

* ``per-image``: the family written per sample in numpy and PIL (what DRAEM, MemSeg, GLASS and NSA
  do in their DataLoader workers), with the engine's algorithm: its own noise lattices, rotation,
  union or intersection, threshold, object gating and blend, the noise evaluated on the same
  coarse grid and resized (PIL); or a patch resampled with PIL, placed on the object and
  blended by the same exact sine-basis Poisson solve (the source on the patch rectangle's
  edges), one box, its own patch with a one-pixel ring, at a time. Run in ``--workers``
  processes of one BLAS thread each, one image per task, as a DataLoader does.
* ``batched``: `ssad.synth.DefectSynthesizer` with that family only, one call per batch of
  ``--batch`` (every sample gets a defect: class_probs (0, 1, 0)), and no colour jitter, as the
  reference has none (the engine then skips its colour map).

Both sides run under glibc's default allocator, then again with freed memory kept for reuse
(``ssad.cpu.retain_freed_memory``, as ``python -m ssad.run`` sets on the CPU; the reference's
workers too): large per-batch tensors otherwise pay fresh page faults on every call.

``--repeats`` rounds of ``--batches`` batches per side, the two sides taking turns (a shared CPU
is noisy: both see the same spells), after one warm-up batch each; the medians of each side's
rate and of the per-round speed-ups (with their range), and the page faults per batched call.
JSON to ``--out`` (atomically) and a Markdown table to stdout.

    python bench/families.py --out bench/results/families_cpu.json
    python bench/families.py --families poisson --sizes 128 --out /tmp/poisson_128.json  # one row
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
from multiprocessing import get_context
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssad.atomic import write_json
from ssad.cpu import retain_freed_memory
from ssad.synth import DefectSynthesizer, SynthConfig
from synth_throughput import cpu_environment
from timing import round_ratios, seconds_per_call

FAMILIES = {"perlin": (0.0, 1.0, 0.0), "poisson": (0.0, 0.0, 1.0)}


# --- the per-image reference ---------------------------------------------------------------------


def _perlin_np(rng: np.random.Generator, size: int, cells: int, angle: float) -> np.ndarray:
    """(size, size) Perlin noise with ``cells`` lattice cells across, coordinates turned by ``angle``."""
    gradients = rng.uniform(0, 2 * np.pi, (cells, cells))
    c = (np.arange(size) + 0.5) / size - 0.5
    y, x = np.meshgrid(c, c, indexing="ij")
    t = math.radians(angle)
    u = (x * math.cos(t) - y * math.sin(t)) * cells
    v = (x * math.sin(t) + y * math.cos(t)) * cells
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0

    def corner(du: int, dv: int) -> np.ndarray:
        a = gradients[(v0 + dv) % cells, (u0 + du) % cells]
        return np.cos(a) * (fu - du) + np.sin(a) * (fv - dv)

    fade = lambda s: s * s * s * (s * (s * 6 - 15) + 10)  # noqa: E731
    wu, wv = fade(fu), fade(fv)
    top = corner(0, 0) + wu * (corner(1, 0) - corner(0, 0))
    bottom = corner(0, 1) + wu * (corner(1, 1) - corner(0, 1))
    return top + wv * (bottom - top)


def perlin_one(task: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> np.ndarray:
    """One image (H, W, 3) uint8 with a Perlin blob from ``other``, inside ``inside`` (H, W) bool."""
    image, other, inside, seed = task
    rng = np.random.default_rng(seed)
    size = image.shape[0]
    angle = rng.uniform(0, 360)
    grid = min(size, 64)  # as the engine: 4 points per cell of the finest (16-cell) lattice, then resized
    first = _perlin_np(rng, grid, 2 ** rng.integers(1, 5), angle)
    second = _perlin_np(rng, grid, 2 ** rng.integers(1, 5), angle)
    coarse = [first, np.maximum(first, second), np.minimum(first, second)][rng.choice(3, p=[0.5, 0.25, 0.25])]
    # As the engine: a threshold that keeps under 1% of the object (counted on the grid) is lowered
    # to keep that share; the object's noisiest pixel always belongs to the mask.
    coarse_inside = inside[:: size // grid, :: size // grid]  # nearest, as F.interpolate picks
    keep = max(1, math.ceil(0.01 * coarse_inside.sum()))
    threshold = min(rng.uniform(0.1, 0.35), np.partition(coarse[coarse_inside], -keep)[-keep])
    noise = np.asarray(Image.fromarray(coarse.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
    mask = (noise >= min(threshold, noise[inside].max())) & inside
    beta = rng.uniform(0.3, 1.0)
    blended = beta * other.astype(np.float32) + (1 - beta) * image.astype(np.float32)
    return np.where(mask[..., None], np.rint(blended).clip(0, 255).astype(np.uint8), image)


def _sines(n: int) -> np.ndarray:
    """(n + 2, n) sin(pi k j / (n + 1)), k = 0..n + 1 (0 on the box's border), j = 1..n."""
    k = np.arange(n + 2)[:, None]
    return np.sin(np.pi * k * np.arange(1, n + 1)[None, :] / (n + 1))


def rectangle_change_np(e: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """One box's blend change (C, h - 2, w - 2), as `ssad.synth.poisson.rectangle_change`: ``e``
    (C, h, w) the patch minus the image inside the rectangle of rows top..bottom and columns
    left..right (0 elsewhere, off the border); the sine transform of the source on its edges, then
    the solve back."""
    h, w = e.shape[-2:]
    rows, cols = _sines(h - 2), _sines(w - 2)
    eigen = 4 - 2 * np.cos(np.pi * np.arange(1, h - 1) / (h - 1))[:, None] - 2 * np.cos(
        np.pi * np.arange(1, w - 1) / (w - 1))[None, :]
    steps_rows = np.stack((rows[top - 1] - rows[top], rows[bottom + 1] - rows[bottom]))  # (2, h - 2)
    steps_cols = np.stack((cols[left - 1] - cols[left], cols[right + 1] - cols[right]))  # (2, w - 2)
    channels = e.shape[0]
    row_terms = np.concatenate((np.broadcast_to(steps_rows, (channels, 2, h - 2)),
                                e[:, :, [left, right]].transpose(0, 2, 1) @ rows), axis=1)  # (C, 4, h - 2)
    col_terms = np.concatenate((e[:, [top, bottom], :] @ cols,
                                np.broadcast_to(steps_cols, (channels, 2, w - 2))), axis=1)  # (C, 4, w - 2)
    spectrum = row_terms.transpose(0, 2, 1) @ col_terms / (eigen * ((h - 1) * (w - 1) / 4))
    return rows[1:-1] @ spectrum @ cols[1:-1] + e[:, 1:-1, 1:-1]


def poisson_one(task: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> np.ndarray:
    """One image (H, W, 3) uint8 with a patch of ``other`` resampled (PIL) and Poisson-blended."""
    image, other, inside, seed = task
    rng = np.random.default_rng(seed)
    size = image.shape[0]
    side = rng.uniform(0.1, 0.3) * size
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    pw, ph = max(2, int(side * math.sqrt(aspect))), max(2, int(side / math.sqrt(aspect)))
    scale = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    sw, sh = min(size, max(1, int(pw / scale))), min(size, max(1, int(ph / scale)))
    sx, sy = rng.integers(0, size - sw + 1), rng.integers(0, size - sh + 1)
    patch = np.asarray(Image.fromarray(other[sy:sy + sh, sx:sx + sw]).resize((pw, ph), Image.BILINEAR), np.float32)
    bh, bw = min(size, ph + 2), min(size, pw + 2)
    # As the engine: the box's centre on an object pixel where the box fits (anywhere if none).
    admissible = np.flatnonzero(inside[bh // 2:size - (bh - 1) // 2, bw // 2:size - (bw - 1) // 2])
    if admissible.size:
        y, x = np.divmod(rng.choice(admissible), size - bw + 1)
    else:
        y, x = rng.integers(0, size - bh + 1), rng.integers(0, size - bw + 1)
    top, left = int(y), int(x)
    target = image[top:top + bh, left:left + bw].astype(np.float32)
    e = np.zeros_like(target)
    py, px = (bh - ph) // 2, (bw - pw) // 2
    e[py:py + ph, px:px + pw] = patch - target[py:py + ph, px:px + pw]
    d = rectangle_change_np(e.transpose(2, 0, 1), py, py + ph - 1, px, px + pw - 1)
    out = image.copy()
    blended = target[1:-1, 1:-1] + d.transpose(1, 2, 0)
    out[top + 1:top + bh - 1, left + 1:left + bw - 1] = np.rint(blended).clip(0, 255).astype(np.uint8)
    return out


# --- measurement ---------------------------------------------------------------------------------


def _interleaved_rates(reference, batched, count: int, batches: int, repeats: int
                       ) -> tuple[list[float], list[float], float]:
    """Images/s of each side, ``repeats`` times, the two sides taking turns so that both see the
    same spells of a noisy machine (after one warm-up call each); and the page faults this process
    took per batched call (the reference's are in its workers)."""
    reference(), batched()
    rates: tuple[list[float], list[float]] = ([], [])
    faults = 0
    for _ in range(repeats):
        for run, into in ((reference, rates[0]), (batched, rates[1])):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            into.append(count / seconds_per_call(run, batches))
            if run is batched:
                faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return *rates, faults / (repeats * batches)


def _measure(pool: Pool, allocator: str, args: argparse.Namespace) -> list[dict]:
    """One row per size and family: both sides' rates and the speed-ups, the reference in ``pool``."""
    rows = []
    for size in args.sizes:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, generator=g)
        masks = torch.zeros(1, 1, size, size, dtype=torch.bool)
        masks[..., size // 8 : -size // 8, size // 8 : -size // 8] = True
        arrays = images.permute(0, 2, 3, 1).numpy()
        inside = masks[0, 0].numpy()
        for family in args.families:
            probs = FAMILIES[family]
            one = perlin_one if family == "perlin" else poisson_one
            tasks = [(arrays[i], arrays[(i + 1) % args.batch], inside, i) for i in range(args.batch)]
            synth = DefectSynthesizer(SynthConfig(class_probs=(0.0, 1.0, 0.0), family_probs=probs,
                                                  brightness=0.0, contrast=0.0, hue=0.0))
            reference, batched, faults = _interleaved_rates(lambda: pool.map(one, tasks, chunksize=1),
                                                    lambda: synth(images, masks, generator=g),
                                                    args.batch, args.batches, args.repeats)
            speedup, speedup_range = round_ratios(batched, reference)
            rows.append({"family": family, "size": size, "batch": args.batch, "allocator": allocator,
                         "per_image_images_per_s": statistics.median(reference),
                         "batched_images_per_s": statistics.median(batched),
                         "speedup": speedup, "batched_page_faults_per_call": faults,
                         "speedup_range": speedup_range})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--allocators", nargs="+", choices=["default", "retain"], default=["default", "retain"],
                   help="glibc's default, then freed memory kept (mallopt is process-wide: default runs first)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if min(args.batch, args.batches, args.repeats, args.workers) < 1:
        p.error("--batch, --batches, --repeats and --workers must be at least 1")

    # One BLAS thread per reference worker (inherited by the spawned processes; this process's
    # libraries are loaded already): numpy's OpenBLAS would start one per core in each worker,
    # and 2 workers would then fight over the 2 cores.
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    for allocator in sorted(args.allocators, key=["default", "retain"].index):  # retain cannot be undone
        if allocator == "retain" and not retain_freed_memory():
            print("allocator 'retain' unavailable (not glibc): skipped")
            continue
        initializer = retain_freed_memory if allocator == "retain" else None
        with get_context("spawn").Pool(args.workers, initializer=initializer) as pool:
            rows += _measure(pool, allocator, args)

    write_json(args.out, {"env": cpu_environment(workers=args.workers), "rows": rows})
    print("\n| family | size | allocator | per-image, 2 processes (img/s) | batched (img/s) | speed-up (range) "
          "| page faults per batched call |\n|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        low, high = r["speedup_range"]
        print(f"| {r['family']} | {r['size']} | {r['allocator']} | {r['per_image_images_per_s']:.0f} "
              f"| {r['batched_images_per_s']:.0f} | {r['speedup']:.1f}x ({low:.1f}-{high:.1f}) "
              f"| {r['batched_page_faults_per_call']:.0f} |")


if __name__ == "__main__":
    main()
