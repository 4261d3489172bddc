"""One prepared check for a lent GPU machine: the fused kernel equals the reference, and how fast.

    python3 bench/gpu_check.py             # on the GPU machine, about 4 to 6 minutes
    python3 bench/gpu_check.py --dry-run   # anywhere: CPU, Triton's interpreter, tiny sizes (< 2 min)

Parts, in order; each records its error and the run goes on, and the time budget (``--budget-s``)
skips what no longer fits:

- ``install``: makes ``ssad.kernels`` importable (an editable ``pip install`` where the machine
  lacks it, then the script restarts itself); ``env``: GPU, torch, triton, python;
- ``equality``: fused vs reference on the device, B = 256 at 256 x 256, uint8 / float32, C = 3 / 1;
- ``throughput``: images/s of `apply` alone (params drawn beforehand) and of the whole synthesizer
  (sample_params + apply), reference vs fused, batch 32 to 1024 at 256 x 256, uint8 and float32;
  the median of repeats timed with CUDA events after warmup (``bench/timing.py``); ratios and the targets;
- ``tiles``: the fused `apply` at batch 1024 (uint8) for other tile sizes and warps;
- ``graphed``: the whole fused synthesizer replayed from a CUDA graph (`ssad.graphs.CudaGraphed`)
  against eager calls, uint8, batch 32 to 1024: the launch overhead of the ~250 small sampling ops;
- ``families``: the Perlin and Poisson families and a mix (torch code, no fused kernel): no host
  sync (CUDA's sync debug mode set to error), the batch the CPU makes from the same params, the
  per-sample streams' params on the GPU against the CPU's, and images/s, uint8, batch 32 to 1024;
- ``demo_run``: the whole pipeline on the device, as a user runs it: the README's quick start
  (``python -m ssad.run --demo --config configs/demo.toml``: training, fit, score), then
  ``python -m ssad.predict`` on the demo's test images and ``python -m ssad.export --format pt2``;
  exit codes, metrics, seconds;
- ``train_step``, ``train_step_graphed``: ``bench/train_step.py``, eager, then with the data side
  replayed from a CUDA graph, as subprocesses; their JSON is embedded;
- ``pytest``: ``tests/test_kernels.py``, ``tests/test_graphs.py`` and the CUDA-graph training test
  of ``tests/test_train.py`` (interpreted cases on the CPU, the CUDA cases, the graph replays);
- ``synth_throughput``: ``bench/synth_throughput.py``, the per-image CPU baseline beside the
  engine on the GPU (last: what a short budget loses first).

Everything goes into ONE file, ``gpu_check.json`` in ``$OUT`` when set (else ``bench/results/``),
rewritten atomically after every part, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from timing import median_seconds

if TYPE_CHECKING:  # ssad may not be installed yet when this script starts (see `ensure_ssad_importable`)
    from ssad.synth import SynthConfig

ROOT = Path(__file__).resolve().parents[1]
TARGET_IMAGES_PER_S = 500_000  # fused, uint8, 256 x 256, batch 1024
TARGET_SPEEDUP = 5.0  # fused vs the torch reference, same setting
TARGET_STEP_FRACTION = 0.02  # synthesis in a ResNet-18 bf16 training step, batch 96, 256 x 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny sizes: checks the script")
    p.add_argument("--budget-s", type=float, default=290.0, help="skip parts that would start after this")
    p.add_argument("--out", type=Path, help="JSON path (default: $OUT/gpu_check.json or bench/results/)")
    args = p.parse_args(argv)
    if args.out is None:
        folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
        args.out = folder / "gpu_check.json"
    # Sizes of each part: the real check, or a tiny one that only exercises the script.
    args.device = "cpu" if args.dry_run else "cuda"
    args.size = 64 if args.dry_run else 256
    args.equality_batch = 8 if args.dry_run else 256
    args.batches = [4, 8] if args.dry_run else [32, 64, 128, 256, 512, 1024]
    args.tiles = [(1024, 4), (2048, 8)] if args.dry_run else [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (4096, 16)]
    args.warmup, args.repeats, args.iters = (1, 2, 1) if args.dry_run else (3, 5, 5)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before ssad.kernels.fused defines the kernels
    sys.stdout.reconfigure(line_buffering=True)
    started = time.perf_counter()
    report: dict = {"dry_run": args.dry_run, "budget_s": args.budget_s, "parts": {}}

    def part(name: str, run: Callable[[], object]) -> None:
        """Run one part, record its result or its error, rewrite the JSON."""
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            report["parts"][name] = {"skipped": f"time budget spent ({elapsed:.0f} s of {args.budget_s:.0f} s)"}
        else:
            print(f"[{elapsed:6.1f} s] {name} ...")
            t0 = time.perf_counter()
            try:
                report["parts"][name] = {"result": run()}
            except Exception as error:  # a failed part is recorded; the others still run
                report["parts"][name] = {"error": f"{type(error).__name__}: {error}",
                                         "traceback": traceback.format_exc()}
                print(f"  failed: {type(error).__name__}: {error}")
            report["parts"][name]["seconds"] = round(time.perf_counter() - t0, 2)
        report["total_seconds"] = round(time.perf_counter() - started, 2)
        write_report(args.out, report)

    part("install", ensure_ssad_importable)
    part("env", lambda: environment(args))
    if "error" in report["parts"]["install"]:
        print(f"wrote {args.out} (ssad is not importable; nothing else can run)")
        return
    part("equality", lambda: equality(args))
    part("throughput", lambda: throughput(args))
    part("tiles", lambda: tiles(args))
    part("graphed", lambda: graphed(args))
    part("families", lambda: families(args))

    def budget_left() -> float:
        """Seconds a subprocess may still take (at least 10)."""
        return max(10.0, args.budget_s - (time.perf_counter() - started))

    part("demo_run", lambda: demo_run(args, timeout=min(240.0, budget_left())))
    train_step_args = (["--device", "cpu", "--size", "64", "--batch", "4", "--dataset", "8", "--steps", "1",
                        "--warmup", "0"] if args.dry_run else ["--device", "cuda"])
    part("train_step", lambda: run_bench_script("train_step.py", train_step_args, timeout=min(120.0, budget_left())))
    part("train_step_graphed", lambda: run_bench_script(
        "train_step.py", [*train_step_args, "--cuda-graph"], timeout=min(120.0, budget_left())))
    part("pytest", lambda: run_pytest(timeout=min(150.0, budget_left())))
    part("synth_throughput", lambda: run_bench_script(
        "synth_throughput.py",
        ["--device", "cpu", "--size", "64", "--batch", "8", "--batches", "1", "--warmup", "0", "--repeats", "1",
         "--workers", "0", "--num-images", "8"]
        if args.dry_run else ["--device", "cuda", "--batch", "256", "--batches", "5", "--workers", "2", "8",
                              "--allocators", "default"],
        timeout=min(120.0, budget_left()),
    ))
    summarise(report)
    write_report(args.out, report)
    print(json.dumps(report.get("summary", {}), indent=2))
    print(f"wrote {args.out}")


# --- parts --------------------------------------------------------------------------------------


def ensure_ssad_importable() -> dict:
    """`ssad.kernels` must import (it maps ``kernels/`` into the package, which only an install
    does). Where it does not, install the checkout in editable mode, offline, and restart."""
    if importlib.util.find_spec("ssad") is not None and importlib.util.find_spec("ssad.kernels") is not None:
        import ssad

        return {"ssad": str(Path(ssad.__file__).parent),
                "installed_by_this_check": bool(os.environ.get("SSAD_GPU_CHECK_INSTALLED"))}
    if os.environ.get("SSAD_GPU_CHECK_INSTALLED"):
        raise RuntimeError("ssad.kernels is still not importable after `pip install -e`")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-e", str(ROOT)],
        capture_output=True, text=True, timeout=180,
    )
    if run.returncode != 0:
        raise RuntimeError(f"pip install -e failed ({run.returncode}): {run.stderr[-2000:]}")
    print("  installed ssad in editable mode; restarting")
    os.environ["SSAD_GPU_CHECK_INSTALLED"] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv])


def environment(args: argparse.Namespace) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": args.device, "cpu_count": os.cpu_count()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError as error:
        env["triton"] = f"not importable: {error}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count}
    elif not args.dry_run:
        raise RuntimeError("CUDA is not available (use --dry-run to check the script on a CPU)")
    return env


def equality(args: argparse.Namespace) -> list[dict]:
    """Fused vs reference on the device: identical masks, images within 1/255."""
    from ssad.synth import SynthConfig, apply, sample_params

    results = []
    for channels in (3, 1):
        for dtype in (torch.uint8, torch.float32):
            for separate_sources in (False, True) if channels == 3 and dtype == torch.uint8 else (False,):
                shape = (args.equality_batch, channels, args.size, args.size)
                images = random_images(shape, dtype, args.device, seed=channels)
                sources = random_images(shape, dtype, args.device, seed=99) if separate_sources else None
                config = SynthConfig(fill_probs=(0.4, 0.3, 0.3), backend="fused")
                params = sample_params(shape, config, device=args.device,
                                       generator=torch.Generator(args.device).manual_seed(channels))
                out, masks = apply(images, params, config, sources)
                ref, ref_masks = apply(images, params, replace(config, backend="reference"), sources)
                scale = 255.0 if dtype == torch.uint8 else 1.0
                diff = (out.double() - ref.double()).abs() / scale
                record = {
                    "channels": channels, "dtype": str(dtype).removeprefix("torch."), "batch": shape[0],
                    "size": args.size, "separate_sources": separate_sources,
                    "masks_equal": torch.equal(masks, ref_masks), "mask_pixels": int(ref_masks.sum()),
                    "max_abs_diff": float(diff.max()), "fraction_differing": float((diff > 0).double().mean()),
                }
                record["passed"] = record["masks_equal"] and record["max_abs_diff"] <= 1 / 255 + 1e-9
                results.append(record)
                print(f"  {record}")
    return results


def throughput(args: argparse.Namespace) -> list[dict]:
    """Images/s of reference and fused: `apply` alone and the whole synthesizer."""
    results = []
    for dtype in (torch.uint8, torch.float32):
        for batch in args.batches:
            results += _throughput_at(batch, dtype, args)
            if args.device == "cuda":  # this batch size's memory goes back before the next, larger one
                torch.cuda.empty_cache()
    return results


def _throughput_at(batch: int, dtype: torch.dtype, args: argparse.Namespace) -> list[dict]:
    from ssad.synth import DefectSynthesizer, SynthConfig, apply, sample_params

    shape = (batch, 3, args.size, args.size)
    images = random_images(shape, dtype, args.device, seed=batch)
    results = []
    for backend in ("reference", "fused"):
        config = SynthConfig(backend=backend, check_values=False)  # no read-back in the loop
        generator = torch.Generator(args.device).manual_seed(0)
        params = sample_params(shape, config, device=args.device, generator=generator)
        synth = DefectSynthesizer(config)
        steps = {"apply": partial(apply, images, params, config), "synth": partial(synth, images, generator=generator)}
        for what, step in steps.items():
            seconds = time_per_call(step, args)
            record = {"what": what, "impl": backend, "dtype": str(dtype).removeprefix("torch."),
                      "batch": batch, "ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds}
            # Bytes a single pass must move: read and write every channel, write the mask.
            moved = batch * args.size**2 * (2 * 3 * images.element_size() + 1)
            record["min_traffic_gb_per_s"] = moved / seconds / 1e9
            results.append(record)
            print(f"  {what:5} {backend:9} {record['dtype']:7} B={batch:5d} "
                  f"{record['images_per_s']:12,.0f} images/s  {record['ms_per_batch']:8.3f} ms")
    return results


def tiles(args: argparse.Namespace) -> list[dict]:
    """Fused `apply` at the largest batch, uint8, for other launch shapes (tile pixels of both kernels,
    warps of the composite one)."""
    from ssad.kernels import fused
    from ssad.synth import SynthConfig, sample_params

    batch = args.batches[-1]
    shape = (batch, 3, args.size, args.size)
    images = random_images(shape, torch.uint8, args.device, seed=0)
    config = SynthConfig(backend="fused", check_values=False)
    params = sample_params(shape, config, device=args.device, generator=torch.Generator(args.device).manual_seed(0))
    results = []
    for tile_pixels, num_warps in args.tiles:
        seconds = time_per_call(
            partial(fused.fused_apply, images, params, config, tile_pixels=tile_pixels, num_warps=num_warps), args
        )
        results.append({"tile_pixels": tile_pixels, "num_warps": num_warps, "batch": batch,
                        "default": (tile_pixels, num_warps) == (fused.TILE_PIXELS, fused.NUM_WARPS),
                        "images_per_s": batch / seconds, "ms_per_batch": seconds * 1e3})
        print(f"  {results[-1]}")
    return results


def graphed(args: argparse.Namespace) -> list[dict] | dict:
    """Images/s of the fused synthesizer (sample_params + apply) replayed from a CUDA graph
    (`ssad.graphs.CudaGraphed`, outputs not copied) against the same call launched eagerly, uint8."""
    if args.device != "cuda":
        return {"skipped": "CUDA graphs need a GPU"}
    results = []
    for batch in args.batches:
        results.append(_graphed_at(batch, args))
        print(f"  {results[-1]}")
        torch.cuda.empty_cache()
    return results


def _graphed_at(batch: int, args: argparse.Namespace) -> dict:
    from ssad.graphs import CudaGraphed
    from ssad.synth import DefectSynthesizer, SynthConfig

    synth = DefectSynthesizer(SynthConfig(backend="fused", check_values=False))
    generator = torch.Generator(args.device).manual_seed(0)
    images = random_images((batch, 3, args.size, args.size), torch.uint8, args.device, seed=batch)
    replay = CudaGraphed(lambda x: synth(x, generator=generator), generator=generator, clone=False)
    eager = time_per_call(lambda: synth(images, generator=generator), args)
    graphed_seconds = time_per_call(lambda: replay(images), args)
    return {"batch": batch, "eager_images_per_s": batch / eager, "graphed_images_per_s": batch / graphed_seconds,
            "graphed_ms_per_batch": graphed_seconds * 1e3, "speedup": eager / graphed_seconds}


#: The configs `families` checks: each family alone (every sample a defect) and a mix.
FAMILY_CONFIGS = {"perlin": (0.0, 1.0, 0.0), "poisson": (0.0, 0.0, 1.0), "mix": (0.5, 0.25, 0.25)}


def families(args: argparse.Namespace) -> list[dict]:
    """Per family config: no sync, the device against the CPU, then images/s of the whole synthesizer."""
    from ssad.synth import DefectSynthesizer, SynthConfig

    results = []
    for name, family_probs in FAMILY_CONFIGS.items():
        config = SynthConfig(class_probs=(0.0, 1.0, 0.0) if name != "mix" else (1 / 3, 1 / 3, 1 / 3),
                             family_probs=family_probs, check_values=False)
        shape = (args.equality_batch, 3, args.size, args.size)
        images = random_images(shape, torch.uint8, args.device, seed=7)
        object_masks = torch.zeros(1, 1, args.size, args.size, dtype=torch.bool, device=args.device)
        object_masks[..., args.size // 8: -args.size // 8, args.size // 8: -args.size // 8] = True
        synth = DefectSynthesizer(config)
        generator = torch.Generator(args.device).manual_seed(0)
        record = {"family": name, "batch": shape[0], "size": args.size,
                  "sync_free": _sync_free(lambda: synth(images, object_masks, generator=generator), args),
                  **_family_against_cpu(config, images, object_masks),
                  **_streams_against_cpu(config, images, object_masks)}
        record["passed"] = (record["sync_free"] in (True, "not checked on the CPU")
                            and record["fraction_over_one_level"] <= 1e-3 and record["mask_fraction_differing"] <= 1e-3
                            and record["streams_integer_params_equal"])
        record["images_per_s"] = {}
        for batch in args.batches:
            batch_images = random_images((batch, 3, args.size, args.size), torch.uint8, args.device, seed=batch)
            seconds = time_per_call(lambda: synth(batch_images, object_masks, generator=generator), args)
            record["images_per_s"][batch] = batch / seconds
            if args.device == "cuda":
                torch.cuda.empty_cache()
        results.append(record)
        print(f"  {record}")
    return results


def _family_against_cpu(config: SynthConfig, images: torch.Tensor, object_masks: torch.Tensor) -> dict:
    """The same params applied on the images' device and on the CPU: how far the batches differ."""
    from ssad.synth import apply, sample_params

    params = sample_params(images.shape, config, device=images.device, object_masks=object_masks,
                           generator=torch.Generator(images.device).manual_seed(1))
    out, masks = apply(images, params, config)
    cpu_out, cpu_masks = apply(images.cpu(), {k: v.cpu() for k, v in params.items()}, config)
    levels = (out.cpu().int() - cpu_out.int()).abs()
    return {"max_level_diff": int(levels.max()), "fraction_over_one_level": float((levels > 1).double().mean()),
            "mask_fraction_differing": float((masks.cpu() != cpu_masks).double().mean())}


