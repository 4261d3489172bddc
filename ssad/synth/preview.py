"""Picture of a synthetic pretext batch: a labelled grid with each defect's mask outlined.

`render_grid` draws it and writes nothing; ``ssad synth preview`` (`ssad.synth_preview`) makes a
batch from a folder of images and saves its grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from .config import FILL_MODES, defect_kind
from .perlin import PERLIN_FILLS

__all__ = ["render_grid"]

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
    """"<label> <kind>" and how it was filled, e.g. "1 perlin · shuffled tiles"."""
    kind = defect_kind(label, int(params["family"][i]) if "family" in params else 0)
    if kind == "normal":
        return "0 normal"
    if kind == "perlin":
        return f"{label} perlin · {PERLIN_FILLS[int(params['perlin_fill'][i])].replace('_', ' ')}"
    if kind == "poisson":
        return f"{label} poisson"
    return f"{label} {kind} · {FILL_MODES[int(params['fill_mode'][i])].replace('_', ' ')}"
