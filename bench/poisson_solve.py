"""The Poisson family's two solves, side by side: the dense right-hand side (`poisson_change`,
any mask) against the source on the patch rectangle's edges (`rectangle_change`, what the
synthesizer uses).

For each ``--size``: the synthesizer's Poisson-only call on a uint8 batch of ``--batch``, once
with each solve (the dense one swapped into `ssad.synth.functional` for the measurement), the two
taking turns for ``--repeats`` rounds of ``--batches`` calls; the medians and the median per-round
speed-up with its range; and what the swap changes in the output of one call (values that differ,
by how much, and mask pixels that differ). Freed memory is kept for reuse
(`ssad.cpu.retain_freed_memory`, as ``python -m ssad.run`` does on the CPU). JSON to ``--out``
(atomically).

    python bench/poisson_solve.py --out bench/results/poisson_solve_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path

import torch

import ssad.synth.functional as functional
from ssad.atomic import write_json
from ssad.cpu import retain_freed_memory
from ssad.synth import DefectSynthesizer, SynthConfig
from ssad.synth.poisson import poisson_change, rectangle_change
from synth_throughput import cpu_environment
from timing import round_ratios, taking_turns


def dense_change(target: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`rectangle_change`'s signature, solved with the dense right-hand side."""
    return poisson_change(target, patch, (rows[:, :, None] & cols[:, None, :])[:, None])


SOLVES = {"dense": dense_change, "rectangle": rectangle_change}


def measure(size: int, args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, generator=g)
    synth = DefectSynthesizer(SynthConfig(class_probs=(0.0, 1.0, 0.0), family_probs=(0.0, 0.0, 1.0)))

    def call(solve: str, seed: int | None = None):
        functional.rectangle_change = SOLVES[solve]
        generator = g if seed is None else torch.Generator().manual_seed(seed)
        return synth(images, generator=generator)

    outputs = {name: call(name, seed=1) for name in SOLVES}  # also the warm-up
    times = taking_turns({name: partial(call, name) for name in SOLVES}, args.batches, args.repeats)
    functional.rectangle_change = rectangle_change
    speedup, speedup_range = round_ratios(times["dense"], times["rectangle"])
    diff = (outputs["dense"].images.int() - outputs["rectangle"].images.int()).abs()
    return {
        "size": size, "batch": args.batch,
        "ms_per_call": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "speedup": speedup, "speedup_range": speedup_range,
        "values": diff.numel(), "values_differing": int((diff > 0).sum()), "largest_difference": int(diff.max()),
        "mask_pixels": int(outputs["rectangle"].masks.sum()),
        "mask_pixels_differing": int((outputs["dense"].masks ^ outputs["rectangle"].masks).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if min(args.batch, args.batches, args.repeats) < 1:
        p.error("--batch, --batches and --repeats must be at least 1")
    retain_freed_memory()
    rows = []
    for size in args.sizes:
        rows.append(measure(size, args))
        print(rows[-1], flush=True)
    write_json(args.out, {"env": cpu_environment(), "rows": rows})
    print("\n| size | dense (ms/call) | rectangle (ms/call) | speed-up (range) | values differing | masks differing |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        low, high = r["speedup_range"]
        print(f"| {r['size']} | {r['ms_per_call']['dense']:.1f} | {r['ms_per_call']['rectangle']:.1f} "
              f"| {r['speedup']:.2f}x ({low:.2f}-{high:.2f}) | {r['values_differing']} of {r['values']} "
              f"(at most {r['largest_difference']}) | {r['mask_pixels_differing']} of {r['mask_pixels']} |")


if __name__ == "__main__":
    main()
