"""The Perlin-noise defect family (DRAEM, MemSeg, GLASS style), batched: every sample has its own
lattice scale, rotation, threshold and blend, and one call serves the whole batch.

A sample's mask is where its noise field exceeds its threshold, inside the object. The field is
one Perlin noise, or the maximum (union of the two masks) or minimum (intersection) of two, with
2^k lattice cells across the image, k drawn per sample and per field. Inside the mask the image is
blended with a fill, ``beta * fill + (1 - beta) * image``: another image (the source bank, or the
next image of the batch) or the image itself with its tiles shuffled.

No Python loop over samples, no host sync: every sample's noise is evaluated on the finest lattice
allowed by ``SynthConfig.perlin_scale`` (coarser ones use its top-left corner, wrapped), and a mask
its threshold leaves smaller than ``perlin_min_area`` of the object is redrawn at the threshold
that keeps that share, whatever the batch. `ssad.synth.params` draws the parameters
and the masks, `ssad.synth.functional.apply` blends.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["perlin_noise", "perlin_masks", "blend_perlin", "shuffle_tiles", "PERLIN_FILLS"]

#: Fill sources, in the order of ``SynthConfig.perlin_fill_probs`` and of ``params["perlin_fill"]``.
PERLIN_FILLS = ("other_image", "shuffled_tiles")

#: `blend_perlin` works through the batch in this many slices (see there).
_SLICES = 8


def perlin_noise(gradients: Tensor, cells: Tensor, angle: Tensor, height: int, width: int) -> Tensor:
    """(B, H, W) float Perlin noise in about [-0.7, 0.7]: ``gradients`` (B, L, L) angles of a
    periodic lattice, of which each sample uses the top-left ``cells`` (B,) int64 (<= L) cells
    across the image; the sample coordinates are turned by ``angle`` (B,) degrees about the
    image centre (the lattice wraps, so a turned field has no seam)."""
    batch, side = gradients.shape[0], gradients.shape[-1]
    device = gradients.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height - 0.5
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W), image centre at 0
    theta = torch.deg2rad(angle)[:, None, None]
    period = cells.float()[:, None, None]
    u = (x * theta.cos() - y * theta.sin()) * period  # (B, H, W) lattice coordinates
    v = (x * theta.sin() + y * theta.cos()) * period
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    # Lattice columns and rows of the four corners, wrapped into [0, cells).
    u0, v0 = torch.remainder(u0, period), torch.remainder(v0, period)
    u1, v1 = torch.where(u0 + 1 == period, 0.0, u0 + 1), torch.where(v0 + 1 == period, 0.0, v0 + 1)
    flat = gradients.reshape(batch, side * side)
    table_x, table_y = flat.cos(), flat.sin()  # per lattice point, not per pixel

    def corner(cu: Tensor, cv: Tensor, du: int, dv: int) -> Tensor:
        """Dot product of the corner's gradient with the offset to it."""
        index = (cv * side + cu).long().reshape(batch, -1)
        gx = table_x.gather(1, index).reshape(batch, height, width)
        gy = table_y.gather(1, index).reshape(batch, height, width)
        return gx * (fu - du) + gy * (fv - dv)

    wu, wv = _fade(fu), _fade(fv)
    top = torch.lerp(corner(u0, v0, 0, 0), corner(u1, v0, 1, 0), wu)
    bottom = torch.lerp(corner(u0, v1, 0, 1), corner(u1, v1, 1, 1), wu)
    return torch.lerp(top, bottom, wv)


