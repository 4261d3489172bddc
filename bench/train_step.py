"""How much of a pretext training step is defect synthesis? Side by side, in one run.

Times, on one device and with ssad's own step functions (`ssad.train.pretext_batch` and
`ssad.train.optimisation_step`):

- ``with_synthesis``: draw indices, gather, augment, synthesize, then the optimisation step;
- ``presynthesized``: the same optimisation step fed a batch synthesized beforehand;
- ``synthesis_only``: the data side alone;
- ``with_segmentation``: as ``with_synthesis``, with the segmentation head trained in the same
  step on the defects' masks (``train.segmentation``); ``segmentation_step_ratio`` is its median
  over ``with_synthesis``'s (target: at most 1.3 on the CPU at 128 px, batch 32).

With ``--cuda-graph`` the data side is replayed from a CUDA graph (`ssad.graphs.CudaGraphed`)
instead of launching its few hundred small kernels one by one.

and reports synthesis as a fraction of the step, as ratios of medians. JSON out:

    python bench/train_step.py --device cpu --out bench/results/train_step_cpu.json
    python bench/train_step.py --device cpu --size 128 --batch 32 --out bench/results/train_step_cpu_128.json
    python bench/train_step.py --device cuda --out bench/results/train_step_cuda.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch

from ssad.atomic import write_json
from ssad.config import TrainConfig
from ssad.cpu import retain_freed_memory
from ssad.graphs import CudaGraphed
from ssad.model import create_model
from ssad.synth import DefectSynthesizer, SynthConfig
from ssad.train import optimisation_step, pretext_batch
from timing import taking_turns


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--dataset", type=int, default=256, help="images held on the device")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--cuda-graph", action="store_true", help="replay the data side from a CUDA graph")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        retain_freed_memory()  # as `python -m ssad.run` does on the CPU
    cfg = TrainConfig(compile=args.compile)
    torch.manual_seed(0)
    generator = torch.Generator(device).manual_seed(0)
    images = torch.randint(0, 256, (args.dataset, 3, args.size, args.size), dtype=torch.uint8, device=device)
    object_masks = torch.ones(1, 1, args.size, args.size, dtype=torch.bool, device=device)
    synth = DefectSynthesizer(SynthConfig(check_values=False))

    def model_and_optimizer(segmentation: bool):
        model = create_model("scratch", segmentation=segmentation)[0].to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        return (torch.compile(model) if args.compile else model), optimizer

    net, optimizer = model_and_optimizer(segmentation=False)
    segmenting_net, segmenting_optimizer = model_and_optimizer(segmentation=True)
    bf16 = cfg.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    fixed = pretext_batch(images[: args.batch], object_masks, None, synth, cfg, generator)

    def make_batch(normal: torch.Tensor):
        return pretext_batch(normal, object_masks, None, synth, cfg, generator)

    if args.cuda_graph:  # each batch is used up by its step before the next replay: no copies
        make_batch = CudaGraphed(make_batch, generator=generator, clone=False)

    def data_side():
        idx = torch.randint(len(images), (args.batch,), generator=generator, device=device)
        return make_batch(images[idx])

    def with_synthesis():
        out = data_side()
        optimisation_step(net, optimizer, out.images, out.labels, autocast, torch.channels_last)

    def presynthesized():
        optimisation_step(net, optimizer, fixed.images, fixed.labels, autocast, torch.channels_last)

    def with_segmentation():
        out = data_side()
        optimisation_step(segmenting_net, segmenting_optimizer, out.images, out.labels, autocast,
                          torch.channels_last, out.masks, cfg.segmentation_weight)

    variants = {"with_synthesis": with_synthesis, "presynthesized": presynthesized, "synthesis_only": data_side,
                "with_segmentation": with_segmentation}
    for fn in variants.values():
        for _ in range(args.warmup):
            fn()
    # Interleave the variants so drift of the machine hits all of them alike.
    times = taking_turns(variants, rounds=args.steps, device=device)
    median = {name: statistics.median(t) for name, t in times.items()}

    result = {
        "config": {**vars(args), "out": str(args.out) if args.out else None, "amp_bf16": bf16},
        "env": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "median_seconds": median,
        "images_per_s": {name: args.batch / t for name, t in median.items()},
        "synthesis_fraction_of_step": median["synthesis_only"] / median["with_synthesis"],
        "step_overhead_ratio": median["with_synthesis"] / median["presynthesized"] - 1,
        "segmentation_step_ratio": median["with_segmentation"] / median["with_synthesis"],
    }
    print(f"device {result['env']['device']}, batch {args.batch}, {args.size}x{args.size}")
    for name, t in median.items():
        print(f"  {name:16s} {t * 1000:9.1f} ms  ({args.batch / t:8.0f} images/s)")
    print(f"  synthesis = {result['synthesis_fraction_of_step']:.1%} of a step "
          f"(step with synthesis is {result['step_overhead_ratio']:+.1%} vs presynthesized)")
    print(f"  a step with the segmentation head costs {result['segmentation_step_ratio']:.2f}x one without")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
