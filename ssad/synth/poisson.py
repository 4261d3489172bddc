"""The Poisson-blended patch family (NSA style), batched: a patch of another image, resampled,
pasted at a place inside the object and blended in the gradient domain, so no seam gives it away.

Every sample works in a compositing box of one fixed size (`poisson_box`) centred on its patch,
its long side along the patch's (a tall patch's box is a wide one's transpose: the solve does
not care, and no box needs the longest side twice).
Inside the box the blended image ``f`` keeps the patch's gradients inside the patch rectangle and
the image's own gradients elsewhere, and equals the image on the box's border: the discrete
Poisson equation with Dirichlet boundary. For the difference ``d = f - image`` it reads

    sum over the 4 neighbours q of p:  d_p - d_q = sum over neighbours q inside the rectangle with p:  e_p - e_q

with ``e = patch - image``, and ``d = 0`` on the border. The box is a rectangle for every sample,
so one exact solve in the sine basis (a DST-I, here as two matrix products per side) serves the
whole batch: no iterations, no Python loop over samples, no host sync.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["poisson_box", "box_on_image", "poisson_solve", "poisson_blend", "poisson_change", "largest_change"]


def poisson_box(size: tuple[float, float], aspect: tuple[float, float], height: int, width: int) -> tuple[int, int]:
    """(short, long) sides of the compositing box: the largest patch of ``size`` (fractions of
    the image side) and ``aspect`` (width / height), its long side along the box's long side, with
    a margin of a quarter of its side on every side (the seam's correction spreads there), and at
    most the image's shorter side. A wide patch's box has ``short`` rows, a tall one's ``short``
    columns: turning tall boxes spares the solve the square of the longest side."""
    side = size[1] * math.sqrt(height * width)
    elongation = [max(a, 1 / a) for a in aspect]  # long side / short side, at the interval's ends
    least = 1.0 if aspect[0] <= 1 <= aspect[1] else min(elongation)
    long_side, short_side = side * math.sqrt(max(elongation)), side / math.sqrt(least)
    longest = min(height, width, math.ceil(long_side * 1.5) + 2)
    return min(longest, math.ceil(short_side * 1.5) + 2), longest


def box_on_image(patch_size: Tensor, short: int, long: int) -> tuple[Tensor, Tensor]:
    """Each sample's box as it lies on the image, from its patch's (width, height) ``patch_size``
    (B, 2): whether the box is turned (B,) bool (the patch is taller than wide), and its (x, y)
    extent (B, 2) int64 in pixels (``long`` along the patch's longer side)."""
    tall = patch_size[:, 1] > patch_size[:, 0]
    return tall, torch.stack((torch.where(tall, short, long), torch.where(tall, long, short)), dim=1)


def poisson_solve(rhs: Tensor) -> Tensor:
    """Solve ``4 d_p - sum of d's 4 neighbours = rhs_p`` on (N, n, m) interiors with ``d = 0``
    outside them, exactly, in the sine basis (DST-I along each side)."""
    rows, cols, eigen = _sine_solver(*rhs.shape[-2:], rhs.device, rhs.dtype)
    return rows @ (rows @ rhs @ cols).div_(eigen) @ cols


@functools.lru_cache(maxsize=16)
def _sine_solver(n: int, m: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The DST-I bases (n, n) and (m, m) of an n x m interior and its Laplacian's eigenvalues
    (n, m), times (n + 1) (m + 1) / 4 (each basis squares to half its size plus one times the
    identity). They depend on the sizes alone: built once (outside any inference mode, so that
    they serve everywhere)."""
    with torch.inference_mode(False):
        j = torch.arange(1, n + 1, device=device, dtype=dtype)
        k = torch.arange(1, m + 1, device=device, dtype=dtype)
        eigen = 4 - 2 * torch.cos(math.pi * j / (n + 1))[:, None] - 2 * torch.cos(math.pi * k / (m + 1))[None, :]
        return _sine_basis(n, j), _sine_basis(m, k), eigen * ((n + 1) * (m + 1) / 4)


def poisson_blend(target: Tensor, patch: Tensor, inside: Tensor) -> tuple[Tensor, Tensor]:
    """Blend ``patch`` into ``target`` in the gradient domain.

    Args: target, patch (B, C, h, w) float: the compositing boxes of the image and of the
    resampled patch; inside (B, 1, h, w) bool: where the patch's gradients replace the target's
    (e.g. the patch rectangle), off the box's border.

    Returns the blended boxes (B, C, h, w) float (not clamped) and the soft mask (B, 1, h, w) in
    [0, 1]: how much each pixel changed, relative to the sample's largest change.
    """
    blended = target.clone()
    blended[..., 1:-1, 1:-1] += poisson_change(target, patch, inside)
    change = largest_change(blended, target)
    return blended, change / change.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def poisson_change(target: Tensor, patch: Tensor, inside: Tensor) -> Tensor:
    """(B, C, h - 2, w - 2): what `poisson_blend` adds to the box's interior (its border stays).
    A constant added to ``target`` or ``patch`` changes nothing (only gradients count)."""
    inside = inside.to(target.dtype)
    e = (patch - target).mul_(inside)

    # rhs_p = sum over the neighbours q of p with p and q inside of (e_p - e_q). e is 0 outside,
    # so it is (p's neighbours inside) * e_p - (e summed over all 4 neighbours, if p is inside).
    def neighbours(x: Tensor) -> Tensor:  # the sum of the 4 neighbours of each interior pixel
        total = x[..., :-2, 1:-1] + x[..., 2:, 1:-1]
        return total.add_(x[..., 1:-1, :-2]).add_(x[..., 1:-1, 2:])

    rhs = neighbours(e).mul_(-inside[..., 1:-1, 1:-1]).addcmul_(neighbours(inside), e[..., 1:-1, 1:-1])
    batch, channels, h, w = rhs.shape
    return poisson_solve(rhs.reshape(batch * channels, h, w)).reshape(batch, channels, h, w)


def largest_change(blended: Tensor, target: Tensor) -> Tensor:
    """(B, 1, h, w) the largest absolute change over the channels. (abs, then amax: torch's
    aminmax over a short channel dim is several times slower on the CPU, 1.5 against 0.06 ms
    for int16 boxes of a 128-px batch of 64.)"""
    return (blended - target).abs_().amax(dim=1, keepdim=True)


def _sine_basis(n: int, j: Tensor) -> Tensor:
    """(n, n) DST-I matrix sin(pi j k / (n + 1)) for ``j`` = 1..n, symmetric."""
    return torch.sin(math.pi * j[:, None] * j[None, :] / (n + 1))
