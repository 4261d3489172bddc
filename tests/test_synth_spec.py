"""The sampled parameters obey the spec (DESIGN.md), checked over many thousand defects."""

from __future__ import annotations

import math

import pytest
import torch

from ssad.synth import SynthConfig, apply, sample_params

N = 12_000
SIZE = 128


@pytest.fixture(scope="module")
def params() -> dict[str, torch.Tensor]:
    return sample_params((N, 3, SIZE, SIZE), SynthConfig(), generator=torch.Generator().manual_seed(1))


def _within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_label_frequencies_match_probabilities(params):
    counts = params["labels"].bincount(minlength=3).tolist()
    assert all(_within_binomial(c, N, 1 / 3) for c in counts), counts


def test_skewed_class_and_fill_probabilities_are_honoured():
    config = SynthConfig(class_probs=(0.1, 0.6, 0.3), fill_probs=(0.2, 0.5, 0.3))
    p = sample_params((N, 3, SIZE, SIZE), config, generator=torch.Generator().manual_seed(2))
    for key, probs in (("labels", config.class_probs), ("fill_mode", config.fill_probs)):
        counts = p[key].bincount(minlength=3).tolist()
        assert all(_within_binomial(c, N, q) for c, q in zip(counts, probs)), (key, counts)


def test_default_fill_modes_match_probabilities(params):
    counts = params["fill_mode"].bincount(minlength=3).tolist()
    assert all(_within_binomial(c, N, q) for c, q in zip(counts, (0.7, 0.15, 0.15))), counts


def test_ranges_per_label(params):
    labels = params["labels"]
    area, aspect, angle, count = (params[k] for k in ("area_ratio", "aspect_ratio", "angle", "num_vertices"))
    poly, scar, normal = labels == 1, labels == 2, labels == 0

    assert ((area[poly] >= 0.05) & (area[poly] <= 0.1)).all()
    a = aspect[poly]
    assert (((a >= 0.3) & (a < 1)) | ((a > 1) & (a <= 3.3))).all()
    assert ((count[poly] >= 4) & (count[poly] <= 8)).all()
    assert set(count[poly].unique().tolist()) == {4, 5, 6, 7, 8}
    assert (angle[poly] == 0).all()

    assert ((area[scar] >= 0.005) & (area[scar] <= 0.01)).all()
    a = aspect[scar]
    assert (((a >= 0.05) & (a < 0.5)) | ((a > 2.5) & (a <= 3.3))).all()
    assert ((angle[scar] >= -45) & (angle[scar] <= 45)).all()
    assert angle[scar].abs().max() > 40  # the whole range is used
    assert (count[scar] == 4).all()

    assert (count[normal] == 0).all() and (area[normal] == 0).all()


def _shoelace(vertices: torch.Tensor) -> torch.Tensor:
    x, y = vertices.double().unbind(-1)
    return 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)


def test_every_defect_is_a_convex_clockwise_polygon_inside_the_image(params):
    v = params["vertices"].double()
    edge = v.roll(-1, 1) - v
    nxt = edge.roll(-1, 1)
    turn = edge[..., 0] * nxt[..., 1] - edge[..., 1] * nxt[..., 0]
    # Clockwise on screen (y down) means every turn is >= 0 (zero for padding and straight runs).
    defect = params["labels"] > 0
    assert (turn[defect] >= -1e-6 * SIZE * SIZE).all()
    assert (_shoelace(v[defect]) > 0).all()
    assert (v >= 0).all() and (v <= SIZE).all()


def test_polygon_lies_on_its_rectangle_and_scar_is_the_rotated_rectangle(params):
    labels = params["labels"]
    area = params["area_ratio"].double() * SIZE * SIZE
    w = (area * params["aspect_ratio"].double()).sqrt()
    h = (area / params["aspect_ratio"].double().clamp_min(1e-9)).sqrt()
    local = params["vertices"].double() - params["centre"].double()[:, None]

    poly = labels == 1
    x, y = local[poly].unbind(-1)
    wp, hp = w[poly, None], h[poly, None]
    on_vertical = (x.abs() - wp / 2).abs() < 1e-3
    on_horizontal = (y.abs() - hp / 2).abs() < 1e-3
    assert (on_vertical | on_horizontal).all()
    assert ((x.abs() <= wp / 2 + 1e-3) & (y.abs() <= hp / 2 + 1e-3)).all()

    scar = labels == 2
    theta = torch.deg2rad(params["angle"][scar].double())[:, None]
    x, y = local[scar].unbind(-1)
    # Undo the counter-clockwise (on screen) rotation: the corners are (+-w/2, +-h/2).
    ux, uy = x * theta.cos() - y * theta.sin(), x * theta.sin() + y * theta.cos()
    assert torch.allclose(ux.abs(), w[scar, None].expand_as(ux) / 2, atol=1e-3)
    assert torch.allclose(uy.abs(), h[scar, None].expand_as(uy) / 2, atol=1e-3)


