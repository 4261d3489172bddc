"""What one `sample_params` call costs: time and dispatched operations, side by side in one run.

Two ways to draw the same parameters (the draws are identical, see tests/test_synth_spec.py):

* ``box``: no object masks, centres found by arithmetic in the admissible box (the default path,
  and the one every cut-paste source takes);
* ``mask``: an all-ones object mask, centres found through the mask's running counts (the path
  masked categories take).

For each batch size it reports the median time per call on ``--device`` and the aten operations
one call dispatches (those that compute, and views). On a GPU each computing operation is a kernel
launch, so at small batches their count, not the batch, sets the time.

    python bench/sampling.py --out bench/results/sampling_cpu.json
"""

from __future__ import annotations

import argparse
import platform
from functools import partial
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssad.atomic import write_json
from ssad.synth import SynthConfig, sample_params
from timing import median_seconds

# Operations that only re-describe memory: no kernel runs for them.
VIEWS = {"view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "expand", "select", "slice", "unbind",
         "t", "transpose", "permute", "alias", "as_strided", "split"}


class CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.compute = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in VIEWS:
            self.views += 1
        else:
            self.compute += 1
        return func(*args, **(kwargs or {}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024], help="batch sizes")
    p.add_argument("--calls", type=int, default=50, help="timed calls per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True, help="JSON output path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    config = SynthConfig()
    generator = torch.Generator(device).manual_seed(0)
    ones = torch.ones(1, 1, args.size, args.size, dtype=torch.bool, device=device)
    results = []
    for batch in args.batches:
        shape = (batch, 3, args.size, args.size)
        for path, masks in (("box", None), ("mask", ones)):
            call = partial(sample_params, shape, config, device=device, object_masks=masks, generator=generator)
            with CountOps() as ops:
                call()
            seconds = median_seconds(call, args.calls, args.repeats, warmup=1, device=device)
            results.append({"path": path, "batch": batch, "us_per_call": seconds * 1e6,
                            "ops_compute": ops.compute, "ops_views": ops.views})
            print(f"B={batch:5d} {path:4}  {seconds * 1e6:9.0f} us/call  {ops.compute} ops + {ops.views} views")
    times = {(r["path"], r["batch"]): r["us_per_call"] for r in results}
    ratios = {f"mask_over_box_b{b}": times["mask", b] / times["box", b] for b in args.batches}
    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "env": {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                      "python": platform.python_version()},
              "results": results, "ratios": ratios}
    write_json(args.out, result)
    print(ratios)
    return result


if __name__ == "__main__":
    main()