def _streams_against_cpu(config: SynthConfig, images: torch.Tensor, object_masks: torch.Tensor) -> dict:
    """Per-sample streams draw the same numbers on every device (24-bit integers): the params
    they give on the images' device against the CPU's (floats may differ by rounding)."""
    from ssad.synth import SampleStreams, sample_params

    indices = torch.arange(images.shape[0])
    here = sample_params(images.shape, config, device=images.device, object_masks=object_masks,
                         generator=SampleStreams(0, indices.to(images.device)))
    there = sample_params(images.shape, config, object_masks=object_masks.cpu(), generator=SampleStreams(0, indices))
    here = {k: v.cpu() for k, v in here.items()}
    floats = [k for k in there if there[k].is_floating_point()]
    record = {
        "streams_max_param_diff": max(float((here[k].double() - there[k].double()).abs().max()) for k in floats),
        "streams_integer_params_equal": all(torch.equal(here[k], there[k]) for k in there
                                            if k not in floats and k != "perlin_mask"),
    }
    if "perlin_mask" in there:
        record["streams_perlin_mask_fraction_differing"] = float(
            (here["perlin_mask"] != there["perlin_mask"]).double().mean())
    return record


def _sync_free(step: Callable[[], object], args: argparse.Namespace) -> bool | str:
    """Whether ``step`` runs on CUDA without a host-device sync (True), or the error naming the sync."""
    if args.device != "cuda":
        return "not checked on the CPU"
    step()  # warm-up: cached bases and one-time setup may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return True
    except RuntimeError as error:
        return f"syncs: {error}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def demo_run(args: argparse.Namespace, timeout: float) -> dict:
    """Train, fit and score a demo category on the device, predict its test images, export the
    detector: the CLI path end to end (a short run: what it checks is that it works, not quality)."""
    with tempfile.TemporaryDirectory() as folder:
        env = compiled_env() | {"SSAD_CACHE_DIR": str(Path(folder) / "cache")}
        run, test_images = Path(folder) / "run", Path(folder) / "cache" / "demo" / "demo_object" / "test"
        commands = {
            # The README's quick start (demo_object, 300 steps at 128 px), on the device.
            "run": ["ssad.run", "--demo", "--config", "configs/demo.toml", "--device", args.device, "--out", str(run),
                    "--no-progress", *(["--image-size", "64", "--steps", "10"] if args.dry_run else [])],
            "predict": ["ssad.predict", "--run", str(run), str(test_images), "--device", args.device,
                        "--no-progress", "--maps"],
            "export": ["ssad.export", "--run", str(run), "--format", "pt2"],
        }
        started, result = time.perf_counter(), {}
        for name, command in commands.items():
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=max(10.0, timeout - (t0 - started)))
            result[name] = {"returncode": done.returncode, "seconds": round(time.perf_counter() - t0, 1),
                            "tail": (done.stdout + done.stderr)[-1500:]}
            if done.returncode != 0:
                break
        if (run / "metrics.json").exists():
            result["metrics"] = json.loads((run / "metrics.json").read_text())
            result["device_in_meta"] = json.loads((run / "meta.json").read_text()).get("device")
        result["passed"] = all(result.get(name, {}).get("returncode") == 0 for name in commands)
        return result


