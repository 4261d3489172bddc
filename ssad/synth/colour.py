"""Colour jitter as one affine map per sample: ``y = M x + b``, applied in a single pass.

Brightness scales, contrast scales about mid-grey (0.5, as GPU colour-twist operators do, so it
needs no per-image statistics), hue rotates colours about the grey axis (Rodrigues' formula).
The composite ``brightness * (contrast * (R x - 0.5) + 0.5)`` is affine; the caller clamps once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["colour_matrix", "apply_colour"]


def colour_matrix(params: dict[str, Tensor], channels: int) -> tuple[Tensor, Tensor]:
    """The per-sample affine colour map of ``params`` for images in [0, 1].

    Returns ``matrix`` (B, C, C) and ``bias`` (B, C), float32. With one channel hue has no
    meaning and only brightness and contrast act.
    """
    brightness, contrast = params["brightness"], params["contrast"]
    gain = (brightness * contrast)[:, None, None]
    bias = (brightness * (1 - contrast) * 0.5)[:, None].expand(-1, channels)
    if channels == 1:
        return gain, bias
    eye = torch.eye(3, device=gain.device)
    cycle = eye.roll(1, dims=0)
    cross = (cycle - cycle.T) / math.sqrt(3)  # k x ., with k the unit grey axis
    grey = torch.full((3, 3), 1 / 3, device=gain.device)  # k k^T
    theta = (2 * math.pi * params["hue"])[:, None, None]
    rotation = theta.cos() * eye + theta.sin() * cross + (1 - theta.cos()) * grey
    return gain * rotation, bias


def apply_colour(pixels: Tensor, matrix: Tensor, bias: Tensor, out: Tensor | None = None) -> Tensor:
    """``matrix @ pixels + bias`` for pixels (B, C, N) float; one batched multiply-add, written
    into ``out`` (B, C, N) of the same dtype when given."""
    return torch.baddbmm(bias[..., None], matrix, pixels, out=out)
