"""`apply`: the pure function that turns images and sampled parameters into the pretext batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import Backend, register, resolve
from .colour import apply_colour, colour_matrix
from .config import SynthConfig
from .perlin import blend_perlin
from .poisson import box_on_image, largest_change, poisson_box, rectangle_change
from .raster import box_origins, compositing_box, destination_pixels, rasterize, source_pixels
from .slices import SLICES, batch_slices

__all__ = ["apply", "working_colour", "WorkingColour"]


class WorkingColour(NamedTuple):
    """The colour map of a batch in the units images are processed in.

    uint8 images work in [0.5, 255.5]: the rounding offset is folded into ``bias`` and the fill
    colours, so the final cast (which truncates) rounds. Float images work in [0, 1].
    ``matrix`` (B, C, C), ``bias`` and ``flat`` (B, C), all of ``dtype``; values are clamped to
    [``low``, ``high``] after the colour map.
    """

    matrix: Tensor
    bias: Tensor
    flat: Tensor
    low: float
    high: float
    dtype: torch.dtype


def working_colour(params: dict[str, Tensor], images_dtype: torch.dtype, channels: int) -> WorkingColour:
    """The colour jitter and flat fill colours of ``params`` for images of ``images_dtype``."""
    work_dtype = torch.float64 if images_dtype == torch.float64 else torch.float32
    scale, offset = (255.0, 0.5) if images_dtype == torch.uint8 else (1.0, 0.0)
    matrix, bias = colour_matrix(params, channels)
    return WorkingColour(
        matrix=matrix.to(work_dtype),
        bias=(bias * scale + offset).to(work_dtype),
        flat=(params["flat_colour"].to(work_dtype) * scale + offset),
        low=offset,
        high=scale + offset,
        dtype=work_dtype,
    )


def apply(
    images: Tensor,
    params: dict[str, Tensor],
    config: SynthConfig,
    source_images: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Colour-jitter every image, then replace each sample's defect region by its fill.

    Args:
        images: (B, C, H, W) uint8, or float in [0, 1].
        params: from `sample_params` for this shape (or replayed from another batch).
        config: the config the params were drawn with (fixes the compositing box size).
        source_images: (B, C, H, W) like ``images``: where cut-paste takes its patch; the
            images themselves when None.

    Returns:
        images (B, C, H, W), same dtype as the input: the colour-jittered input outside the
            defect; inside it the fill of ``fill_mode``: the (colour-jittered) source pixels,
            their average colour over the region, or ``flat_colour``.
        masks (B, 1, H, W) bool: exactly the pixels whose content was replaced.

    ``config.backend`` picks the implementation of the cut-paste defects (`ssad.synth.backends`):
    "reference" this torch code, "fused" the Triton kernel of `ssad.kernels` (ValueError where it
    cannot run), "auto" the kernel for CUDA images when Triton is installed, else this code. Both
    compute the same batch.
    """
    out, masks = resolve(config.backend, images.device).apply(images, params, config, source_images)
    if "family" in params:
        out, masks = _other_families(out, masks, params, config, source_images)
    return out, masks


def _cut_paste(
    images: Tensor, params: dict[str, Tensor], config: SynthConfig, source_images: Tensor | None
) -> tuple[Tensor, Tensor]:
    """`apply` for the spec's defects, in torch."""
    batch, channels, height, width = images.shape
    box_h, box_w = compositing_box(config, height, width)
    colour = working_colour(params, images.dtype, channels)
    matrix, bias, work_dtype = colour.matrix, colour.bias, colour.dtype

    def jitter(pixels: Tensor) -> Tensor:
        """(B, C, n) pixels -> colour-jittered, in the images' dtype (uint8 rounds).

        Runs over the batch in slices (`ssad.synth.slices`): the float temporaries stay small.
        """
        if config.brightness == config.contrast == config.hue == 0:  # the identity: skip the float round trip
            return pixels.clone()
        result = torch.empty(pixels.shape, dtype=images.dtype, device=pixels.device)
        for part, m, b, into in batch_slices(pixels, matrix, bias, result):
            if into.dtype == work_dtype:  # float images: straight into the result
                apply_colour(part, m, b, out=into).clamp_(colour.low, colour.high)
            else:  # uint8 (or half) images: a float slice, rounded into the result
                into.copy_(apply_colour(part.to(work_dtype), m, b).clamp_(colour.low, colour.high))
        return result

    # From here on all work is in the images' dtype: for uint8 the box gathers, selects and
    # scatters move a quarter of the bytes floats would.
    out = jitter(images.reshape(batch, channels, -1))  # (B, C, H*W)
    if config.class_probs[2] == 0 and (config.class_probs[1] == 0 or config.family_probs[0] == 0):
        # No sample can get a polygon or a scar (other families only): the colour map is all.
        return out.reshape(images.shape), torch.zeros(batch, 1, height, width, dtype=torch.bool, device=images.device)

    origins = box_origins(params["vertices"], box_h, box_w, height, width)
    inside = rasterize(params["vertices"], params["num_vertices"], origins, box_h, box_w).reshape(batch, 1, -1)
    where_to = destination_pixels(origins, box_h, box_w, width)[:, None, :].expand(-1, channels, -1)
    where_from = source_pixels(params, origins, box_h, box_w, height, width)[:, None, :].expand(-1, channels, -1)

    if source_images is None:
        patch = out.gather(2, where_from)
    else:
        patch = jitter(source_images.reshape(batch, channels, -1).gather(2, where_from))
    # Per-sample constant fill (B, C, 1): the average colour of the (jittered) source region, or
    # the flat colour; uint8 rounds the average (colour.low holds the rounding offset).
    weights = inside.to(work_dtype).transpose(1, 2)  # (B, N, 1)
    average = torch.bmm(patch.to(work_dtype), weights) / weights.sum(dim=1, keepdim=True).clamp_min(1)
    mode = params["fill_mode"][:, None, None]
    constant = torch.where(mode == 1, average + colour.low, colour.flat[..., None]).clamp_(colour.low, colour.high)
    fill = torch.where(mode == 0, patch, constant.to(images.dtype))

    out.scatter_(2, where_to, torch.where(inside, fill, out.gather(2, where_to)))
    masks = torch.zeros(batch, height * width, dtype=torch.bool, device=images.device)
    masks.scatter_(1, where_to[:, 0], inside[:, 0])
    return out.reshape(batch, channels, height, width), masks.reshape(batch, 1, height, width)


