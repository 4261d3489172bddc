"""Fitting and scoring against the number of normal training images: seconds and peak memory per phase.

For each N of ``--images`` and each side of ``--sizes``, in a fresh process (so each peak is its own):

- **load**: the category at that side (`ssad.data.load_category`), and N training images made from
  its n real ones: image k is training image ``k mod n`` under one of the square's 8 symmetries
  (rotations by 90 degrees, mirrored or not: ``(k // n) mod 8``), its brightness scaled by a seeded
  factor in [0.9, 1.1] (no two copies alike);
- **fit**: the detector fitted as a run fits it at one size (`ssad.detector.fit_detector`: the
  kNN memory on all N images, the "normal" thresholds from held-out folds), with the score
  settings of ``--config`` (default: ``configs/cpu.toml``, the CPU preset);
- **score**: the category's test split scored (maps at full size and image scores);
- **metrics**: image and pixel AUROC, AUPRO, F1-max (`ssad.evaluate.measure`);
- **pictures**: the run's ROC picture and one panel per test image (into a temporary folder).

The process's allocator is set as `python -m ssad.run` fits and scores after training
(`ssad.cpu.release_freed_memory`: glibc's fixed thresholds) unless ``--allocator default``
(glibc's own, whose threshold for returning large blocks grows as they are freed).

Per phase: seconds and peak memory: on the CPU the process's peak resident memory (``VmHWM``,
reset at each phase's start through ``/proc/self/clear_refs``), on a GPU the peak allocated by
torch (``torch.cuda.max_memory_allocated``, reset likewise) beside it. The network is a seeded
random ResNet-18 (``--run``: a run's trained one): costs do not depend on its weights, and the
metrics of a random network mean nothing.

JSON out (each point, and each N's fit seconds over N=800's, the growth the issue's target reads),
a Markdown table printed, and a picture of time and memory against N (``.png`` beside the JSON).

    python bench/scale.py --data-root ../shared/data/mvtec --category bottle --images 200 800 3200 \\
        --sizes 256 320 --out bench/results/scale_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Self

import torch
from PIL import Image, ImageDraw
from timing import Stopwatch

from ssad.atomic import save_png, write_json
from ssad.checkpoint import load_run_model
from ssad.config import load_config
from ssad.cpu import release_freed_memory
from ssad.data import CategoryData, load_category
from ssad.detector import fit_detector
from ssad.evaluate import measure
from ssad.model import create_model
from ssad.report import roc_picture, test_panels

PHASES = ("load", "fit", "score", "metrics", "pictures")
#: Images whose full-size maps are drawn at once when scoring the test split.
BATCH = 32


def augmented(train: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """(count, 3, S, S) uint8 images from (n, 3, S, S) uint8 ``train``: image k is ``train[k % n]``
    under the square's symmetry ``(k // n) % 8`` (a quarter turn ``t % 4`` times, mirrored when
    ``t >= 4``), its brightness scaled by a seeded factor in [0.9, 1.1]."""
    n = len(train)
    generator = torch.Generator().manual_seed(seed)
    gains = 0.9 + 0.2 * torch.rand(count, generator=generator)
    out = torch.empty((count, *train.shape[1:]), dtype=torch.uint8, device=train.device)
    for k in range(count):  # making the data, not the measured work
        image = train[k % n]
        turn = (k // n) % 8
        image = torch.rot90(image, turn % 4, dims=(1, 2))
        if turn >= 4:
            image = image.flip(2)
        out[k] = (image.float() * gains[k]).clamp(0, 255).round().to(torch.uint8)
    return out


class PhasePeaks:
    """Seconds and peak memory of named phases, one after the other (``with peaks.measure(name):``),
    and, while ``with peaks:`` lasts, the resident memory sampled every ``every`` seconds on a
    thread (``trace``: (seconds since the start, GB) pairs; ``phases[name]["started_s"]`` on the
    same clock): where within a phase its peak comes."""

    def __init__(self, device: torch.device, every: float = 0.5) -> None:
        self.device, self.every = device, every
        self.phases: dict[str, dict[str, float]] = {}
        self.trace: list[tuple[float, float]] = []
        self._origin = time.perf_counter()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sampler.join()
        self._sample_once()  # the end too, however short the last phase

    def _sample_once(self) -> None:
        self.trace.append((round(self._now(), 2), round(_status_gb("VmRSS"), 3)))

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sample_once()
            self._stop.wait(self.every)

    def _now(self) -> float:
        return time.perf_counter() - self._origin

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = _status_gb("VmRSS")
        started = self._now()
        _reset_peak_resident()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with Stopwatch(self.device) as watch:
            yield
        record = {"seconds": watch.seconds, "started_s": started, "resident_at_start_gb": start,
                  "peak_resident_gb": _status_gb("VmHWM")}
        if self.device.type == "cuda":
            record["peak_allocated_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        self.phases[name] = record


def _reset_peak_resident() -> None:
    """Reset VmHWM to the current resident size (Linux; elsewhere the peak runs from the start)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_gb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in GB; NaN off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float("nan")
    return next((int(line.split()[1]) * 1024 / 1e9 for line in lines if line.startswith(f"{field}:")), float("nan"))