def test_mask_area_matches_polygon_area():
    config = SynthConfig(class_probs=(0.0, 0.5, 0.5))
    size, batch = 256, 2_000
    images = torch.zeros(batch, 1, size, size, dtype=torch.uint8)
    p = sample_params(images.shape, config, generator=torch.Generator().manual_seed(3))
    _, masks = apply(images, p, config)
    pixels = masks.flatten(1).sum(1).double()
    area = _shoelace(p["vertices"])
    perimeter = (p["vertices"].roll(-1, 1) - p["vertices"]).double().norm(dim=-1).sum(1)
    # Pixel-centre sampling errs by at most about half the perimeter; on average far less.
    assert ((pixels - area).abs() <= perimeter / 2 + 2).all()
    assert ((pixels - area).abs().sum() / area.sum()) < 0.01
    assert (pixels > 0).all()


def test_centres_fall_inside_the_object_mask():
    size, batch = 128, 10_000
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ring = ((xx - 70) ** 2 + (yy - 60) ** 2).sqrt()
    mask = ((ring > 20) & (ring < 40))[None, None]
    p = sample_params((batch, 3, size, size), SynthConfig(), object_masks=mask,
                      generator=torch.Generator().manual_seed(4))
    col, row = (p["centre"] - 0.5).long().unbind(-1)
    assert (p["centre"] - 0.5 == (p["centre"] - 0.5).round()).all()  # centres sit on pixel centres
    defect = p["labels"] > 0
    assert not p["mask_fallback"].any()
    assert mask[0, 0, row[defect], col[defect]].all()
    # Uniform over the mask: both halves of the ring get their share.
    left = (col[defect] < 70).float().mean()
    assert 0.4 < left < 0.6


def test_centres_are_uniform_over_admissible_pixels():
    size, batch = 64, 20_000
    config = SynthConfig(class_probs=(0, 0, 1))
    p = sample_params((batch, 3, size, size), config, generator=torch.Generator().manual_seed(5))
    col = (p["centre"][:, 0] - 0.5).long()
    # Scars are small: the central columns are admissible for nearly all, so hits spread evenly.
    hist = col[(col >= 24) & (col < 40)].bincount(minlength=40)[24:40].double()
    assert hist.std() / hist.mean() < 0.1


def test_no_mask_draws_like_an_all_ones_mask():
    # Without object masks the centres come from box arithmetic instead of the mask's running
    # counts: the same random draw must land on the same pixel, near the image border too.
    shape, config = (4_000, 3, 96, 80), SynthConfig(class_probs=(0.2, 0.4, 0.4))
    ones = torch.ones(1, 1, 96, 80, dtype=torch.bool)
    free = sample_params(shape, config, generator=torch.Generator().manual_seed(8))
    masked = sample_params(shape, config, object_masks=ones, generator=torch.Generator().manual_seed(8))
    for name in ("centre", "source", "vertices", "mask_fallback"):
        assert torch.equal(free[name], masked[name]), name
    col, row = (free["centre"] - 0.5).long().unbind(-1)
    # Normal samples (no defect) may sit anywhere: together they reach all four borders.
    assert (int(col.min()), int(col.max()), int(row.min()), int(row.max())) == (0, 79, 0, 95)


def test_per_image_masks_and_empty_mask_fallback():
    size = 64
    masks = torch.zeros(3, 1, size, size, dtype=torch.bool)
    masks[0, :, 20:40, 20:40] = True
    masks[2, :, 30:34, 30:34] = True
    p = sample_params((3, 3, size, size), SynthConfig(class_probs=(0, 0, 1)), object_masks=masks,
                      generator=torch.Generator().manual_seed(6))
    assert p["mask_fallback"].tolist() == [False, True, False]
    col, row = (p["centre"] - 0.5).long().unbind(-1)
    assert masks[0, 0, row[0], col[0]] and masks[2, 0, row[2], col[2]]
