"""`object_mask`: batched foreground estimation, so defects land on the object, not the backdrop.

Industrial images show an object on a plain backdrop. Per image: the backdrop colour is the
median of a thin border; each pixel's distance to it is thresholded with Otsu's method; small
specks are opened away; holes and dents are filled (a pixel is kept when it lies between
foreground pixels both along its row and along its column); a margin is added so that damaged
rims, where the object is missing, stay inside. All batched on the images' device, no sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["object_mask"]

_BINS = 256


def object_mask(
    images: Tensor,
    *,
    border: float = 0.02,
    speck: float = 0.01,
    margin: float = 0.03,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Estimate the object's pixels in each image.

    Args:
        images: (B, C, H, W) uint8, or float in [0, 1].
        border: width of the border that shows the backdrop, as a fraction of the image side.
        speck: size of foreground specks to remove, as a fraction of the image side.
        margin: dilation added around the object, as a fraction of the image side.

    Returns:
        masks: (B, 1, H, W) bool. An image whose estimate comes out empty gets all ones.
        info: per-image tensors: ``background`` (B, C) colour in [0, 1], ``threshold`` (B,)
            Otsu threshold on the colour distance, ``fallback`` (B,) bool, True where the
            estimate was empty and the whole image is used.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"object_mask expects a non-empty (B, C, H, W) batch; got {tuple(images.shape)}.")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    batch, channels, height, width = x.shape
    side = min(height, width)

    background = _border_median(x, max(1, round(border * side)))
    distance = (x - background[..., None, None]).abs().amax(dim=1)  # (B, H, W) in [0, 1]
    threshold = _otsu(distance)
    fg = (distance > threshold[:, None, None])[:, None].float()

    fg = _dilate(_erode(fg, _odd(speck * side)), _odd(speck * side))  # opening: drop specks
    fg = _fill_between(fg[:, 0] > 0)[:, None].float()
    fg = _dilate(fg, _odd(2 * margin * side)) > 0

    fallback = ~fg.flatten(1).any(dim=1)
    masks = fg | fallback[:, None, None, None]
    return masks, {"background": background, "threshold": threshold, "fallback": fallback}


def _border_median(x: Tensor, width: int) -> Tensor:
    """(B, C) per-channel median of the pixels within ``width`` of the image border."""
    ring = torch.ones(x.shape[-2:], dtype=torch.bool, device=x.device)
    ring[width:-width, width:-width] = False
    return x[..., ring].median(dim=-1).values


def _otsu(values: Tensor) -> Tensor:
    """(B,) Otsu threshold of (B, ...) values in [0, 1], from a 256-bin histogram per image."""
    batch = values.shape[0]
    bins = (values.reshape(batch, -1) * (_BINS - 1)).round().long()
    ones = torch.ones_like(bins, dtype=torch.float)
    hist = torch.zeros(batch, _BINS, device=values.device).scatter_add_(1, bins, ones)
    levels = torch.arange(_BINS, device=values.device, dtype=torch.float)
    weight_low = hist.cumsum(1)
    weight_high = weight_low[:, -1:] - weight_low
    sum_low = (hist * levels).cumsum(1)
    mean_low = sum_low / weight_low.clamp_min(1)
    mean_high = (sum_low[:, -1:] - sum_low) / weight_high.clamp_min(1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return (between.argmax(dim=1).float() + 0.5) / (_BINS - 1)


def _odd(size: float) -> int:
    return 2 * int(size // 2) + 1


def _dilate(mask: Tensor, size: int) -> Tensor:
    return F.max_pool2d(mask, size, stride=1, padding=size // 2) if size > 1 else mask


def _erode(mask: Tensor, size: int) -> Tensor:
    return -F.max_pool2d(-mask, size, stride=1, padding=size // 2) if size > 1 else mask


def _fill_between(mask: Tensor) -> Tensor:
    """(B, H, W) bool: pixels with foreground on both sides along their row and their column."""

    def between(m: Tensor, dim: int) -> Tensor:
        count = m.int().cumsum(dim=dim)  # foreground pixels up to and including this one
        after = count < count.narrow(dim, -1, 1)  # some foreground pixel comes later
        return m | ((count > 0) & after)

    return between(mask, 2) & between(mask, 1)
