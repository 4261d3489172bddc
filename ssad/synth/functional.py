"""`apply`: the pure function that turns images and sampled parameters into the pretext batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .colour import apply_colour, colour_matrix
from .config import SynthConfig
from .perlin import blend_perlin
from .poisson import largest_change, poisson_box, poisson_change
from .raster import box_origins, compositing_box, destination_pixels, rasterize, source_pixels

__all__ = ["apply", "working_colour", "WorkingColour"]

_COLOUR_SLICES = 8


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

    ``config.backend`` picks the implementation: "reference" this torch code, "fused" the Triton
    kernel of `ssad.kernels` (ValueError where it cannot run), "auto" the kernel for CUDA images
    when Triton is installed, else this code. Both compute the same batch.
    """
    if _use_fused(images, config):
        from ssad.kernels import fused_apply

        out, masks = fused_apply(images, params, config, source_images)
    else:
        out, masks = _cut_paste(images, params, config, source_images)
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

        Runs over the batch in a fixed number of slices: the float temporaries stay a fraction
        of the batch, which on the CPU keeps them in the allocator's reused memory (a fresh
        50 MB block costs more in page faults than the arithmetic), whatever B is.
        """
        if config.brightness == config.contrast == config.hue == 0:  # the identity: skip the float round trip
            return pixels.clone()
        result = torch.empty(pixels.shape, dtype=images.dtype, device=pixels.device)
        for part, m, b, into in zip(*(t.tensor_split(_COLOUR_SLICES) for t in (pixels, matrix, bias, result))):
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
    from ``source_images``, or from the next image of the batch."""
    family = params["family"][:, None, None, None]
    other = out.roll(1, dims=0) if source_images is None else source_images
    if "perlin_mask" in params:
        perlin = params["perlin_mask"] & (family == 1)
        out = blend_perlin(out, params, perlin, other)
        masks = masks | perlin
    if "poisson_size" in params:
        out, changed = _poisson(out, params, config, other, chosen=params["family"] == 2)
        masks = masks | changed
    return out, masks


def _poisson(
    images: Tensor, params: dict[str, Tensor], config: SynthConfig, sources: Tensor, chosen: Tensor
) -> tuple[Tensor, Tensor]:
    """The ``chosen`` (B,) bool samples with their Poisson patch blended in (`ssad.synth.poisson`):
    images like the input, and (B, 1, H, W) bool masks of the defect (empty for the others)."""
    batch, channels, height, width = images.shape
    size, centre, scale = params["poisson_size"], params["poisson_centre"], params["poisson_scale"]
    short, long = poisson_box(config.poisson_size, config.poisson_aspect, height, width)
    # The box: `short` x `long` pixels around the patch centre (sampled to keep it inside); a tall
    # patch's box is transposed, its rows running down image columns.
    tall = (size[:, 1] > size[:, 0])[:, None, None]
    box_rows, box_cols = torch.where(tall, long, short), torch.where(tall, short, long)  # (B, 1, 1) on the image
    top = (centre[:, 1, None, None] - box_rows / 2).round().long().clamp_min(0).minimum(height - box_rows)
    left = (centre[:, 0, None, None] - box_cols / 2).round().long().clamp_min(0).minimum(width - box_cols)
    i = torch.arange(short, device=images.device)[:, None]  # box row, box column
    j = torch.arange(long, device=images.device)[None, :]
    rows, cols = top + torch.where(tall, j, i), left + torch.where(tall, i, j)  # (B, short, long) image pixels
    index = (rows * width + cols).reshape(batch, 1, -1).expand(-1, channels, -1)
    flat = images.reshape(batch, channels, -1)
    boxes = flat.gather(2, index).reshape(batch, channels, short, long)

    # Box pixel centres relative to the patch centre, in pixels; the patch samples the source there.
    x = cols.float() + 0.5 - centre[:, 0, None, None]  # (B, short, long)
    y = rows.float() + 0.5 - centre[:, 1, None, None]
    # The samples not chosen get no rectangle: their change solves to exactly 0.
    inside = (x.abs() < size[:, 0, None, None] / 2) & (y.abs() < size[:, 1, None, None] / 2) & chosen[:, None, None]
    source = params["poisson_source"]
    gx = (source[:, None, None, 0] + x / scale[:, None, None]) * (2 / width) - 1
    gy = (source[:, None, None, 1] + y / scale[:, None, None]) * (2 / height) - 1
    grid = torch.stack((gx, gy), dim=-1)  # (B, short, long, 2)
    # All in the images' units (0-255 for uint8): the blend is linear, no rescaling needed.
    patch = F.grid_sample(sources.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    blended = boxes.to(torch.float32, copy=True)  # a copy even for float32 boxes, kept to compare
    blended[..., 1:-1, 1:-1] += poisson_change(blended, patch, inside[:, None])
    top_value = 255.0 if images.dtype == torch.uint8 else 1.0
    blended.clamp_(0, top_value)
    if images.dtype == torch.uint8:
        blended.round_()
    # The defect: where the blend changed a pixel by a tenth of the sample's largest change (the
    # solve's smooth correction fades out over the whole box) and by at least one level.
    change = largest_change(blended, boxes)
    changed = change >= (0.1 * change.amax(dim=(2, 3), keepdim=True)).clamp_min(top_value / 255)
    out = flat.clone().scatter_(2, index, blended.to(images.dtype).reshape(batch, channels, -1))
    masks = torch.zeros(batch, 1, height * width, dtype=torch.bool, device=images.device)
    masks.scatter_(2, index[:, :1], changed.reshape(batch, 1, -1))
    return out.reshape(images.shape), masks.reshape(batch, 1, height, width)


def _use_fused(images: Tensor, config: SynthConfig) -> bool:
    """Whether `apply` dispatches to the fused kernel; `ssad.kernels` (and Triton) load only then."""
    if config.backend == "reference" or (config.backend == "auto" and not images.is_cuda):
        return False
    from ssad.kernels import available

    return config.backend == "fused" or available(images.device)
