"""`apply`: the pure function that turns images and sampled parameters into the pretext batch."""

from __future__ import annotations

import torch
from torch import Tensor

from .colour import apply_colour, colour_matrix
from .config import SynthConfig
from .raster import box_origins, compositing_box, destination_pixels, rasterize, source_pixels

__all__ = ["apply"]


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
    """
    batch, channels, height, width = images.shape
    box_h, box_w = compositing_box(config, height, width)
    is_uint8 = images.dtype == torch.uint8
    work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    # uint8 works in [0.5, 255.5]: the rounding offset is folded into the bias, the final cast truncates.
    scale, offset = (255.0, 0.5) if is_uint8 else (1.0, 0.0)

    matrix, bias = colour_matrix(params, channels)
    matrix, bias = matrix.to(work_dtype), (bias * scale + offset).to(work_dtype)

    def jitter(pixels: Tensor) -> Tensor:
        return apply_colour(pixels.to(work_dtype), matrix, bias).clamp_(offset, scale + offset)

    out = jitter(images.reshape(batch, channels, -1))  # (B, C, H*W)

    origins = box_origins(params["vertices"], box_h, box_w, height, width)
    inside = rasterize(params["vertices"], params["num_vertices"], origins, box_h, box_w).reshape(batch, 1, -1)
    where_to = destination_pixels(origins, box_h, box_w, width)[:, None, :].expand(-1, channels, -1)
    where_from = source_pixels(params, origins, box_h, box_w, height, width)[:, None, :].expand(-1, channels, -1)

    if source_images is None:
        patch = out.gather(2, where_from)
    else:
        patch = jitter(source_images.reshape(batch, channels, -1).gather(2, where_from))
    average = (patch * inside).sum(dim=2, keepdim=True) / inside.sum(dim=2, keepdim=True).clamp_min(1)
    flat = (params["flat_colour"].to(work_dtype) * scale + offset)[..., None]
    mode = params["fill_mode"][:, None, None]
    fill = torch.where(mode == 0, patch, torch.where(mode == 1, average, flat))

    out.scatter_(2, where_to, torch.where(inside, fill, out.gather(2, where_to)))
    masks = torch.zeros(batch, height * width, dtype=torch.bool, device=images.device)
    masks.scatter_(1, where_to[:, 0], inside[:, 0])
    out = out.reshape(batch, channels, height, width).to(images.dtype)
    return out, masks.reshape(batch, 1, height, width)