def _other_families(
    out: Tensor, masks: Tensor, params: dict[str, Tensor], config: SynthConfig, source_images: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Blend the Perlin and Poisson defects into the colour-jittered batch ``out`` (B, C, H, W),
    where ``params["family"]`` says so; their masks join ``masks`` (B, 1, H, W) bool. Fills come
    from ``source_images``, or from the previous image of the batch."""
    family = params["family"][:, None, None, None]
    # Poisson patches come from the batch as it is before the Perlin blend.
    other = out.roll(1, dims=0) if source_images is None and "poisson_size" in params else source_images
    if "perlin_mask" in params:
        perlin = params["perlin_mask"] & (family == 1)
        out = blend_perlin(out, params, perlin, source_images)
        masks = masks | perlin
    if "poisson_size" in params:
        masks = masks | _poisson_into(out, params, config, other, chosen=params["family"] == 2)
    return out, masks


#: Poisson boxes of more pixels than this are blended a slice of the batch at a time
#: (`ssad.synth.slices`); smaller ones (those of 128 and 256-px images at the default sizes) go in
#: one piece, where the slices' extra dispatch outweighs what they save.
_SLICED_BOX_PIXELS = 10_000
#: Images of more pixels than this get the float copy of their sources (what the patches are
#: sampled from) made a slice at a time, even where the boxes go in one piece: a whole copy is
#: large enough that glibc's default allocator serves it with fresh pages on every call.
_SLICED_SOURCE_PIXELS = 128 * 128


def _poisson_into(
    images: Tensor, params: dict[str, Tensor], config: SynthConfig, sources: Tensor, chosen: Tensor
) -> Tensor:
    """Blend the ``chosen`` (B,) bool samples' Poisson patches (`ssad.synth.poisson`) into
    ``images`` (B, C, H, W), in place (`apply`'s own batch, not the caller's: no copy of the
    batch needed); return their (B, 1, H, W) bool masks (empty for the others)."""
    batch, channels, height, width = images.shape
    short, long = poisson_box(config.poisson_size, config.poisson_aspect, height, width)
    pixels, rows, cols, grid = _poisson_geometry(params, chosen, short, long, height, width)
    where = pixels.reshape(batch, 1, -1).expand(-1, channels, -1)
    flat = images.view(batch, channels, -1)  # a view: the scatter below writes into images
    boxes = flat.gather(2, where).reshape(batch, channels, short, long)
    blended = torch.empty_like(boxes)
    changed = torch.empty(batch, 1, short, long, dtype=torch.bool, device=images.device)
    # Decided by the box and image sizes alone, so the operations do not depend on the batch size.
    # Time a change of either threshold with bench/families.py --families poisson (both allocators).
    slices = SLICES if short * long > _SLICED_BOX_PIXELS else 1
    source_slices = SLICES if slices == 1 and height * width > _SLICED_SOURCE_PIXELS else 1
    for part in batch_slices(boxes, sources, grid, rows, cols, blended, changed, slices=slices):
        _poisson_boxes(*part, source_slices=source_slices)
    flat.scatter_(2, where, blended.reshape(batch, channels, -1))
    masks = torch.zeros(batch, 1, height * width, dtype=torch.bool, device=images.device)
    masks.scatter_(2, where[:, :1], changed.reshape(batch, 1, -1))
    return masks.reshape(batch, 1, height, width)


def _poisson_geometry(
    params: dict[str, Tensor], chosen: Tensor, short: int, long: int, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where each sample's ``short`` x ``long`` box lies and what it samples: the flat image
    index (B, short, long) int64 of every box pixel, the patch rectangle as the box rows (B,
    short) and columns (B, long) bool it covers (no rows where not ``chosen``), and the grid (B,
    short, long, 2) of `F.grid_sample` into the source.

    A wide patch's box lies as the image, a tall one's is turned: its rows (``i``) run along image
    x, its columns (``j``) along y. Either way each quantity is a box row's term and a box
    column's term, so only their sums are full-size operations.
    """
    size, centre = params["poisson_size"], params["poisson_centre"]
    source, scale = params["poisson_source"], params["poisson_scale"][:, None]
    tall, extent = box_on_image(size, short, long)
    # The box's first pixel on each image axis (x, y), around the centre and inside the image.
    first = torch.stack([(centre[:, a] - extent[:, a] / 2).round().long().clamp_min(0).minimum(limit - extent[:, a])
                         for a, limit in ((0, width), (1, height))], dim=1)

    def along(axis: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
        """For a box side of ``count`` pixels along image ``axis`` (B,) (0: x, 1: y): each
        pixel's image coordinate (B, count), whether its centre is inside the patch, and the
        normalised coordinate where the patch samples the source there."""
        on = lambda t: t.gather(1, axis[:, None])  # noqa: E731  (B, 2) -> the axis' (B, 1)
        pixel = on(first) + torch.arange(count, device=first.device)
        offset = pixel + 0.5 - on(centre)
        side = torch.where(axis == 0, width, height)[:, None]
        return pixel, offset.abs() < on(size) / 2, (on(source) + offset / scale) * (2 / side) - 1

    pixel_i, inside_i, at_i = along((~tall).long(), short)  # rows: along y, or x if tall
    pixel_j, inside_j, at_j = along(tall.long(), long)
    stride_i, stride_j = torch.where(tall, 1, width)[:, None], torch.where(tall, width, 1)[:, None]
    pixels = (pixel_i * stride_i)[:, :, None] + (pixel_j * stride_j)[:, None, :]
    # grid_sample's (x, y) is (column term, row term) for a wide sample and (row, column) for a
    # tall one: each term goes to its slot by a multiplication with 0 or 1 (exact), and each of x
    # and y is one broadcast sum written straight into the grid (a 4-d broadcast over both slots
    # at once is several times slower).
    turned = tall.float()[:, None]
    grid = torch.empty(*pixels.shape, 2, device=pixels.device)
    for slot, (row_weight, col_weight) in enumerate(((turned, 1 - turned), (1 - turned, turned))):
        torch.add((at_i * row_weight)[:, :, None], (at_j * col_weight)[:, None, :], out=grid[..., slot])
    return pixels, inside_i & chosen[:, None], inside_j, grid


def _poisson_boxes(
    boxes: Tensor, sources: Tensor, grid: Tensor, rows: Tensor, cols: Tensor, into: Tensor, changed: Tensor,
    source_slices: int,
) -> None:
    """Blend one slice of the batch: the patches sampled from ``sources`` (b, C, H, W) at
    ``grid`` (their float copy made in ``source_slices`` slices) into ``boxes`` (b, C, h, w), in
    the rectangle of ``rows`` (b, h) and ``cols`` (b, w); the result goes to ``into`` (like
    boxes) and the defect mask to ``changed`` (b, 1, h, w) bool."""
    # In the images' units (0-255 for uint8): the blend is linear, no rescaling needed.
    pieces = [F.grid_sample(part.float(), at, mode="bilinear", padding_mode="border", align_corners=False)
              for part, at in batch_slices(sources, grid, slices=source_slices)]
    patch = pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # one piece: no copy
    # uint8 works in [0.5, 255.5], so that the cast (which truncates) rounds; the offset changes
    # nothing in the solve. A copy even for float32 boxes, which stay to compare.
    uint8 = boxes.dtype == torch.uint8
    blended = torch.add(boxes, 0.5) if uint8 else boxes.to(torch.float32, copy=True)
    blended[..., 1:-1, 1:-1] += rectangle_change(blended, patch, rows, cols)
    into.copy_(blended.clamp_(0.5, 255.5) if uint8 else blended.clamp_(0, 1))
    # The defect: where the blend changed a pixel by a tenth of the sample's largest change (the
    # solve's smooth correction fades out over the whole box) and by at least one level.
    change = largest_change(into.to(torch.int16), boxes) if uint8 else largest_change(into, boxes)
    torch.ge(change, (0.1 * change.amax(dim=(2, 3), keepdim=True)).clamp_min(1 if uint8 else 1 / 255), out=changed)


# The torch code runs wherever torch does.
register(Backend("reference", _cut_paste, available=lambda device: True))