def run_bench_script(name: str, script_args: list[str], timeout: float) -> dict:
    """Run ``bench/<name>`` with ``--out``; return its JSON, or raise with its output's tail."""
    script = ROOT / "bench" / name
    if not script.exists():
        return {"skipped": f"{script.relative_to(ROOT)} does not exist"}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        run = subprocess.run([sys.executable, str(script), *script_args, "--out", str(out)], cwd=ROOT,
                             env=compiled_env(), capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0 or not out.exists():
            raise RuntimeError(f"{name} exited {run.returncode}: {(run.stdout + run.stderr)[-3000:]}")
        return {"args": script_args, "json": json.loads(out.read_text()), "stdout_tail": run.stdout[-2000:]}


def run_pytest(timeout: float) -> dict:
    # test_graphs last: its final test makes a capture fail on purpose.
    tests = ["tests/test_kernels.py", "tests/test_train.py::test_cuda_graph_training_equals_eager_and_resumes_exactly",
             "tests/test_graphs.py"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                         cwd=ROOT, env=compiled_env(), capture_output=True, text=True, timeout=timeout)
    return {"returncode": run.returncode, "passed": run.returncode == 0, "tail": (run.stdout + run.stderr)[-3000:]}


# --- helpers ------------------------------------------------------------------------------------


def compiled_env() -> dict[str, str]:
    """This process's environment without TRITON_INTERPRET (set by --dry-run): subprocesses pick
    their own mode (the kernel tests switch the interpreter on where they need it)."""
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def random_images(shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    """(B, C, H, W) random images of ``dtype`` (uint8, or float in [0, 1]) on ``device``."""
    generator = torch.Generator(device).manual_seed(seed)
    images = torch.randint(0, 256, shape, generator=generator, device=device, dtype=torch.uint8)
    return images if dtype == torch.uint8 else images.to(dtype) / 255


def time_per_call(step: Callable[[], object], args: argparse.Namespace) -> float:
    """Median seconds per call of ``step`` over ``args.repeats`` runs of ``args.iters`` calls, after
    ``args.warmup`` calls (`timing.median_seconds`: on CUDA timed with events, launch gaps included)."""
    return median_seconds(step, args.iters, args.repeats, args.warmup, args.device)


def summarise(report: dict) -> None:
    """Ratios fused / reference for every setting, the targets at uint8, batch 1024, and the
    synthesis share of a training step (eager and replayed from a CUDA graph)."""
    parts = report["parts"]
    summary: dict = {"equality_passed": None, "pytest_passed": parts.get("pytest", {}).get("result", {}).get("passed")}
    if "result" in parts.get("equality", {}):
        summary["equality_passed"] = all(r["passed"] for r in parts["equality"]["result"])
    if "result" in parts.get("families", {}):
        summary["families_passed"] = all(r["passed"] for r in parts["families"]["result"])
    summary["demo_run_passed"] = parts.get("demo_run", {}).get("result", {}).get("passed")
    if "result" in parts.get("throughput", {}):
        rates = {(r["what"], r["impl"], r["dtype"], r["batch"]): r["images_per_s"]
                 for r in parts["throughput"]["result"]}
        summary["speedup_fused_vs_reference"] = {
            f"{what}_{dtype}_b{batch}": rate / rates[what, "reference", dtype, batch]
            for (what, impl, dtype, batch), rate in rates.items() if impl == "fused"
        }
        largest = max(batch for *_, batch in rates)
        for what in ("apply", "synth"):
            fused_rate = rates[what, "fused", "uint8", largest]
            speedup = fused_rate / rates[what, "reference", "uint8", largest]
            summary[f"target_{what}_uint8_b{largest}"] = {
                "fused_images_per_s": fused_rate, "speedup": speedup,
                "meets_images_per_s": fused_rate >= TARGET_IMAGES_PER_S, "meets_speedup": speedup >= TARGET_SPEEDUP,
            }
    for name in ("train_step", "train_step_graphed"):
        step = parts.get(name, {}).get("result", {}).get("json")
        if step:
            fraction = step["synthesis_fraction_of_step"]
            summary[f"target_{name}"] = {"synthesis_fraction_of_step": fraction,
                                         "step_overhead_ratio": step["step_overhead_ratio"],
                                         "meets_fraction": fraction < TARGET_STEP_FRACTION}
    report["summary"] = summary


def write_report(path: Path, report: dict) -> None:
    """Write the JSON to a temporary file, then rename it into place (no ssad import: this also
    runs before ssad is installed)."""
    text = json.dumps(report, indent=2, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
