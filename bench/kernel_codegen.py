"""What the fused kernels compile to for a GPU that is not here: registers, spills, access widths.

Compiles the launches of ``ssad.kernels.fused.plan`` ahead of time for a CUDA architecture
(default sm_90: H100 / H200) with `ssad.kernels.codegen`, specialised as Triton's launcher would
specialise them. Needs no GPU, so it runs on any machine; nothing here is a timing.

For each kernel and setting it reports: registers per thread; local memory per thread (spills;
0 is wanted); shared memory; the warps one SM can hold at that register count and block size
(derived from the architecture's limits: 64K registers, 64 warps, 32 blocks per SM); and the PTX
global loads and stores counted by bytes per thread and instruction (wide accesses move the image
in fewer instructions; byte-wide ones are the gathers of cut-paste).

    python bench/kernel_codegen.py --out bench/results/kernel_codegen_sm90.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import triton

from ssad.atomic import write_json
from ssad.kernels import fused
from ssad.kernels.codegen import compile_launch, global_accesses, resource_usage, warps_per_sm
from ssad.synth import SynthConfig, sample_params

DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
# Launch shapes of the composite kernel worth comparing (bench/gpu_check.py times the same ones).
TILES = [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (4096, 16)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100/H200), 80 (A100)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--channels", nargs="+", type=int, choices=[1, 3], default=[3, 1])
    p.add_argument("--tiles", action="store_true", help="also compile uint8 RGB for every launch shape in TILES")
    p.add_argument("--out", type=Path, required=True, help="JSON output path")
    return p.parse_args(argv)


def inputs(size: int, channels: int, dtype: torch.dtype) -> tuple[torch.Tensor, dict, SynthConfig]:
    """CPU images and params of the real image shape; the batch only changes the grid, not the code."""
    shape, config = (4, channels, size, size), SynthConfig(backend="fused")
    images = torch.zeros(shape, dtype=dtype)
    return images, sample_params(shape, config, generator=torch.Generator().manual_seed(0)), config


def report(args: argparse.Namespace) -> dict:
    default = (fused.TILE_PIXELS, fused.NUM_WARPS)
    settings = [(dtype, channels, *default) for dtype in args.dtypes for channels in args.channels]
    if args.tiles:
        settings += [("uint8", 3, tile, warps) for tile, warps in TILES if (tile, warps) != default]
    results = []
    for dtype, channels, tile_pixels, num_warps in settings:
        images, params, config = inputs(args.size, channels, DTYPES[dtype])
        _, _, launches = fused.plan(images, params, config, tile_pixels=tile_pixels, num_warps=num_warps)
        for launch in launches:
            if (tile_pixels, num_warps) != default and launch.kernel is not fused._composite_kernel:
                continue  # the other launch shapes are compared on the composite kernel alone
            compiled = compile_launch(launch, args.arch)
            usage = resource_usage(compiled.asm["cubin"])
            warps = launch.options["num_warps"]
            results.append({
                "kernel": launch.kernel.fn.__name__, "default_launch": (tile_pixels, num_warps) == default,
                "dtype": dtype, "channels": channels, "size": args.size,
                "block": [launch.options["BLOCK_H"], launch.options["BLOCK_W"]], "num_warps": warps,
                "registers": usage["REG"], "local_bytes": usage["LOCAL"], "stack_bytes": usage["STACK"],
                "shared_bytes": usage["SHARED"], "warps_per_sm": warps_per_sm(usage["REG"], warps),
                "global_accesses": global_accesses(compiled.asm["ptx"]),
            })
            print(f"{results[-1]['kernel']:18} {dtype:7} C={channels} block={results[-1]['block']} warps={warps:2}"
                  f"  regs={usage['REG']:3} local={usage['LOCAL']} warps/SM={results[-1]['warps_per_sm']:2}"
                  f"  {results[-1]['global_accesses']}")
    return {"target": f"sm_{args.arch}", "triton": triton.__version__, "torch": torch.__version__, "results": results}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    write_json(args.out, report(args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
