"""The Poisson-blended patch family (NSA style), batched: a patch of another image, resampled,
pasted at a place inside the object and blended in the gradient domain, so no seam gives it away.

Every sample works in a compositing box of one fixed size (`poisson_box`: the largest patch with
a one-pixel ring) centred on its patch, its long side along the patch's (a tall patch's box is a
wide one's transpose: the solve does not care, and no box needs the longest side twice).
Inside the box the blended image ``f`` keeps the patch's gradients inside the patch rectangle and
the image's own gradients elsewhere, and equals the image on the box's border: the discrete
Poisson equation with Dirichlet boundary. For the difference ``d = f - image`` it reads

    sum over the 4 neighbours q of p:  d_p - d_q = sum over neighbours q inside the rectangle with p:  e_p - e_q

with ``e = patch - image``, and ``d = 0`` on the border. The box is a rectangle for every sample,
so one exact solve in the sine basis (a DST-I, here as two matrix products per side) serves the
whole batch: no iterations, no Python loop over samples, no host sync. `poisson_change` takes any
``inside`` mask; `rectangle_change`, which the synthesizer uses, takes a rectangle and needs only
the products back from the sine basis, its right-hand side living on the rectangle's edges.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = [
    "poisson_box", "box_on_image", "poisson_solve", "poisson_blend", "poisson_change", "rectangle_change",
    "largest_change",
]


def poisson_box(size: tuple[float, float], aspect: tuple[float, float], height: int, width: int) -> tuple[int, int]:
    """(short, long) sides of the compositing box: the largest patch of ``size`` (fractions of
    the image side) and ``aspect`` (width / height), its long side along the box's long side,
    with a one-pixel ring around it (the boundary, which keeps the image's values), and at most
    the image's shorter side. As in Poisson image editing (and NSA), the largest patch is the
    solve's whole domain; a smaller one has the rest of the box around it, where the image keeps
    its own gradients. A wide patch's box has ``short`` rows, a tall one's ``short`` columns:
    turning tall boxes spares the solve the square of the longest side."""
    side = size[1] * math.sqrt(height * width)
    elongation = [max(a, 1 / a) for a in aspect]  # long side / short side, at the interval's ends
    least = 1.0 if aspect[0] <= 1 <= aspect[1] else min(elongation)
    long_side, short_side = side * math.sqrt(max(elongation)), side / math.sqrt(least)
    longest = min(height, width, math.ceil(long_side) + 2)
    return min(longest, math.ceil(short_side) + 2), longest


def box_on_image(patch_size: Tensor, short: int, long: int) -> tuple[Tensor, Tensor]:
    """Each sample's box as it lies on the image, from its patch's (width, height) ``patch_size``
    (B, 2): whether the box is turned (B,) bool (the patch is taller than wide), and its (x, y)
    extent (B, 2) int64 in pixels (``long`` along the patch's longer side)."""
    tall = patch_size[:, 1] > patch_size[:, 0]
    return tall, torch.stack((torch.where(tall, short, long), torch.where(tall, long, short)), dim=1)


def poisson_solve(rhs: Tensor) -> Tensor:
    """Solve ``4 d_p - sum of d's 4 neighbours = rhs_p`` on (N, n, m) interiors with ``d = 0``
    outside them, exactly, in the sine basis (DST-I along each side)."""
    rows, cols, _ = _sine_solver(*rhs.shape[-2:], rhs.device, rhs.dtype)
    return _from_sines(_sandwich(rows[1:-1], rhs, cols[1:-1]))


def _from_sines(spectrum: Tensor) -> Tensor:
    """The solution (..., n, m) whose right-hand side has the sine transform ``spectrum``
    (divided in place)."""
    rows, cols, eigen = _sine_solver(*spectrum.shape[-2:], spectrum.device, spectrum.dtype)
    return _sandwich(rows[1:-1], spectrum.div_(eigen), cols[1:-1])


def _sandwich(left: Tensor, x: Tensor, right: Tensor) -> Tensor:
    """``left @ x @ right`` for x (..., n, m) and matrices left (n, n), right (m, m), as two
    batched products of one problem each. (``x @ right`` alone would fold the batch into one tall
    product, which runs slower on the CPU.)"""
    batched = x.reshape(-1, *x.shape[-2:])
    count = batched.shape[0]
    out = torch.bmm(torch.bmm(left.expand(count, -1, -1), batched), right.expand(count, -1, -1))
    return out.reshape(x.shape)


@functools.lru_cache(maxsize=16)
def _sine_solver(n: int, m: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The DST-I bases of an n x m interior, over the whole box around it: (n + 2, n) and
    (m + 2, m), row k holding the sines of the box's row or column k (`_sine_basis`; rows 1..n
    are the symmetric DST-I matrix), and the Laplacian's eigenvalues (n, m), times (n + 1) (m +
    1) / 4 (each DST-I matrix squares to half its size plus one times the identity). They depend
    on the sizes alone: built once (outside any inference mode, so that they serve everywhere)."""
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


def rectangle_change(target: Tensor, patch: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """`poisson_change` where ``inside`` is a rectangle: ``rows`` (B, h) and ``cols`` (B, w) bool,
    each one run of True off the box's border (or ``rows`` all False: no change). The same
    result up to rounding, for half the matrix products.

    With ``e`` the difference inside the rectangle (0 outside), ``d = e + u``, where ``u`` solves
    the same equation with a source only along the rectangle's edges: minus ``e`` on its edge
    pixels (once per missing neighbour) and plus ``e`` on the pixels just outside them. Each edge's
    share of that source is an outer product (a column of sines times a row of them), so its sine
    transform is one product with an inner size of 4 instead of two full products.
    """
    batch, channels, h, w = target.shape
    sin_rows, sin_cols, _ = _sine_solver(h - 2, w - 2, target.device, target.dtype)
    e = (patch - target).mul_((rows[:, :, None] & cols[:, None, :])[:, None])

    def first_last(run: Tensor) -> tuple[Tensor, Tensor]:  # (B,) first and last index of each run
        first = run.byte().argmax(dim=1)
        last = run.shape[1] - 1 - run.flip(1).byte().argmax(dim=1)
        return first.clamp_(1, run.shape[1] - 2), last.clamp_(1, run.shape[1] - 2)  # empty: anywhere inside

    top, bottom = first_last(rows)
    left, right = first_last(cols)

    def line(dim: int, at: Tensor) -> Tensor:  # each sample's row (dim 2) or column (dim 3) ``at`` (B,) of e
        return e.gather(dim, at.view(batch, 1, 1, 1).expand(-1, channels, *((1, w) if dim == 2 else (h, 1))))

    # The edges' rows of e (B, C, 2, w) and columns, laid as rows (B, C, 2, h), and the sine
    # differences between each edge and its outer neighbour, (B, 2, h - 2) and (B, 2, w - 2).
    edge_rows = torch.cat((line(2, top), line(2, bottom)), dim=2)
    edge_cols = torch.cat((line(3, left).mT, line(3, right).mT), dim=2)
    steps_rows = torch.stack((sin_rows[top - 1] - sin_rows[top], sin_rows[bottom + 1] - sin_rows[bottom]), dim=1)
    steps_cols = torch.stack((sin_cols[left - 1] - sin_cols[left], sin_cols[right + 1] - sin_cols[right]), dim=1)
    # spectrum = sum over the 4 edges of (its sines along the rows) outer (its sines along the columns).
    row_terms = torch.cat((steps_rows[:, None].expand(-1, channels, -1, -1), edge_cols @ sin_rows), dim=2)
    col_terms = torch.cat((edge_rows @ sin_cols, steps_cols[:, None].expand(-1, channels, -1, -1)), dim=2)
    return _from_sines(row_terms.mT @ col_terms).add_(e[..., 1:-1, 1:-1])


def largest_change(blended: Tensor, target: Tensor) -> Tensor:
    """(B, 1, h, w) the largest absolute change over the channels. (abs, then amax: torch's
    aminmax over a short channel dim is several times slower on the CPU.)"""
    return (blended - target).abs_().amax(dim=1, keepdim=True)


def _sine_basis(n: int, j: Tensor) -> Tensor:
    """(n + 2, n) sin(pi k j / (n + 1)) for k = 0..n + 1 and ``j`` = 1..n: the DST-I matrix
    (symmetric) between two rows of exact zeros (the box's border, where the sines vanish)."""
    basis = torch.zeros(n + 2, n, dtype=j.dtype, device=j.device)
    basis[1:-1] = torch.sin(math.pi * j[:, None] * j[None, :] / (n + 1))
    return basis