def perlin_masks(params: dict[str, Tensor], height: int, width: int, min_area: float,
                 object_masks: Tensor | None = None) -> Tensor:
    """(B, 1, H, W) bool defect masks of the Perlin ``params``, inside ``object_masks`` (B or 1,
    1, H, W) bool (everywhere when None or when a sample's object mask is empty). A mask its
    threshold leaves smaller than ``min_area`` of the object is redrawn at the lowered threshold
    that keeps about that share of the object's pixels (those of highest noise): none is empty.

    The noise is smooth at the scale of a lattice cell: it is evaluated on a grid of 4 points per
    cell of the finest lattice (or the image, if smaller) and resized to the image, bilinearly.
    """
    gradients, cells = params["perlin_gradients"], params["perlin_cells"]
    batch, side = gradients.shape[0], gradients.shape[-1]
    grid_h, grid_w = min(height, 4 * side), min(width, 4 * side)
    fields = [perlin_noise(gradients[:, i], cells[:, i], params["perlin_angle"], grid_h, grid_w) for i in (0, 1)]
    combine = params["perlin_combine"][:, None, None]
    coarse = torch.where(combine == 1, torch.maximum(*fields),
                         torch.where(combine == 2, torch.minimum(*fields), fields[0]))[:, None]
    noise = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) \
        if (grid_h, grid_w) != (height, width) else coarse

    inside = torch.ones(1, 1, height, width, dtype=torch.bool, device=gradients.device)
    if object_masks is not None:
        inside = object_masks | ~object_masks.flatten(1).any(dim=1)[:, None, None, None]  # empty: anywhere
    # The lowered threshold, from the coarse grid: its keep-th largest value inside the object.
    coarse_inside = F.interpolate(inside.float(), size=(grid_h, grid_w), mode="nearest") > 0.5
    coarse_inside, inside = coarse_inside.expand(batch, -1, -1, -1), inside.expand(batch, -1, -1, -1)
    ranked = coarse.masked_fill(~coarse_inside, -math.inf).flatten(1).sort(dim=1, descending=True).values
    keep = (coarse_inside.flatten(1).count_nonzero(dim=1) * min_area).ceil().long().clamp_min(1)
    lowered = ranked.gather(1, keep[:, None] - 1)[:, :, None, None]
    threshold = params["perlin_threshold"][:, None, None, None]
    above = ((noise > threshold) & inside).flatten(1).count_nonzero(dim=1)
    too_small = above < keep * (height * width) / (grid_h * grid_w)
    masks = (noise >= torch.where(too_small[:, None, None, None], lowered, threshold)) & inside
    # However the resizing fell, the object's noisiest pixel is always part of the defect.
    peak = noise.masked_fill(~inside, -math.inf).amax(dim=(2, 3), keepdim=True)
    return masks | (inside & (noise == peak))


def shuffle_tiles(images: Tensor, order: Tensor) -> Tensor:
    """(B, C, H, W) images with their G x G tiles rearranged: tile ``i`` of the result is tile
    ``order[:, i]`` (B, G*G) int64 of the input. Rows and columns beyond a whole number of tiles
    stay where they are."""
    batch, channels, height, width = images.shape
    grid = math.isqrt(order.shape[1])
    th, tw = height // grid, width // grid
    # Whole tiles as rows of one (B, G*G, C*th*tw) table: the shuffle is one gather of whole
    # rows, memory-bound, instead of an index per pixel.
    tiles = (images[..., : grid * th, : grid * tw].reshape(batch, channels, grid, th, grid, tw)
             .permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, -1))
    picked = tiles[torch.arange(batch, device=images.device)[:, None], order]
    out = images.clone()
    out[..., : grid * th, : grid * tw] = (picked.reshape(batch, grid, grid, channels, th, tw)
                                          .permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, grid * th, grid * tw))
    return out


def blend_perlin(images: Tensor, params: dict[str, Tensor], masks: Tensor,
                 source_images: Tensor | None = None) -> Tensor:
    """Blend ``images`` (B, C, H, W) uint8 or float in [0, 1] with their fill inside ``masks``
    (B, 1, H, W) bool: ``beta * fill + (1 - beta) * image``. The fill is ``source_images`` (the
    next image of the batch when None) or the image with shuffled tiles, per ``perlin_fill``."""
    other = images.roll(1, dims=0) if source_images is None else source_images
    shuffled = shuffle_tiles(images, params["perlin_tiles"])
    fill_mode = params["perlin_fill"][:, None, None, None]
    beta = params["perlin_beta"][:, None, None, None].float()
    out = torch.empty_like(images)
    # A fixed number of slices of the batch (not a loop over samples): the float temporaries
    # stay small enough for the allocator to reuse, which on the CPU saves more page faults than
    # the arithmetic costs.
    parts = (images, other, shuffled, fill_mode, beta, masks.expand(len(images), -1, -1, -1), out)
    for image, other_image, tiles, mode, weight, mask, into in zip(*(t.tensor_split(_SLICES) for t in parts)):
        blended = torch.lerp(image.float(), torch.where(mode == 0, other_image, tiles).float(), weight)
        if images.dtype == torch.uint8:
            blended.round_().clamp_(0, 255)
        torch.where(mask, blended.to(images.dtype), image, out=into)
    return out


def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)
