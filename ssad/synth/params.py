"""`sample_params`: one batched call that draws every random parameter of every sample.

Every defect, big polygon or thin scar, is stored the same way: a convex polygon of up to
``config.max_vertices`` vertices (padded by repeating the last one), in pixel coordinates where
pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. Vertices go clockwise on screen
(y points down), so a point is inside when it lies on the right of every edge.

No Python loop over samples, no host-device sync, no data-dependent shape: the same operations are
dispatched for a batch of 4 and of 4096. Both shapes are built for every sample and the label
selects one, which costs a few small ``(B, 8, 2)`` tensors.
"""

from __future__ import annotations

import math

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
    device = torch.device(device)

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * draw_uniform(generator, batch, device=device)

    def choose(probs: tuple[float, ...]) -> Tensor:
        """(B,) int64 index drawn with the given probabilities (inverse CDF, Python-scalar cuts)."""
        u = draw_uniform(generator, batch, device=device)
        index = torch.zeros(batch, dtype=torch.int64, device=device)
        for cut in _cumulative(probs)[:-1]:
            index += u >= cut
        return index

    labels = choose(config.class_probs)
    is_polygon, is_scar = labels == 1, labels == 2

    # Both shapes for every sample; the label picks one.
    image_area = float(height * width)
    poly_area = uniform(*config.polygon_area)
    poly_aspect = _log_uniform_union(config.polygon_aspect, batch, generator, device)
    poly_local, poly_count = _polygon_vertices(poly_area * image_area, poly_aspect, config, generator)

    scar_area = uniform(*config.scar_area)
    scar_aspect = _log_uniform_union(config.scar_aspect, batch, generator, device)
    scar_angle = uniform(*config.scar_angle)
    scar_w, scar_h = _rectangle_sides(scar_area * image_area, scar_aspect)
    scar_local = _rotate(_rectangle_corners(scar_w, scar_h, config.max_vertices), scar_angle)

    def pick(poly: Tensor, scar: Tensor) -> Tensor:
        return torch.where(is_polygon, poly, torch.where(is_scar, scar, torch.zeros_like(poly)))

    local = torch.where(is_polygon[:, None, None], poly_local, torch.where(is_scar[:, None, None], scar_local, 0.0))
    num_vertices = torch.where(is_polygon, poly_count, torch.where(is_scar, 4, 0))

    # The region cut-paste copies has the defect's shape before rotation.
    scar_source = _rectangle_corners(scar_w, scar_h, config.max_vertices)
    source_local = torch.where(is_scar[:, None, None], scar_source, local)

    centre, mask_fallback = _sample_centres(local, height, width, object_masks, generator)
    # Source centres sit on pixel centres like the defect's, so cut-paste of an unrotated defect is
    # an exact integer shift.
    source, _ = _sample_centres(source_local, height, width, None, generator)

    params = {
        "labels": labels,
        "brightness": uniform(1 - config.brightness, 1 + config.brightness),
        "contrast": uniform(1 - config.contrast, 1 + config.contrast),
        "hue": uniform(-config.hue, config.hue),
        "area_ratio": pick(poly_area, scar_area),
        "aspect_ratio": pick(poly_aspect, scar_aspect),
        "angle": torch.where(is_scar, scar_angle, 0.0),
        "centre": centre,
        "source": source,
        "vertices": local + centre[:, None, :],
        "num_vertices": num_vertices,
        "fill_mode": choose(config.fill_probs),
        "flat_colour": draw_uniform(generator, batch, channels, device=device),
        "mask_fallback": mask_fallback,
    }
    if config.family_probs[0] < 1:  # drawn last, so the cut-paste draws match runs without families
        params.update(_family_params(params, config, height, width, object_masks, generator, choose, uniform))
    return params


