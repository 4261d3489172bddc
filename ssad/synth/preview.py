"""Picture of a synthetic pretext batch: a labelled grid with each defect's mask outlined.

    python -m ssad.synth.preview --images DIR --out grid.png [--n 16] [--size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from ssad.atomic import atomic_write

from .config import FILL_MODES, SynthConfig
from .perlin import PERLIN_FILLS
from .module import DefectSynthesizer
from .object_mask import object_mask

__all__ = ["render_grid", "save_png", "main"]

LABEL_NAMES = ("normal", "polygon", "scar", "perlin", "poisson")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_OUTLINE = torch.tensor([255, 32, 32], dtype=torch.uint8)


def render_grid(
    images: Tensor, labels: Tensor, masks: Tensor, params: dict[str, Tensor], columns: int = 4
) -> Image.Image:
    """A PIL image of the batch: each tile outlined in red where its mask ends, captioned with
    its label and fill mode.

    Args: images (B, C, H, W) uint8 or float in [0, 1]; labels (B,); masks (B, 1, H, W) bool.
    """
    images = images.detach().cpu()
    tiles = (images * 255).round().to(torch.uint8) if images.is_floating_point() else images
    tiles = tiles.expand(-1, 3, -1, -1).clone()  # grey images become RGB so the outline shows
    masks = masks.detach().cpu().float()
    edge = (masks - -F.max_pool2d(-masks, 3, stride=1, padding=1)) > 0  # mask minus its erosion
    tiles = torch.where(edge, _OUTLINE[:, None, None], tiles)

    batch, _, height, width = tiles.shape
    caption = 16
    rows = -(-batch // columns)
    canvas = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(batch):  # drawing a picture, not the hot path
        x, y = (i % columns) * width, (i // columns) * (height + caption)
        canvas.paste(Image.fromarray(tiles[i].permute(1, 2, 0).numpy()), (x, y + caption))
        label = int(labels[i])
        draw.text((x + 3, y + 2), _caption(label, params, i), fill="black")
    return canvas


def _caption(label: int, params: dict[str, Tensor], i: int) -> str:
    """"<label> <what>" and how it was filled, e.g. "1 perlin · shuffled tiles"."""
    family = int(params["family"][i]) if "family" in params else 0
    if not label:
        return "0 normal"
    if family == 1:
        return f"{label} perlin · {PERLIN_FILLS[int(params['perlin_fill'][i])].replace('_', ' ')}"
    if family == 2:
        return f"{label} poisson"
    return f"{label} {LABEL_NAMES[label]} · {FILL_MODES[int(params['fill_mode'][i])].replace('_', ' ')}"


def save_png(picture: Image.Image, path: str | os.PathLike) -> None:
    """Write ``picture`` to ``path`` as PNG, atomically."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def _load_images(folder: Path, count: int, size: int, rng: np.random.Generator) -> Tensor:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and "_mask" not in p.stem)
    if not paths:
        raise SystemExit(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found under {folder}")
    chosen = [paths[i] for i in rng.choice(len(paths), size=count, replace=len(paths) < count)]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in chosen]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ssad.synth.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of normal images (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG to write")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--size", type=int, default=256, help="square image size")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-object-mask", action="store_true", help="place defects anywhere in the image")
    parser.add_argument("--family-probs", type=float, nargs=3, default=(1.0, 0.0, 0.0),
                        metavar=("CUTPASTE", "PERLIN", "POISSON"),
                        help="families of the big defects (e.g. 0.34 0.33 0.33 shows every family)")
    args = parser.parse_args(argv)

    images = _load_images(args.images, args.n, args.size, np.random.default_rng(args.seed))
    masks = None if args.no_object_mask else object_mask(images)
    synth = DefectSynthesizer(SynthConfig(family_probs=tuple(args.family_probs)))
    out = synth(images, object_masks=masks, generator=torch.Generator().manual_seed(args.seed))
    save_png(render_grid(out.images, out.labels, out.masks, out.params, args.columns), args.out)
    print(f"wrote {args.out} ({args.n} samples, labels {out.labels.bincount(minlength=3).tolist()})")


if __name__ == "__main__":
    main()
