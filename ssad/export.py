"""``python -m ssad.export``: a run's detector as a torch.export program, TorchScript or ONNX model,
for serving without ssad.

    python -m ssad.export --run runs/screw/20261201-2140 --format pt2           # RUN/detector.pt2
    python -m ssad.export --run runs/screw/20261201-2140 --format torchscript   # RUN/detector.torchscript.pt
    python -m ssad.export --run runs/screw/20261201-2140 --format onnx          # RUN/detector.onnx

The exported model takes (B, 3, H, W) float images in [0, 1] (divide uint8 by 255 first) of any
batch size and side, and returns four tensors, as `ssad.detector.Detection`: image scores (B,),
anomaly maps (B, 1, H, W), image decisions (B,) bool, pixel decisions (B, 1, H, W) bool, at the
run's thresholds (``--thresholds`` to choose). ``pt2`` is torch's own format, which replaces
TorchScript (deprecated since torch 2.14): ``torch.export.load(path).module()`` runs it, and
AOTInductor can compile it. ONNX needs the optional extra: ``pip install -e ".[onnx]"`` (the
packages onnx and onnxscript).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ssad.atomic import atomic_write
from ssad.cli import command_parser
from ssad.detector import THRESHOLDS, Detector, find_detector, load_detector

__all__ = ["main", "export_program", "export_torchscript", "export_onnx", "FORMATS", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("scores", "maps", "anomalous", "defect_masks")


class _Plain(nn.Module):
    """The detector with plain tuple outputs and float input, which both exporters take."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.detector(images))


def _example(detector: Detector) -> Tensor:
    device = next(detector.parameters()).device
    size = detector.image_size
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def _any_size() -> tuple[dict[int, torch.export.Dim]]:
    """torch.export's dynamic shapes for the one input: any batch size, height and width."""
    return ({0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")},)


def export_program(detector: Detector, path: Path) -> None:
    """Export ``detector`` with `torch.export` (any batch size and side) and save the program
    to ``path`` atomically; ``torch.export.load(path).module()`` runs it."""
    program = torch.export.export(_Plain(detector).eval(), (_example(detector),), dynamic_shapes=_any_size())
    atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)))


def export_torchscript(detector: Detector, path: Path) -> None:
    """Trace ``detector`` (every branch of its forward depends only on its fitted state and the input
    dtype, so a trace at one size serves every size) and save it to ``path`` atomically."""
    with warnings.catch_warnings():
        # torch marks TorchScript deprecated (it still loads everywhere); the tracer's warnings are
        # about the input check, which a trace cannot keep.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(_Plain(detector).eval(), _example(detector), check_trace=False)
        atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp)))


def export_onnx(detector: Detector, path: Path) -> None:
    """Export ``detector`` to ONNX at ``path`` with dynamic batch size and sides (needs onnx, onnxscript)."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(
            f"ONNX export needs the package(s) {', '.join(missing)}: pip install -e \".[onnx]\" "
            f"(or use --format pt2 or torchscript, which need nothing more)."
        )

    def write(tmp: Path) -> None:
        torch.onnx.export(
            _Plain(detector).eval(), (_example(detector),), str(tmp), dynamo=True, external_data=False,
            input_names=["images"], output_names=list(OUTPUT_NAMES),
            dynamic_shapes=_any_size(),
        )

    atomic_write(path, write)


#: Each format: its default file name in the run folder and the function that writes it.
FORMATS: dict[str, tuple[str, Callable[[Detector, Path], None]]] = {
    "pt2": ("detector.pt2", export_program),
    "torchscript": ("detector.torchscript.pt", export_torchscript),
    "onnx": ("detector.onnx", export_onnx),
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m ssad.export`` (``ssad export``: pass its ``prog``)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--run", type=Path, required=True,
                   help="run folder holding detector.pt, or a folder of runs (runs/<category>): the newest")
    p.add_argument("--format", choices=FORMATS, required=True)
    defaults = ", ".join(f"RUN/{name}" for name, _ in FORMATS.values())
    p.add_argument("--out", type=Path, help=f"output file (default, by format: {defaults})")
    p.add_argument("--thresholds", choices=THRESHOLDS, help="decision thresholds (default: the run's)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    path = find_detector(args.run)
    name, write = FORMATS[args.format]
    out = args.out or path.parent / name
    try:
        detector = load_detector(path)
        if args.thresholds:
            detector.use_thresholds(args.thresholds)
        write(detector, out)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.format}; input (B, 3, H, W) float in [0, 1]; outputs {', '.join(OUTPUT_NAMES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
