"""The Perlin-noise defect family (DRAEM, MemSeg, GLASS style), batched: every sample has its own
lattice scale, rotation, threshold and blend, and one call serves the whole batch.

A sample's mask is where its noise field exceeds its threshold, inside the object. The field is
one Perlin noise, or the maximum (union of the two masks) or minimum (intersection) of two, with
2^k lattice cells across the image, k drawn per sample and per field. Inside the mask the image is
blended with a fill, ``beta * fill + (1 - beta) * image``: another image (the source bank, or the
previous image of the batch) or the image itself with its tiles shuffled.

No Python loop over samples, no host sync: every sample's noise is evaluated on the finest lattice
allowed by ``SynthConfig.perlin_scale`` (coarser ones use its top-left corner, wrapped), and a
threshold that would keep less than ``perlin_min_area`` of the object is lowered to keep that
share, whatever the batch. `ssad.synth.params` draws the parameters
and the masks, `ssad.synth.functional.apply` blends.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .slices import batch_slices

__all__ = ["perlin_noise", "perlin_masks", "blend_perlin", "shuffle_tiles", "PERLIN_FILLS"]

#: Fill sources, in the order of ``SynthConfig.perlin_fill_probs`` and of ``params["perlin_fill"]``.
PERLIN_FILLS = ("other_image", "shuffled_tiles")


def perlin_noise(gradients: Tensor, cells: Tensor, angle: Tensor, height: int, width: int) -> Tensor:
    """(B, H, W) float Perlin noise in about [-0.7, 0.7]: ``gradients`` (B, L, L) angles of a
    periodic lattice, of which each sample uses the top-left ``cells`` (B,) int64 (<= L) cells
    across the image; the sample coordinates are turned by ``angle`` (B,) degrees about the
    image centre (the lattice wraps, so a turned field has no seam)."""
    batch, side = gradients.shape[0], gradients.shape[-1]
    device = gradients.device
    ys = ((torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height - 0.5)[None, :, None]
    xs = ((torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5)[None, None, :]
    theta = torch.deg2rad(angle)[:, None, None]
    period = cells.float()[:, None, None]
    cos, sin = theta.cos() * period, theta.sin() * period
    # The turn is linear in x and y: each lattice coordinate is a column term plus a row term,
    # so only the sum is a full (B, H, W) operation. Shifted by `cells`, the coordinates lie in
    # [0.29, 1.71] cells (|x|, |y| < 1/2): never negative, never past 2 cells.
    u, v = (xs * cos + period) - ys * sin, (xs * sin + period) + ys * cos
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    # Each pixel's top-left lattice corner as an index into a (2L + 1)-wide table of the sample's
    # lattice repeated over [0, 2 cells]: the other three corners are a fixed offset away, and
    # no pixel needs wrapping.
    wide = 2 * side + 1
    index = v0.mul_(wide).add_(u0).long().reshape(batch, -1)
    wrap = torch.remainder(torch.arange(wide, device=device)[None, :], cells[:, None])  # (B, 2L + 1)
    table = gradients.reshape(batch, -1).gather(1, (wrap[:, :, None] * side + wrap[:, None, :]).reshape(batch, -1))
    table_x, table_y = table.cos(), table.sin()  # per lattice point, not per pixel
    fu1, fv1 = fu - 1, fv - 1

    def corner(offset: int, du: Tensor, dv: Tensor) -> Tensor:
        """Dot product of the corner's gradient with the offset to it (the tables read from
        ``offset`` on, so the index needs no addition)."""
        gx = table_x[:, offset:].gather(1, index).reshape(batch, height, width)
        return gx.mul_(du).addcmul_(table_y[:, offset:].gather(1, index).reshape(batch, height, width), dv)

    wu, wv = _fade(fu), _fade(fv)
    top = corner(0, fu, fv).lerp_(corner(1, fu1, fv), wu)
    bottom = corner(wide, fu, fv1).lerp_(corner(wide + 1, fu1, fv1), wu)
    return top.lerp_(bottom, wv)


def perlin_masks(params: dict[str, Tensor], height: int, width: int, min_area: float,
                 object_masks: Tensor | None = None) -> Tensor:
    """(B, 1, H, W) bool defect masks of the Perlin ``params``, inside ``object_masks`` (B or 1,
    1, H, W) bool (everywhere when None or when a sample's object mask is empty). A threshold
    that would keep less than ``min_area`` of the object is lowered to keep about that share of
    it (the pixels of highest noise), and no mask is empty.

    The noise is smooth at the scale of a lattice cell: it is evaluated on a grid of 4 points per
    cell of the finest lattice (or the image, if smaller) and resized to the image, bilinearly.
    The share a threshold keeps is counted on that grid, where it costs a sixteenth.
    """
    gradients, cells = params["perlin_gradients"], params["perlin_cells"]
    batch, side = gradients.shape[0], gradients.shape[-1]
    grid_h, grid_w = min(height, 4 * side), min(width, 4 * side)
    fields = [perlin_noise(gradients[:, i], cells[:, i], params["perlin_angle"], grid_h, grid_w) for i in (0, 1)]
    combine = params["perlin_combine"][:, None, None]
    coarse = torch.where(combine == 1, torch.maximum(*fields),
                         torch.where(combine == 2, torch.minimum(*fields), fields[0]))[:, None]

    inside = torch.ones(1, 1, height, width, dtype=torch.bool, device=gradients.device)
    if object_masks is not None:
        inside = object_masks | ~object_masks.flatten(1).any(dim=1)[:, None, None, None]  # empty: anywhere
    # The lowest threshold allowed to stand: the keep-th highest noise value inside the object.
    coarse_inside = F.interpolate(inside.float(), size=(grid_h, grid_w), mode="nearest") > 0.5
    coarse_inside = coarse_inside.expand(batch, -1, -1, -1)
    # No sample keeps more than most_kept grid points, so the highest values are all it needs.
    most_kept = max(1, math.ceil(grid_h * grid_w * min_area))
    ranked = coarse.masked_fill(~coarse_inside, -math.inf).flatten(1).topk(most_kept, dim=1)
    keep = (coarse_inside.flatten(1).count_nonzero(dim=1) * min_area).ceil().long().clamp(1, most_kept)
    threshold = torch.minimum(params["perlin_threshold"][:, None], ranked.values.gather(1, keep[:, None] - 1))

    noise = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) \
        if (grid_h, grid_w) != (height, width) else coarse
    masks = (noise >= threshold[:, :, None, None]) & inside
    # However the resizing fell, no mask is empty: an empty one gets the pixel of the object's
    # noisiest grid point, which "nearest" above took from pixel floor(grid point * size / grid).
    peak = ranked.indices[:, :1]
    pixel = peak // grid_w * height // grid_h * width + peak % grid_w * width // grid_w
    flat = masks.view(batch, -1)
    flat.scatter_(1, pixel, flat.gather(1, pixel) | ~flat.any(dim=1, keepdim=True))
    return masks


def shuffle_tiles(images: Tensor, order: Tensor, sources: Tensor | None = None) -> Tensor:
    """(B, C, H, W) images rearranged by G x G tiles: tile ``i`` of result ``b`` is tile
    ``order[b, i]`` ((B, G*G) int64) of image ``sources[b]`` ((B,) int64; default ``b`` itself).
    Rows and columns beyond a whole number of tiles are that image's, where they were."""
    batch, channels, height, width = images.shape
    grid = math.isqrt(order.shape[1])
    th, tw = height // grid, width // grid
    images = images.contiguous()
    if sources is None:
        sources = torch.arange(batch, device=images.device)
    whole = (grid * th, grid * tw) == (height, width)
    out = torch.empty_like(images) if whole else images.index_select(0, sources)
    # Move whole words, not single bytes: a tile row of uint8 pixels is read as int64 words where
    # the sizes allow, which makes the gather several times faster on the CPU.
    unit = _word_size(images.element_size() * math.gcd(tw, width, images.storage_offset()))
    words = tw * images.element_size() // unit

    def tiles(x: Tensor) -> Tensor:  # (B, C, G, th, G, tw') view of the whole tiles
        return x[..., : grid * th, : grid * tw].view(_WORDS[unit]).unflatten(3, (grid, words)).unflatten(2, (grid, th))

    tile = order.view(batch, grid, grid)
    picked = tiles(images)[sources[:, None, None], :, tile // grid, :, tile % grid, :]  # (B, G, G, C, th, tw')
    tiles(out).copy_(picked.permute(0, 3, 1, 4, 2, 5))
    return out


def blend_perlin(images: Tensor, params: dict[str, Tensor], masks: Tensor,
                 source_images: Tensor | None = None) -> Tensor:
    """Blend ``images`` (B, C, H, W) uint8 or float in [0, 1] with their fill inside ``masks``
    (B, 1, H, W) bool: ``beta * fill + (1 - beta) * image``. The fill is, per ``perlin_fill``,
    another image (``source_images``, or the previous image of the batch when None) or the image
    with its tiles shuffled.

    uint8 images blend in 16-bit integers with beta rounded to a multiple of 1/128 (within one
    level of the float blend, rounded half up): a quarter of the memory traffic of floats.
    """
    batch = len(images)
    order, from_other = params["perlin_tiles"], params["perlin_fill"] == 0
    if source_images is None:
        # Both fills are tiles of the batch itself: the previous image's in place, or the
        # image's own shuffled. One gather builds the fill.
        here = torch.arange(batch, device=images.device)
        in_place = torch.arange(order.shape[1], device=images.device).expand_as(order)
        fill = shuffle_tiles(images, torch.where(from_other[:, None], in_place, order),
                             torch.where(from_other, (here - 1) % batch, here))
    else:
        fill = _select(from_other, source_images, shuffle_tiles(images, order))
    beta = params["perlin_beta"][:, None, None, None]
    out = torch.empty_like(images)
    for image, fill_part, weight, mask, into in batch_slices(images, fill, beta, masks.expand(batch, -1, -1, -1), out):
        if images.dtype == torch.uint8:
            # round(((128 - k) * image + k * fill) / 128), with beta = k / 128 and k = 0 outside
            # the mask: at most 255 * 128 + 64, which fits in int16.
            k = mask * (weight * 128).round().to(torch.int16)
            mixed = image.to(torch.int16).mul_(128 - k).addcmul_(fill_part.to(torch.int16), k)
            into.copy_(mixed.add_(64).bitwise_right_shift_(7))
        else:  # lerp is exact at weight 0: the pixels outside the mask keep their values
            torch.lerp(image, fill_part, mask * weight.to(images.dtype), out=into)
    return out


def _select(pick: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where ``pick`` (B,) bool, else ``b`` (both (B, ...)), without torch.where (slow on
    the CPU): uint8 ``b + (a - b) * pick`` wraps around modulo 256 to exactly one of them, and
    lerp is exact at weights 0 and 1."""
    pick = pick.view(-1, *([1] * (a.dim() - 1)))
    if a.dtype == torch.uint8:
        return a.sub(b).mul_(pick.to(torch.uint8)).add_(b)
    return torch.lerp(b, a, pick.to(a.dtype))


#: Integer dtypes of 1, 2, 4 and 8 bytes, to move pixels as whole words.
_WORDS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _word_size(nbytes: int) -> int:
    """The largest word (8, 4, 2 or 1 bytes) that divides ``nbytes``."""
    return next(unit for unit in (8, 4, 2, 1) if nbytes % unit == 0)


def _fade(t: Tensor) -> Tensor:
    """The quintic 6t^5 - 15t^4 + 10t^3, with two temporaries instead of seven."""
    return (t * 6).sub_(15).mul_(t).add_(10).mul_(t * t * t)
