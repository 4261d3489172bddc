"""Source images that texture defects are cut from.

For textures (carpet, grid, leather, tile, wood) the synthesizer fills defects with a cut from an
image of another category, so that the fill does not blend into the texture. `source_files` picks a
modest, deterministic selection of the other categories' training images under the same data root;
where there are none, `procedural_sources` generates colourful stand-ins (smooth noise, blobs,
stripes) from a seed.

Grayscale categories: when every training image of a texture is grayscale (R = G = B at every
pixel, `is_grayscale`), its source images, from other categories or procedural, are made grayscale
too (`to_grayscale`, luma), so that a fill cannot be told from the surface by its colour alone and
the pretext has to learn the shapes and textures of defects (`load_category` does it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ssad.data.layout import GOOD, list_images

__all__ = ["DEFAULT_MAX_SOURCES", "SourceKind", "is_grayscale", "procedural_sources", "source_files", "to_grayscale"]

SourceKind = Literal["other_categories", "procedural"]
DEFAULT_MAX_SOURCES = 64


def source_files(root: Path, category: str, max_images: int = DEFAULT_MAX_SOURCES) -> list[Path]:
    """Up to `max_images` training images of the categories under `root` other than `category`.

    Each other category contributes an equal share (at least one image), evenly spaced through its
    name-sorted list; categories are taken in name order. Empty when there is no other category.
    """
    folders = [f / "train" / GOOD for f in sorted(root.iterdir()) if f.name != category and not f.name.startswith(".")]
    others = [images for folder in folders if folder.is_dir() and (images := list_images(folder))]
    if not others:
        return []
    share = max(1, max_images // len(others))
    picked: list[Path] = []
    for images in others:
        count = min(share, len(images))
        picked += [images[i * len(images) // count] for i in range(count)]
    return picked[:max_images]


def procedural_sources(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`(n, 3, size, size) uint8` CPU images, interleaving smooth colour noise, soft blobs and stripes.

    Deterministic: the same `(n, size, seed)` gives the same tensor on every machine.
    """
    g = torch.Generator().manual_seed(seed)
    k = math.ceil(n / 3)
    ramp = torch.linspace(0.0, 1.0, size)
    y, x = ramp.view(1, size, 1), ramp.view(1, 1, size)

    noise = F.interpolate(torch.rand(k, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)

    blobs = torch.rand(k, 3, 1, 1, generator=g).expand(k, 3, size, size)
    for _ in range(8):
        centre = torch.rand(k, 2, 1, 1, generator=g)
        radius = 0.05 + 0.2 * torch.rand(k, 1, 1, generator=g)
        alpha = torch.exp(-((x - centre[:, 0]) ** 2 + (y - centre[:, 1]) ** 2) / (2 * radius**2)).unsqueeze(1)
        blobs = blobs * (1 - alpha) + torch.rand(k, 3, 1, 1, generator=g) * alpha

    angle = math.pi * torch.rand(k, 1, 1, generator=g)
    frequency = 4 + 12 * torch.rand(k, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(k, 1, 1, generator=g)
    along = x * torch.cos(angle) + y * torch.sin(angle)
    t = (0.5 + 0.5 * torch.sin(2 * math.pi * frequency * along + phase)).unsqueeze(1)
    stripes = torch.rand(k, 3, 1, 1, generator=g) * (1 - t) + torch.rand(k, 3, 1, 1, generator=g) * t

    images = torch.stack([noise, blobs, stripes], dim=1).flatten(0, 1)[:n]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


#: ITU-R BT.601 luma weights of R, G, B in thousandths (they sum to 1000): grey = their weighted mean.
_LUMA = (299, 587, 114)


def is_grayscale(images: torch.Tensor) -> bool:
    """True when every image of `images` `(N, 3, S, S)` has R = G = B at every pixel (a sync: one bool)."""
    return bool(((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).all())


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """`images` `(N, 3, S, S) uint8` as grey: each pixel's luma (BT.601, rounded) in all three channels.

    Same shape, dtype and device; already grey images come back unchanged.
    """
    weights = torch.tensor(_LUMA, dtype=torch.int32, device=images.device).view(1, 3, 1, 1)
    luma = ((images.to(torch.int32) * weights).sum(dim=1, keepdim=True) + 500) // 1000
    return luma.to(torch.uint8).expand_as(images).contiguous()