def one_point(data_root: Path, category: str, count: int, size: int, config: list[Path], run: Path | None,
              device: torch.device, allocator: str = "run") -> dict:
    """Every phase at N = ``count`` training images of side ``size``."""
    if allocator == "run":
        release_freed_memory()
    score = replace(load_config(config).score, image_size=size)
    if run is not None:
        model = load_run_model(run)[1].to(device)
    else:
        torch.manual_seed(0)
        model = create_model("scratch")[0].to(device)
    with PhasePeaks(device) as peaks:
        with peaks.measure("load"):
            data: CategoryData = load_category(data_root, category, image_size=size, device=device, progress=False)
            train = augmented(data.train, count)
        with peaks.measure("fit"):
            detector = fit_detector(model, train, score, data.moves)
        with peaks.measure("score"):
            scores, maps = detector.score_all(data.test, BATCH)
        with peaks.measure("metrics"):
            evaluation = measure(scores, maps, data.test_labels, data.test_masks, data.test_mask_known)
        with peaks.measure("pictures"), tempfile.TemporaryDirectory() as folder:
            known = data.test_mask_known
            roc_picture({"image": (scores, data.test_labels), "pixel": (maps[known], data.test_masks[known])},
                        Path(folder) / "roc.png")
            names = [f"{i:04d}" for i in range(len(data.test))]
            test_panels(data.test, data.test_masks, maps, names, Path(folder), (float(maps.min()), float(maps.max())))
    return {"images": count, "image_size": size, "category": category, "real_images": len(data.train),
            "memory": len(detector.patches.bank) if hasattr(detector.patches, "bank") else None,
            "patch_candidates": score.patch_candidates, "allocator": allocator, "phases": peaks.phases,
            "peak_resident_gb": max(p["peak_resident_gb"] for p in peaks.phases.values()),
            "metrics_of_this_network": evaluation.metrics,
            "resident_trace": {"seconds": [t for t, _ in peaks.trace], "gb": [gb for _, gb in peaks.trace]}}


def with_growth(points: list[dict], reference: int = 800) -> list[dict]:
    """Each point with its fit seconds over the fit seconds at ``reference`` images (same size),
    and the growth a linear cost would give (N / reference)."""
    for p in points:
        base = next((q for q in points if q["images"] == reference and q["image_size"] == p["image_size"]), None)
        if base is not None:
            p["fit_seconds_over_reference"] = p["phases"]["fit"]["seconds"] / base["phases"]["fit"]["seconds"]
            p["linear_growth"] = p["images"] / reference
    return points


def markdown_table(points: list[dict]) -> str:
    lines = ["| size | N | " + " | ".join(f"{p} s / GB" for p in PHASES) + " | peak GB | fit / fit at 800 (linear) |",
             "|---:|---:|" + "---:|" * (len(PHASES) + 2)]
    for p in points:
        cells = [f"{p['phases'][name]['seconds']:.1f} / {p['phases'][name]['peak_resident_gb']:.2f}" for name in PHASES]
        growth = (f"{p['fit_seconds_over_reference']:.2f} ({p['linear_growth']:.2f})"
                  if "fit_seconds_over_reference" in p else "")
        lines.append(f"| {p['image_size']} | {p['images']} | " + " | ".join(cells)
                     + f" | {p['peak_resident_gb']:.2f} | {growth} |")
    return "\n".join(lines)


def _frame(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, top_value: float) -> None:
    """A panel's box, its title above it and its value axis's two ends (0 and ``top_value``)."""
    left, top, _, bottom = box
    draw.rectangle(box, outline="black")
    draw.text((left, top - 22), title, fill="black")
    draw.text((left - 40, top - 6), f"{top_value:.1f}", fill="black")
    draw.text((left - 12, bottom - 6), "0", fill="black")


