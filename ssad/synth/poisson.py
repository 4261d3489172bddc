"""The Poisson-blended patch family (NSA style), batched: a patch of another image, resampled,
pasted at a place inside the object and blended in the gradient domain, so no seam gives it away.

Every sample works in a compositing box of one fixed size (`poisson_box`) centred on its patch.
Inside the box the blended image ``f`` keeps the patch's gradients inside the patch rectangle and
the image's own gradients elsewhere, and equals the image on the box's border: the discrete
Poisson equation with Dirichlet boundary. For the difference ``d = f - image`` it reads

    sum over the 4 neighbours q of p:  d_p - d_q = sum over neighbours q inside the rectangle with p:  e_p - e_q

with ``e = patch - image``, and ``d = 0`` on the border. The box is a rectangle for every sample,
so one exact solve in the sine basis (a DST-I, here as two matrix products per side) serves the
whole batch: no iterations, no Python loop over samples, no host sync.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["poisson_box", "poisson_solve", "poisson_blend"]


def poisson_box(size: tuple[float, float], aspect: tuple[float, float], height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the compositing box: the largest patch of ``size`` (fractions of the
    image side) and ``aspect`` (width / height) with a margin of a quarter of its side on every
    side (the seam's correction spreads there), and at most the image."""
    side = size[1] * math.sqrt(height * width)
    patch_h, patch_w = side / math.sqrt(aspect[0]), side * math.sqrt(aspect[1])
    return min(height, math.ceil(patch_h * 1.5) + 2), min(width, math.ceil(patch_w * 1.5) + 2)


def poisson_solve(rhs: Tensor) -> Tensor:
    """Solve ``4 d_p - sum of d's 4 neighbours = rhs_p`` on (N, n, m) interiors with ``d = 0``
    outside them, exactly, in the sine basis (DST-I along each side)."""
    n, m = rhs.shape[-2:]
    rows, cols = _sine_basis(n, rhs), _sine_basis(m, rhs)
    j = torch.arange(1, n + 1, device=rhs.device, dtype=rhs.dtype)
    k = torch.arange(1, m + 1, device=rhs.device, dtype=rhs.dtype)
    eigen = 4 - 2 * torch.cos(math.pi * j / (n + 1))[:, None] - 2 * torch.cos(math.pi * k / (m + 1))[None, :]
    spectrum = rows @ rhs @ cols / eigen
    return (rows @ spectrum @ cols) * (4 / ((n + 1) * (m + 1)))


def poisson_blend(target: Tensor, patch: Tensor, inside: Tensor) -> tuple[Tensor, Tensor]:
    """Blend ``patch`` into ``target`` in the gradient domain.

    Args: target, patch (B, C, h, w) float: the compositing boxes of the image and of the
    resampled patch; inside (B, 1, h, w) bool: the patch rectangle, off the box's border.

    Returns the blended boxes (B, C, h, w) float (not clamped) and the soft mask (B, 1, h, w) in
    [0, 1]: how much each pixel changed, relative to the sample's largest change.
    """
    inside = inside.to(target.dtype)
    e = (patch - target) * inside
    rhs = torch.zeros_like(e)
    for dim in (2, 3):  # every edge p-q with both ends inside the rectangle, in both directions
        both = inside.narrow(dim, 1, inside.shape[dim] - 1) * inside.narrow(dim, 0, inside.shape[dim] - 1)
        step = (e.narrow(dim, 1, e.shape[dim] - 1) - e.narrow(dim, 0, e.shape[dim] - 1)) * both
        rhs.narrow(dim, 1, rhs.shape[dim] - 1).add_(step)
        rhs.narrow(dim, 0, rhs.shape[dim] - 1).sub_(step)
    batch, channels, h, w = e.shape
    d = F.pad(poisson_solve(rhs[:, :, 1:-1, 1:-1].reshape(batch * channels, h - 2, w - 2)), (1, 1, 1, 1))
    d = d.reshape(batch, channels, h, w)
    change = d.abs().amax(dim=1, keepdim=True)
    soft = change / change.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return target + d, soft


def _sine_basis(n: int, like: Tensor) -> Tensor:
    """(n, n) DST-I matrix sin(pi j k / (n + 1)), symmetric; its square is (n + 1) / 2 times I."""
    j = torch.arange(1, n + 1, device=like.device, dtype=like.dtype)
    return torch.sin(math.pi * j[:, None] * j[None, :] / (n + 1))
