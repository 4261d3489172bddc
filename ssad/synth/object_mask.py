"""`object_mask`: batched foreground estimation, so defects land on the object, not the backdrop.

Industrial images show an object on a plain backdrop. Per image, two cues set the object apart:

- colour: each pixel's distance to the backdrop colour (the median of a thin border);
- texture: the local gradient energy (mean absolute difference of neighbouring pixels over a small
  window). A dark rubber part on a dark backdrop barely differs in colour, but its grain, treads and
  edges do differ from a plain backdrop.

A pixel is foreground when either cue exceeds its threshold: Otsu's, but never below what 99% of
the border pixels show (so a grainy backdrop does not count as texture). Then small specks are
opened away, thin parts that hang on the object (a screw's tip) grow back, holes and dents are
filled (a pixel is kept when it lies between foreground pixels both along its row and along its
column), and a margin is added so that damaged rims, where the object is missing, stay inside. All
batched on the images' device: no host sync, the same operations for any batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["object_mask", "masks_at", "CUES"]

_BINS = 256
#: What sets an object apart from its backdrop: its colour, and its texture (local gradient energy).
CUES = ("colour", "texture")


def object_mask(
    images: Tensor,
    *,
    cues: tuple[str, ...] = CUES,
    border: float = 0.02,
    border_quantile: float | None = 0.99,
    texture_window: float = 0.02,
    speck: float = 0.01,
    regrow: float = 0.05,
    margin: float = 0.03,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Estimate the object's pixels in each image.

    Sizes are fractions of the image side (the shorter one).

    Args:
        images: (B, C, H, W) uint8, or float in [0, 1].
        cues: "colour", "texture" or both (the default); ``("colour",)`` with ``regrow=0``,
            ``border_quantile=None`` is a colour-only estimate (`bench/object_mask.py` compares
            the two on real defects).
        border: width of the border that shows the backdrop.
        border_quantile: a cue's threshold is at least this quantile of its values on the border
            (None: Otsu's threshold alone).
        texture_window: side of the window the gradient energy is averaged over.
        speck: size of foreground specks to remove.
        regrow: how far thin foreground that the speck removal took, but that hangs on what is
            left, grows back (0: not at all).
        margin: dilation added around the object.
        return_info: also return the per-image diagnostics.

    Returns:
        masks: (B, 1, H, W) bool, ready for ``DefectSynthesizer(...)(images, object_masks=masks)``.
            An image whose estimate comes out empty gets all ones.
        info (only with ``return_info=True``): per-image tensors: ``background`` (B, C) colour in
            [0, 1]; ``threshold`` (B,) on the colour distance; ``texture_threshold`` (B,) on the
            gradient energy (only with the texture cue); ``fallback`` (B,) bool, True where the
            estimate was empty and the whole image is used.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"object_mask expects a non-empty (B, C, H, W) batch; got {tuple(images.shape)}.")
    if not cues or set(cues) - set(CUES):
        raise ValueError(f"object_mask cues={cues!r}: choose one or more of {CUES}.")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    side = min(x.shape[-2:])
    thickness = max(1, round(border * side))

    background = _border_pixels(x, thickness).median(dim=-1).values  # (B, C)
    distance = (x - background[..., None, None]).abs().amax(dim=1)  # (B, H, W) in [0, 1]
    threshold = _threshold(distance, thickness, border_quantile)
    fg = distance > threshold[:, None, None]
    info = {"background": background, "threshold": threshold}
    if "texture" in cues:
        energy = _texture_energy(x, _odd(texture_window * side)).clamp(0, 1)
        info["texture_threshold"] = _threshold(energy, thickness, border_quantile)
        fg = fg | (energy > info["texture_threshold"][:, None, None])
    fg = fg[:, None].float()

    opened = _dilate(_erode(fg, _odd(speck * side)), _odd(speck * side))  # opening: drop specks
    for _ in range(round(regrow * side)):  # grow back into the foreground, a pixel at a time
        opened = torch.minimum(_dilate(opened, 3), fg)
    fg = _fill_between(opened[:, 0] > 0)[:, None].float()
    fg = _dilate(fg, _odd(2 * margin * side)) > 0

    info["fallback"] = ~fg.flatten(1).any(dim=1)
    masks = fg | info["fallback"][:, None, None, None]
    return (masks, info) if return_info else masks


def masks_at(object_masks: Tensor, index: Tensor) -> Tensor:
    """The object masks of the images at ``index`` (B,) int64: rows of ``object_masks`` where it
    holds one mask per image (N, 1, H, W), else the one mask all images share (1, 1, H, W), as it
    is: the synthesizer takes (B or 1, 1, H, W) bool."""
    return object_masks[index] if len(object_masks) > 1 else object_masks


def _threshold(cue: Tensor, thickness: int, border_quantile: float | None) -> Tensor:
    """(B,) threshold of a (B, H, W) cue in [0, 1]: Otsu's, raised to the border's quantile."""
    threshold = _otsu(cue)
    if border_quantile is None:
        return threshold
    return torch.maximum(threshold, _border_pixels(cue[:, None], thickness)[:, 0].quantile(border_quantile, dim=-1))


def _border_pixels(x: Tensor, thickness: int) -> Tensor:
    """(B, C, N): the pixels within ``thickness`` of the image border, by slicing (a boolean index
    would cost a host sync)."""
    strips = (x[..., :thickness, :], x[..., -thickness:, :], x[..., thickness:-thickness, :thickness],
              x[..., thickness:-thickness, -thickness:])
    return torch.cat([strip.flatten(2) for strip in strips], dim=2)


def _texture_energy(x: Tensor, window: int) -> Tensor:
    """(B, H, W): mean absolute difference between neighbouring pixels (largest over the
    channels), averaged over a ``window`` x ``window`` neighbourhood."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(dim=1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(dim=1)
    gradient = F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 0, 1))
    return F.avg_pool2d(gradient[:, None], window, stride=1, padding=window // 2, count_include_pad=False)[:, 0]


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


# Flat square morphology as max-pooling, not kornia.morphology: the same result and, at 7x7, the
# same speed (bench/kornia_choice.py), but kornia's grey-scale morphology takes every kernel offset
# in turn, and the margins here reach kernels of 40 pixels and more.
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