def picture(points: list[dict], path: Path, width: int = 720, height: int = 600) -> None:
    """Top: fit + score seconds and peak resident memory against N (log axis), a line per size.
    Bottom: the resident memory over time at each size's largest N, each phase's start marked."""
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    sizes = sorted({p["image_size"] for p in points})
    counts = sorted({p["images"] for p in points})
    panels = [("seconds (fit + score)", lambda p: p["phases"]["fit"]["seconds"] + p["phases"]["score"]["seconds"]),
              ("peak resident GB", lambda p: p["peak_resident_gb"])]
    row_height, margin = height // 2, 48
    panel_width = width // 2
    for i, (title, value) in enumerate(panels):
        left, top, right, bottom = i * panel_width + margin, 30, (i + 1) * panel_width - 12, row_height - 40
        top_value = max(value(p) for p in points) * 1.1 or 1.0
        _frame(draw, (left, top, right, bottom), title, top_value)
        low, high = math.log(counts[0]), math.log(counts[-1]) if counts[-1] > counts[0] else math.log(counts[0]) + 1

        def x_of(n: int) -> float:
            return left + (math.log(n) - low) / (high - low) * (right - left)

        for n in counts:
            draw.text((min(x_of(n) - 12, right - 44), bottom + 6), f"N={n}", fill="black")  # inside the panel
        for j, size in enumerate(sizes):
            row = sorted((p for p in points if p["image_size"] == size), key=lambda p: p["images"])
            xy = [(x_of(p["images"]), bottom - value(p) / top_value * (bottom - top)) for p in row]
            colour = colours[j % len(colours)]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            draw.text((right - 60, top + 6 + 14 * j), f"{size} px", fill=colour)
    largest = [max((p for p in points if p["image_size"] == size), key=lambda p: p["images"]) for size in sizes]
    top_value = max(max(p["resident_trace"]["gb"], default=0.0) for p in largest) * 1.1 or 1.0
    trace_width = width // len(largest)
    for j, point in enumerate(largest):
        left, top, right, bottom = j * trace_width + margin, row_height + 30, (j + 1) * trace_width - 12, height - 40
        _frame(draw, (left, top, right, bottom), f"resident GB over time, N={point['images']} at "
               f"{point['image_size']} px", top_value)
        seconds, gb = point["resident_trace"]["seconds"], point["resident_trace"]["gb"]
        span = max(seconds[-1] if seconds else 0.0, 1e-9)
        starts = [phase["started_s"] for phase in point["phases"].values()]
        labelled = -math.inf
        for name, start, end in zip(point["phases"], starts, [*starts[1:], span]):
            x = left + start / span * (right - left)
            draw.line([(x, top), (x, bottom)], fill=(190, 190, 190))
            middle = left + (start + end) / 2 / span * (right - left) - 3 * len(name)
            if middle - labelled >= 48:  # phases of a few seconds in a long run: their lines, one label
                draw.text((middle, bottom + 6), name, fill="black")
                labelled = middle
        xy = [(left + t / span * (right - left), bottom - v / top_value * (bottom - top)) for t, v in zip(seconds, gb)]
        if len(xy) > 1:
            draw.line(xy, fill=colours[j % len(colours)], width=2)
        draw.text((right - 70, bottom - 18), f"{span:.0f} s", fill="black")
    save_png(canvas, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--images", type=int, nargs="+", default=[200, 800, 3200])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 320])
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="config file(s) whose score section is used (default: configs/cpu.toml)")
    parser.add_argument("--run", type=Path, help="a run folder whose trained network to use (default: random)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allocator", choices=("run", "default"), default="run",
                        help="the CPU allocator as a run sets it after training, or glibc's default")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, nargs=2, metavar=("N", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = args.config or [Path(__file__).resolve().parent.parent / "configs" / "cpu.toml"]
    device = torch.device(args.device)
    if args.one:  # a child process: one point, JSON on the last line of stdout
        point = one_point(args.data_root, args.category, *args.one, config, args.run, device, args.allocator)
        print(json.dumps(point))
        return point
    points = []
    for size in args.sizes:
        for count in args.images:
            command = [sys.executable, __file__, "--data-root", str(args.data_root), "--category", args.category,
                       "--device", args.device, "--allocator", args.allocator, "--one", str(count), str(size)]
            command += [arg for path in config for arg in ("--config", str(path))]
            command += ["--run", str(args.run)] if args.run else []
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode != 0:
                raise RuntimeError(f"N={count} at {size} px failed:\n{child.stderr[-3000:]}")
            points.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"N={count} at {size} px: peak {points[-1]['peak_resident_gb']:.2f} GB, fit "
                  f"{points[-1]['phases']['fit']['seconds']:.1f} s", flush=True)
    out = {"device": str(device), "category": args.category, "config": [str(c) for c in config],
           "torch_threads": torch.get_num_threads(), "points": with_growth(points)}
    print(markdown_table(out["points"]))
    if args.out:
        write_json(args.out, out)
        picture(out["points"], args.out.with_suffix(".png"))
    return out


if __name__ == "__main__":
    main()
