"""``python -m ssad.synth preview``: a picture of a synthetic pretext batch made from a folder of images.

    python -m ssad.synth preview --images DIR --out grid.png [--n 16] [--size 256] [--seed 0]

Draws ``--n`` images from the folder (searched recursively; ground-truth ``*_mask`` files are
skipped), gives them defects with the default `SynthConfig` (``--family-probs`` to show the other
families) and writes the labelled grid of `ssad.synth.preview.render_grid`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssad.atomic import save_png
from ssad.cli import command_parser
from ssad.data.layout import find_images, no_images_error
from ssad.synth import DefectSynthesizer, SynthConfig, object_mask
from ssad.synth.preview import render_grid

__all__ = ["build_parser", "main"]


def _load_images(folder: Path, count: int, size: int, rng: np.random.Generator) -> Tensor:
    """(count, 3, size, size) uint8: images drawn from ``folder`` (with repeats when it holds fewer)."""
    paths = find_images(folder, masks=False)
    if not paths:
        raise SystemExit(no_images_error(folder))
    chosen = [paths[i] for i in rng.choice(len(paths), size=count, replace=len(paths) < count)]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in chosen]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m ssad.synth preview`` (``ssad synth preview``: pass its ``prog``)."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("--images", type=Path, required=True, help="folder of normal images (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG to write")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--size", type=int, default=256, help="square image size")
    parser.add_argument("--columns", type=int, default=4, help="tiles per row of the grid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images drawn and of their defects")
    parser.add_argument("--no-object-mask", action="store_true", help="place defects anywhere in the image")
    parser.add_argument("--family-probs", type=float, nargs=3, default=(1.0, 0.0, 0.0),
                        metavar=("CUTPASTE", "PERLIN", "POISSON"),
                        help="families of the big defects (e.g. 0.34 0.33 0.33 shows every family)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    images = _load_images(args.images, args.n, args.size, np.random.default_rng(args.seed))
    masks = None if args.no_object_mask else object_mask(images)
    synth = DefectSynthesizer(SynthConfig(family_probs=tuple(args.family_probs)))
    out = synth(images, object_masks=masks, generator=torch.Generator().manual_seed(args.seed))
    save_png(render_grid(out.images, out.labels, out.masks, out.params, args.columns), args.out)
    print(f"wrote {args.out} ({args.n} samples, labels {out.labels.bincount(minlength=3).tolist()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
