"""`sample_params`: one batched call that draws every random parameter of every sample.

Every defect, big polygon or thin scar, is stored the same way: a convex polygon of up to
``config.max_vertices`` vertices (padded by repeating the last one), in pixel coordinates where
pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. Vertices go clockwise on screen
(y points down), so a point is inside when it lies on the right of every edge.

No Python loop over samples, no host-device sync, no data-dependent shape: the same operations are
dispatched for a batch of 4 and of 4096. Both shapes are built for every sample and the label
selects one, which costs a few small ``(B, 8, 2)`` tensors.

The draws come in a fixed order (labels, shapes, centres, colour jitter, fill; then the other
families), so that a seed gives the same parameters whatever else changes: new draws go last.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .config import Interval, SynthConfig
from .perlin import perlin_masks
from .streams import SampleStreams, draw_uniform
from .poisson import box_on_image, poisson_box

__all__ = ["sample_params"]


def sample_params(
    shape: tuple[int, int, int, int] | torch.Size,
    config: SynthConfig,
    *,
    device: torch.device | str = "cpu",
    object_masks: Tensor | None = None,
    generator: torch.Generator | SampleStreams | None = None,
) -> dict[str, Tensor]:
    """Draw the parameters of a pretext batch of images of ``shape = (B, C, H, W)``.

    Args:
        object_masks: ``(B or 1, 1, H, W)`` bool; defect centres are drawn uniformly among its
            pixels (among all pixels when None). A sample whose mask has no pixel where its defect
            fits falls back to the whole image and says so in ``mask_fallback``.
        generator: a ``torch.Generator`` on ``device``, for reproducible draws; or
            `SampleStreams`, for draws that depend on each sample's index alone (not on the
            batch it is in).

    Returns a dict of per-sample tensors on ``device`` (float32 unless noted):
        labels (B,) int64 in {0, 1, 2}; brightness, contrast (B,) factors; hue (B,) turns;
        area_ratio, aspect_ratio (B,) of the defect's rectangle (0 for label 0);
        angle (B,) degrees, counter-clockwise on screen (0 unless label 2);
        centre, source (B, 2) x, y pixel coordinates of the defect and of the region cut-paste copies;
        vertices (B, V, 2) x, y absolute pixel coordinates; num_vertices (B,) int64 (0 for label 0);
        fill_mode (B,) int64 index into FILL_MODES; flat_colour (B, C) in [0, 1];
        mask_fallback (B,) bool.
    With other families in ``config.family_probs`` (drawn after the above, so the cut-paste
    draws are those of a run without them), also: family (B,) int64 index into FAMILIES (0 for
    normals and scars; the other families' samples get num_vertices 0, and with pretext
    "families" labels 3 and 4); for Perlin: perlin_gradients (B, 2, L, L) lattice angles,
    perlin_cells (B, 2) int64, perlin_angle (B,) degrees, perlin_threshold, perlin_beta (B,),
    perlin_combine, perlin_fill (B,) int64, perlin_tiles (B, G*G) int64 permutation, perlin_mask
    (B, 1, H, W) bool (`ssad.synth.perlin`); for Poisson: poisson_size (B, 2) patch width and
    height in pixels, poisson_centre, poisson_source (B, 2) x, y, poisson_scale (B,)
    magnification (`ssad.synth.poisson`).
    """
    batch, channels, height, width = (int(s) for s in shape)
    if batch < 1:
        raise ValueError(f"empty batch (B = {batch}): pass at least one image.")
    draws = _Draws(generator, batch, torch.device(device))
    labels = draws.choose(config.class_probs)
    defects, mask_fallback = _draw_defects(draws, labels, config, height, width, object_masks)
    params = {
        "labels": labels,
        "brightness": draws.uniform(1 - config.brightness, 1 + config.brightness),
        "contrast": draws.uniform(1 - config.contrast, 1 + config.contrast),
        "hue": draws.uniform(-config.hue, config.hue),
        **defects,
        "fill_mode": draws.choose(config.fill_probs),
        "flat_colour": draws.raw(channels),
        "mask_fallback": mask_fallback,
    }
    if config.family_probs[0] < 1:  # drawn last, so the cut-paste draws match runs without families
        params.update(_draw_families(draws, params, config, height, width, object_masks))
    return params


class _Draws:
    """The random numbers of one `sample_params` call: (B, ...) float32 on ``device``, drawn in call
    order from ``generator`` (a ``torch.Generator``, torch's global one when None, or `SampleStreams`)."""

    def __init__(self, generator: torch.Generator | SampleStreams | None, batch: int, device: torch.device) -> None:
        self.generator, self.batch, self.device = generator, batch, device

    def raw(self, *shape: int) -> Tensor:
        """(B, *shape) uniform in [0, 1)."""
        return draw_uniform(self.generator, self.batch, *shape, device=self.device)

    def uniform(self, low: float, high: float) -> Tensor:
        """(B,) uniform in [low, high)."""
        return low + (high - low) * self.raw()

    def whole(self, low: int, high: int, *shape: int) -> Tensor:
        """(B, *shape) whole numbers in [low, high], equally likely (as floats)."""
        return low + (self.raw(*shape) * (high - low + 1)).floor()

    def choose(self, probs: tuple[float, ...]) -> Tensor:
        """(B,) int64 index drawn with the given probabilities (inverse CDF, Python-scalar cuts)."""
        u = self.raw()
        index = torch.zeros(self.batch, dtype=torch.int64, device=self.device)
        for cut in _cumulative(probs)[:-1]:
            index += u >= cut
        return index

    def log_uniform(self, intervals: tuple[Interval, ...]) -> Tensor:
        """(B,) values: an interval picked with equal probability, then log-uniform inside it."""
        pick = self.raw() * len(intervals)
        u = self.raw()
        value = torch.zeros(self.batch, device=self.device)
        for i, (low, high) in enumerate(intervals):
            inside = math.log(low) + (math.log(high) - math.log(low)) * u
            value = torch.where(pick.floor() == i, inside.exp(), value)
        return value


class _Polygons(NamedTuple):
    """A big polygon for every sample: its rectangle's ``area`` (fraction of the image) and
    ``aspect`` (width / height), (B,); its vertices around the centre, ``local`` (B, V, 2), and
    how many are used, ``count`` (B,) int64."""

    area: Tensor
    aspect: Tensor
    local: Tensor
    count: Tensor


class _Scars(NamedTuple):
    """A scar for every sample: its rectangle's ``area`` and ``aspect`` and its rotation ``angle``
    (degrees), (B,); its corners around the centre, ``local`` (rotated) and ``unrotated`` (B, V, 2)."""

    area: Tensor
    aspect: Tensor
    angle: Tensor
    local: Tensor
    unrotated: Tensor


def _draw_polygons(draws: _Draws, config: SynthConfig, image_area: float) -> _Polygons:
    """A big polygon for every sample, on images of ``image_area`` pixels."""
    area = draws.uniform(*config.polygon_area)
    aspect = draws.log_uniform(config.polygon_aspect)
    local, count = _polygon_vertices(draws, area * image_area, aspect, config)
    return _Polygons(area, aspect, local, count)


def _draw_scars(draws: _Draws, config: SynthConfig, image_area: float) -> _Scars:
    """A scar for every sample, on images of ``image_area`` pixels."""
    area = draws.uniform(*config.scar_area)
    aspect = draws.log_uniform(config.scar_aspect)
    angle = draws.uniform(*config.scar_angle)
    corners = _rectangle_corners(*_rectangle_sides(area * image_area, aspect), config.max_vertices)
    return _Scars(area, aspect, angle, _rotate(corners, angle), corners)


def _draw_defects(
    draws: _Draws, labels: Tensor, config: SynthConfig, height: int, width: int, object_masks: Tensor | None
) -> tuple[dict[str, Tensor], Tensor]:
    """Each sample's defect as its label asks (a polygon, a scar, none) and where it goes: the
    `sample_params` entries area_ratio, aspect_ratio, angle, centre, source, vertices and
    num_vertices, and mask_fallback (B,) bool. Both shapes are drawn for every sample."""
    image_area = float(height * width)
    polygons, scars = _draw_polygons(draws, config, image_area), _draw_scars(draws, config, image_area)
    is_polygon, is_scar = labels == 1, labels == 2
    local = _by_label(is_polygon, is_scar, polygons.local, scars.local)
    # The region cut-paste copies has the defect's shape before rotation.
    source_local = torch.where(is_scar[:, None, None], scars.unrotated, local)
    centre, mask_fallback = _sample_centres(draws, local, height, width, object_masks)
    # Source centres sit on pixel centres like the defect's, so cut-paste of an unrotated defect is
    # an exact integer shift.
    source, _ = _sample_centres(draws, source_local, height, width, None)
    defects = {
        "area_ratio": _by_label(is_polygon, is_scar, polygons.area, scars.area),
        "aspect_ratio": _by_label(is_polygon, is_scar, polygons.aspect, scars.aspect),
        "angle": torch.where(is_scar, scars.angle, 0.0),
        "centre": centre,
        "source": source,
        "vertices": local + centre[:, None, :],
        "num_vertices": torch.where(is_polygon, polygons.count, torch.where(is_scar, 4, 0)),
    }
    return defects, mask_fallback


def _by_label(is_polygon: Tensor, is_scar: Tensor, polygon: Tensor, scar: Tensor) -> Tensor:
    """(B, ...) per sample the ``polygon`` value where ``is_polygon`` (B,) bool, the ``scar``
    value where ``is_scar``, else 0."""
    index = (slice(None),) + (None,) * (polygon.dim() - 1)
    return torch.where(is_polygon[index], polygon, torch.where(is_scar[index], scar, 0.0))


def _draw_perlin(
    draws: _Draws, config: SynthConfig, height: int, width: int, object_masks: Tensor | None
) -> dict[str, Tensor]:
    """The Perlin family's entries of `sample_params`, its masks included."""
    low, high = config.perlin_scale
    side, grid = 2**high, config.perlin_tiles
    exponent = draws.whole(low, high, 2)
    perlin = {
        "perlin_gradients": draws.raw(2, side, side) * (2 * math.pi),
        "perlin_cells": (2 ** exponent.clamp_max(high)).long(),
        "perlin_angle": draws.uniform(0.0, 360.0),
        "perlin_threshold": draws.uniform(*config.perlin_threshold),
        "perlin_combine": draws.choose(config.perlin_combine_probs),
        "perlin_beta": draws.uniform(*config.perlin_beta),
        "perlin_fill": draws.choose(config.perlin_fill_probs),
        "perlin_tiles": draws.raw(grid * grid).argsort(dim=1),
    }
    perlin["perlin_mask"] = perlin_masks(perlin, height, width, config.perlin_min_area, object_masks)
    return perlin


def _draw_poisson(
    draws: _Draws, config: SynthConfig, height: int, width: int, object_masks: Tensor | None
) -> dict[str, Tensor]:
    """The Poisson family's entries of `sample_params`: each patch's size, where it goes, where
    its source lies and how much it is magnified."""
    short, long = poisson_box(config.poisson_size, config.poisson_aspect, height, width)
    side = draws.uniform(*config.poisson_size) * math.sqrt(height * width)
    aspect = draws.log_uniform((config.poisson_aspect,))
    scale = draws.log_uniform((config.poisson_scale,))
    drawn = torch.stack((side * aspect.sqrt(), side / aspect.sqrt()), dim=-1)  # (B, 2) width, height
    # A tall patch's box stands on its short side (`box_on_image`); the rectangle stays off
    # the box's border, which the solve keeps fixed.
    _, extent = box_on_image(drawn, short, long)
    patch_size = drawn.clamp_min(2).minimum(extent - 2)
    box = _rectangle_corners(extent[:, 0] - 1.0, extent[:, 1] - 1.0, 4)
    centre, _ = _sample_centres(draws, box, height, width, object_masks)
    patch_w, patch_h = patch_size.unbind(dim=-1)
    source, _ = _sample_centres(draws, _rectangle_corners(patch_w / scale, patch_h / scale, 4), height, width, None)
    return {"poisson_size": patch_size, "poisson_centre": centre, "poisson_source": source, "poisson_scale": scale}


def _draw_families(
    draws: _Draws, params: dict[str, Tensor], config: SynthConfig, height: int, width: int,
    object_masks: Tensor | None,
) -> dict[str, Tensor]:
    """Each big defect's family and the parameters of the Perlin and Poisson families (drawn for
    every sample, used by those of its family): see `sample_params`."""
    labels = params["labels"]
    family = torch.where(labels == 1, draws.choose(config.family_probs), 0)
    other = family > 0
    out: dict[str, Tensor] = {
        "family": family,
        "num_vertices": torch.where(other, 0, params["num_vertices"]),  # no polygon for them
    }
    if config.pretext == "families":
        out["labels"] = torch.where(family == 1, 3, torch.where(family == 2, 4, labels))
    if config.family_probs[1] > 0:
        out.update(_draw_perlin(draws, config, height, width, object_masks))
    if config.family_probs[2] > 0:
        out.update(_draw_poisson(draws, config, height, width, object_masks))
    return out


# --- shapes -------------------------------------------------------------------------------------


def _cumulative(probs: tuple[float, ...]) -> list[float]:
    return [sum(probs[: i + 1]) for i in range(len(probs))]


def _rectangle_sides(area: Tensor, aspect: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height (pixels) of a rectangle of the given area and width / height ratio."""
    return (area * aspect).sqrt(), (area / aspect).sqrt()


def _rectangle_corners(w: Tensor, h: Tensor, num_slots: int) -> Tensor:
    """(B, num_slots, 2) corners of a centred w x h rectangle, clockwise on screen from top-left,
    padded by repeating the last corner."""
    sx, sy = _corner_signs(w.device)
    slot = torch.arange(num_slots, device=w.device).clamp_max(3)
    return torch.stack((sx[slot] * w[:, None], sy[slot] * h[:, None]), dim=-1) / 2


def _corner_signs(device: torch.device) -> tuple[Tensor, Tensor]:
    """x and y signs of the corners top-left, top-right, bottom-right, bottom-left (y down).

    Built on the device from ``arange`` so no host-to-device copy happens in the hot path.
    """
    k = torch.arange(4, device=device)
    sx = torch.where((k == 1) | (k == 2), 1.0, -1.0)
    sy = torch.where(k >= 2, 1.0, -1.0)
    return sx, sy


def _polygon_vertices(draws: _Draws, area: Tensor, aspect: Tensor, config: SynthConfig) -> tuple[Tensor, Tensor]:
    """Convex polygons with 1 or 2 points on each side of a centred rectangle.

    Points are drawn uniformly along each side and visited side by side, clockwise; points on
    the boundary of a convex region taken in cyclic order always form a convex polygon.
    Returns vertices (B, V, 2) padded by repeating the last one, and their count (B,) int64.
    """
    batch, device = area.shape[0], area.device
    low, high = config.polygon_points_per_side
    w, h = _rectangle_sides(area, aspect)

    count = draws.whole(low, high, 4).long()
    slot = torch.arange(high, device=device)
    used = slot < count[..., None]  # (B, 4, high)
    # Unused slots get t = 2 so that sorting keeps the used points first, in order along the side.
    t = draws.raw(4, high).masked_fill(~used, 2.0)
    t = t.sort(dim=-1).values.clamp_max(1.0)

    # Side k runs from corner k to corner k + 1 (clockwise on screen).
    sx, sy = _corner_signs(device)
    start_x, start_y = sx[:, None], sy[:, None]
    end_x, end_y = sx.roll(-1)[:, None], sy.roll(-1)[:, None]
    x = (start_x + t * (end_x - start_x)) * w[:, None, None] / 2
    y = (start_y + t * (end_y - start_y)) * h[:, None, None] / 2
    points = torch.stack((x, y), dim=-1).reshape(batch, 4 * high, 2)

    # Move used points to the front (keeping their cyclic order), then pad with the last one.
    order = torch.arange(4 * high, device=device)
    key = torch.where(used.reshape(batch, -1), order, order + 4 * high)
    points = points.gather(1, key.argsort(dim=1)[..., None].expand(-1, -1, 2))
    num = count.sum(dim=1)
    pad = torch.minimum(order[None, :], num[:, None] - 1)
    return points.gather(1, pad[..., None].expand(-1, -1, 2)), num


def _rotate(points: Tensor, degrees: Tensor) -> Tensor:
    """Rotate (B, V, 2) points about the origin, counter-clockwise on screen (y down)."""
    theta = torch.deg2rad(degrees)[:, None]
    cos, sin = theta.cos(), theta.sin()
    x, y = points.unbind(-1)
    return torch.stack((x * cos + y * sin, y * cos - x * sin), dim=-1)


# --- where defects go ---------------------------------------------------------------------------


def _sample_centres(
    draws: _Draws, local: Tensor, height: int, width: int, object_masks: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Pick, per sample, a pixel centre such that the shape ``local`` (B, V, 2) placed there stays
    inside the image, uniformly among the pixels of ``object_masks`` (B or 1, 1, H, W) bool, or
    among all pixels when None.

    Exact and sync-free: the k-th admissible pixel is drawn, k uniform, and located by arithmetic
    in the admissible box, or, with a mask, from one cumulative sum of it. Returns centres (B, 2)
    float x, y and a (B,) bool flag for samples that fell back to the whole image because their
    mask had no admissible pixel.
    """
    batch, device = local.shape[0], local.device
    low, high = local.amin(dim=1), local.amax(dim=1)  # (B, 2)
    # Admissible pixel centres c + 0.5 with 0 <= c + 0.5 + low and c + 0.5 + high <= size.
    col_lo = (-low[:, 0] - 0.5).ceil().long()
    col_hi = (width - high[:, 0] - 0.5).floor().long()
    row_lo = (-low[:, 1] - 0.5).ceil().long()
    row_hi = (height - high[:, 1] - 0.5).floor().long()
    u = draws.raw()

    if object_masks is None:
        # A fifth of the operations of the masked path (the source of every cut-paste comes
        # here), and the same draw as that path with an all-ones mask.
        cols = col_hi - col_lo + 1
        k = _kth(u, cols * (row_hi - row_lo + 1))
        row = k // cols
        col, row = col_lo + (k - row * cols), row_lo + row
        return torch.stack((col, row), dim=-1).float() + 0.5, torch.zeros(batch, dtype=torch.bool, device=device)

    running = torch.nn.functional.pad(object_masks.reshape(-1, height, width).cumsum(-1, dtype=torch.int32), (1, 0))
    running = running.expand(batch, height, width + 1)  # (B, H, W + 1); running[..., c] = pixels left of c

    rows = torch.arange(height, device=device)
    row_ok = (rows >= row_lo[:, None]) & (rows <= row_hi[:, None])  # (B, H)
    left = running.gather(2, col_lo[:, None, None].expand(-1, height, 1)).squeeze(2)
    right = running.gather(2, (col_hi + 1)[:, None, None].expand(-1, height, 1)).squeeze(2)
    in_mask = (right - left) * row_ok
    mask_fallback = in_mask.sum(dim=1) == 0
    in_box = (col_hi - col_lo + 1)[:, None].int() * row_ok
    per_row = torch.where(mask_fallback[:, None], in_box, in_mask).long()  # (B, H)

    # Draw the k-th admissible pixel: its row from the running count of the rows, ...
    cumulative = per_row.cumsum(dim=1)
    k = _kth(u, cumulative[:, -1])
    row = torch.searchsorted(cumulative, k[:, None], right=True).squeeze(1)
    rank = k - (cumulative.gather(1, row[:, None]) - per_row.gather(1, row[:, None])).squeeze(1)

    # ... then the column of the (rank + 1)-th mask pixel right of col_lo in that row.
    row_running = running.gather(1, row[:, None, None].expand(-1, 1, width + 1)).squeeze(1)  # (B, W + 1)
    target = left.gather(1, row[:, None]).squeeze(1) + rank.int() + 1
    col_in_mask = torch.searchsorted(row_running, target[:, None].int()).squeeze(1) - 1
    col = torch.where(mask_fallback, col_lo + rank, col_in_mask)

    centre = torch.stack((col, row), dim=-1).float() + 0.5
    return centre, mask_fallback


def _kth(u: Tensor, total: Tensor) -> Tensor:
    """(B,) int64 index ``floor(u * total)`` in [0, total) for u (B,) uniform in [0, 1)."""
    return (u * total).long().clamp_max(total - 1)
