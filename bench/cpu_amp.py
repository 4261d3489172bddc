"""A pretext training step on the CPU in float32 and under bf16 autocast, side by side in one run.

Times ssad's own step (`ssad.train.optimisation_step`: ResNet-18 pretext model, channels-last,
SGD) on one fixed batch, float32 against ``torch.autocast("cpu", dtype=torch.bfloat16)`` (what
``train.cpu_amp`` turns on), the two taking turns for ``--repeats`` rounds of ``--steps`` steps
(a shared CPU is noisy: both see the same spells), after one warm-up step each. Reports the median
milliseconds per step of each, the median of the per-round speed-ups with their range, and whether
this CPU computes bf16 natively (`ssad.cpu.native_bf16`: AVX512-BF16 or AMX; elsewhere oneDNN
emulates bf16 and the second column is slower). JSON to ``--out`` (atomically):

    python bench/cpu_amp.py --out bench/results/cpu_amp.json
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python bench/cpu_amp.py --out /tmp/emulated.json  # bf16 emulated
"""

from __future__ import annotations

import argparse
import os
import statistics
from functools import partial
from pathlib import Path

import torch

from ssad.atomic import write_json
from ssad.cpu import native_bf16, retain_freed_memory
from ssad.model import create_model
from ssad.train import optimisation_step
from synth_throughput import cpu_environment
from timing import round_ratios, taking_turns


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="image side (configs/cpu.toml trains at 128)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round and precision")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if min(args.size, args.batch, args.steps, args.repeats) < 1:
        p.error("--size, --batch, --steps and --repeats must be at least 1")
    retain_freed_memory()  # as python -m ssad.run on the CPU

    torch.manual_seed(0)
    model, _ = create_model("scratch")
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 3, (args.batch,))
    precisions = {"float32": torch.autocast("cpu", enabled=False),
                  "bf16": torch.autocast("cpu", dtype=torch.bfloat16)}

    steps = {name: partial(optimisation_step, model, optimizer, images, labels, autocast, torch.channels_last)
             for name, autocast in precisions.items()}
    for step in steps.values():
        step()
    seconds = taking_turns(steps, args.steps, args.repeats)
    speedup, (least, most) = round_ratios(seconds["float32"], seconds["bf16"])
    result = {
        "env": cpu_environment(native_bf16=native_bf16(), onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA")),
        "size": args.size, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "ms_per_step": {name: statistics.median(s) * 1e3 for name, s in seconds.items()},
        "bf16_speedup": speedup, "bf16_speedup_range": [least, most],
    }
    write_json(args.out, result)
    ms = result["ms_per_step"]
    print(f"| precision | ms per step (median of {args.repeats}) | images/s |\n|---|---:|---:|")
    for name in precisions:
        print(f"| {name} | {ms[name]:,.0f} | {args.batch / ms[name] * 1e3:.1f} |")
    print(f"bf16 speed-up {speedup:.2f}x ({least:.2f}-{most:.2f}); "
          f"native bf16: {result['env']['native_bf16']}")
    return result


if __name__ == "__main__":
    main()
