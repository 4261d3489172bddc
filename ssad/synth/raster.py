"""Batched rasterization of convex polygons inside per-sample boxes, and the cut-paste mapping.

Each defect is drawn inside a box of fixed size (the largest extent any defect of the config can
have), placed per sample around it; only those pixels are touched. A convex polygon crosses each
pixel row in one interval, so the mask is two comparisons per pixel against per-row bounds
computed from the edges: ``(B, V, rows)`` work instead of ``(B, V, rows, cols)``.

A pixel is inside when its centre is on the right of, or on, every edge (vertices clockwise on
screen, see `params`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import SynthConfig

__all__ = ["defect_extent", "compositing_box", "box_origins", "rasterize", "source_pixels", "destination_pixels"]


def defect_extent(config: SynthConfig, height: int, width: int) -> tuple[float, float]:
    """Largest (x, y) extent in pixels that any defect of ``config`` can have on an H x W image.

    Covers the polygon's rectangle and the scar at any rotation (bounded by its diagonal), so
    the compositing box of this size always holds the whole defect.
    """
    area = float(height * width)
    aspects = [a for interval in config.polygon_aspect for a in interval]
    poly_x = math.sqrt(config.polygon_area[1] * area * max(aspects))
    poly_y = math.sqrt(config.polygon_area[1] * area / min(aspects))
    scar_aspects = [a for interval in config.scar_aspect for a in interval]
    scar_diag = max(math.sqrt(config.scar_area[1] * area * (a + 1 / a)) for a in scar_aspects)
    return max(poly_x, scar_diag), max(poly_y, scar_diag)


def compositing_box(config: SynthConfig, height: int, width: int) -> tuple[int, int]:
    """(box_h, box_w): the per-sample box that holds any defect of ``config`` on H x W images.

    Raises ValueError when the images are too small for the configured defects: the largest
    defect must fit with a pixel to spare, and the thinnest must be at least one pixel thick.
    """
    extent_x, extent_y = defect_extent(config, height, width)
    box_w, box_h = math.ceil(extent_x) + 2, math.ceil(extent_y) + 2
    thinnest = math.sqrt(
        config.scar_area[0] * height * width * min(min(a, 1 / a) for iv in config.scar_aspect for a in iv)
    )
    if box_w > width or box_h > height or thinnest < 1:
        raise ValueError(
            f"images of {height}x{width} pixels are too small for the configured defects "
            f"(largest needs {box_h}x{box_w}, thinnest scar would be {thinnest:.2f} px thick); "
            "use larger images (64x64 or more with the default config) or smaller defect areas."
        )
    return box_h, box_w


def box_origins(vertices: Tensor, box_h: int, box_w: int, height: int, width: int) -> Tensor:
    """(B, 2) int64 top-left (x, y) of each sample's box: at the defect, kept inside the image."""
    low = vertices.amin(dim=1).floor().long()
    return torch.stack((low[:, 0].clamp(0, width - box_w), low[:, 1].clamp(0, height - box_h)), dim=-1)


def rasterize(vertices: Tensor, num_vertices: Tensor, origins: Tensor, box_h: int, box_w: int) -> Tensor:
    """(B, box_h, box_w) bool: box pixels whose centre lies in the sample's convex polygon.

    Args:
        vertices: (B, V, 2) float x, y, clockwise on screen, padded by repeating the last vertex
            (padding adds zero-length edges, which constrain nothing).
        num_vertices: (B,) int64; 0 draws nothing.
        origins: (B, 2) int64 box top-left x, y.
    """
    device = vertices.device
    vx, vy = vertices.unbind(-1)  # (B, V)
    ex, ey = (vertices.roll(-1, dims=1) - vertices).unbind(-1)
    py = origins[:, 1:].float() + torch.arange(box_h, device=device) + 0.5  # (B, box_h)
    px = origins[:, :1].float() + torch.arange(box_w, device=device) + 0.5  # (B, box_w)

    # Edge k keeps the points with  -ey * px + g >= 0,  g = ex * (py - vy) + ey * vx.
    g = ex[..., None] * (py[:, None, :] - vy[..., None]) + ey[..., None] * vx[..., None]  # (B, V, box_h)
    ey = ey[..., None].expand_as(g)
    bound = g / torch.where(ey == 0, 1.0, ey)
    lower = torch.where(ey < 0, bound, -math.inf).amax(dim=1)  # (B, box_h)
    upper = torch.where(ey > 0, bound, math.inf).amin(dim=1)
    row_ok = ((ey != 0) | (g >= 0)).all(dim=1) & (num_vertices > 0)[:, None]
    lower = torch.where(row_ok, lower, math.inf)
    return (px[:, None, :] >= lower[..., None]) & (px[:, None, :] <= upper[..., None])


def source_pixels(
    params: dict[str, Tensor], origins: Tensor, box_h: int, box_w: int, height: int, width: int
) -> Tensor:
    """(B, box_h * box_w) int64 flat index of the source pixel that cut-paste copies to each box
    pixel: the defect's pixel moved from ``centre`` to ``source`` and rotated back by ``angle``
    (nearest pixel, as PIL's default rotation). Unrotated defects are an exact integer shift.
    """
    device = origins.device
    theta = torch.deg2rad(params["angle"])[:, None, None]
    cos, sin = theta.cos(), theta.sin()
    cx, cy = params["centre"][:, :, None, None].unbind(1)
    sx, sy = params["source"][:, :, None, None].unbind(1)
    dx = origins[:, 0, None, None].float() + torch.arange(box_w, device=device) + 0.5 - cx  # (B, 1, box_w)
    dy = origins[:, 1, None, None].float() + torch.arange(box_h, device=device)[:, None] + 0.5 - cy  # (B, box_h, 1)
    # Floors and clamps in float (exact for image sides below 2**24), one cast at the end.
    qx = (sx + dx * cos - dy * sin).floor_().clamp_(0, width - 1)
    qy = (sy + dx * sin + dy * cos).floor_().clamp_(0, height - 1)
    return qy.mul_(width).add_(qx).long().reshape(origins.shape[0], -1)


def destination_pixels(origins: Tensor, box_h: int, box_w: int, width: int) -> Tensor:
    """(B, box_h * box_w) int64 flat index of each box pixel in the image."""
    device = origins.device
    rows = origins[:, 1, None, None] + torch.arange(box_h, device=device)[:, None]
    cols = origins[:, 0, None, None] + torch.arange(box_w, device=device)
    return (rows * width + cols).reshape(origins.shape[0], -1)