def _family_params(
    params: dict[str, Tensor],
    config: SynthConfig,
    height: int,
    width: int,
    object_masks: Tensor | None,
    generator: torch.Generator | SampleStreams | None,
    choose,
    uniform,
) -> dict[str, Tensor]:
    """Each big defect's family and the parameters of the Perlin and Poisson families (drawn for
    every sample, used by those of its family): see `sample_params`."""
    labels = params["labels"]
    batch, device = labels.shape[0], labels.device
    family = torch.where(labels == 1, choose(config.family_probs), 0)
    other = family > 0
    out: dict[str, Tensor] = {
        "family": family,
        "num_vertices": torch.where(other, 0, params["num_vertices"]),  # no polygon for them
    }
    if config.pretext == "families":
        out["labels"] = torch.where(family == 1, 3, torch.where(family == 2, 4, labels))

    if config.family_probs[1] > 0:
        low, high = config.perlin_scale
        side, grid = 2**high, config.perlin_tiles
        exponent = low + (draw_uniform(generator, batch, 2, device=device) * (high - low + 1)).floor()
        perlin = {
            "perlin_gradients": draw_uniform(generator, batch, 2, side, side, device=device) * (2 * math.pi),
            "perlin_cells": (2 ** exponent.clamp_max(high)).long(),
            "perlin_angle": uniform(0.0, 360.0),
            "perlin_threshold": uniform(*config.perlin_threshold),
            "perlin_combine": choose(config.perlin_combine_probs),
            "perlin_beta": uniform(*config.perlin_beta),
            "perlin_fill": choose(config.perlin_fill_probs),
            "perlin_tiles": draw_uniform(generator, batch, grid * grid, device=device).argsort(dim=1),
        }
        perlin["perlin_mask"] = perlin_masks(perlin, height, width, config.perlin_min_area, object_masks)
        out.update(perlin)

    if config.family_probs[2] > 0:
        short, long = poisson_box(config.poisson_size, config.poisson_aspect, height, width)
        side = uniform(*config.poisson_size) * math.sqrt(height * width)
        aspect = _log_uniform_union((config.poisson_aspect,), batch, generator, device)
        scale = _log_uniform_union((config.poisson_scale,), batch, generator, device)
        drawn = torch.stack((side * aspect.sqrt(), side / aspect.sqrt()), dim=-1)  # (B, 2) width, height
        # A tall patch's box stands on its short side (`box_on_image`); the rectangle stays off
        # the box's border, which the solve keeps fixed.
        _, extent = box_on_image(drawn, short, long)
        patch_size = drawn.clamp_min(2).minimum(extent - 2)
        box = _rectangle_corners(extent[:, 0] - 1.0, extent[:, 1] - 1.0, 4)
        centre, _ = _sample_centres(box, height, width, object_masks, generator)
        patch_w, patch_h = patch_size.unbind(dim=-1)
        source, _ = _sample_centres(_rectangle_corners(patch_w / scale, patch_h / scale, 4), height, width, None,
                                    generator)
        out.update(poisson_size=patch_size, poisson_centre=centre,
                   poisson_source=source, poisson_scale=scale)
    return out


# --- shapes -------------------------------------------------------------------------------------


def _cumulative(probs: tuple[float, ...]) -> list[float]:
    return [sum(probs[: i + 1]) for i in range(len(probs))]


def _log_uniform_union(
    intervals: tuple[Interval, ...], batch: int, generator: torch.Generator | SampleStreams | None, device: torch.device
) -> Tensor:
    """(B,) values: an interval picked with equal probability, then log-uniform inside it."""
    pick = draw_uniform(generator, batch, device=device) * len(intervals)
    u = draw_uniform(generator, batch, device=device)
    value = torch.zeros(batch, device=device)
    for i, (low, high) in enumerate(intervals):
        inside = math.log(low) + (math.log(high) - math.log(low)) * u
        value = torch.where(pick.floor() == i, inside.exp(), value)
    return value


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


def _polygon_vertices(
    area: Tensor, aspect: Tensor, config: SynthConfig, generator: torch.Generator | SampleStreams | None
) -> tuple[Tensor, Tensor]:
    """Convex polygons with 1 or 2 points on each side of a centred rectangle.

    Points are drawn uniformly along each side and visited side by side, clockwise; points on
    the boundary of a convex region taken in cyclic order always form a convex polygon.
    Returns vertices (B, V, 2) padded by repeating the last one, and their count (B,) int64.
    """
    batch, device = area.shape[0], area.device
    low, high = config.polygon_points_per_side
    w, h = _rectangle_sides(area, aspect)

    count = low + (draw_uniform(generator, batch, 4, device=device) * (high - low + 1)).floor().long()
    slot = torch.arange(high, device=device)
    used = slot < count[..., None]  # (B, 4, high)
    # Unused slots get t = 2 so that sorting keeps the used points first, in order along the side.
    t = draw_uniform(generator, batch, 4, high, device=device).masked_fill(~used, 2.0)
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
    local: Tensor,
    height: int,
    width: int,
    object_masks: Tensor | None,
    generator: torch.Generator | SampleStreams | None,
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
    u = draw_uniform(generator, batch, device=device)

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
