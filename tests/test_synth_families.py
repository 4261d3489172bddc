"""The Perlin and Poisson defect families: masks against their configuration, blends against their
definitions, the batched Poisson solve against a direct one, vectorization, replay, bad configs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import grid_sample

from ssad.synth import DefectSynthesizer, SynthConfig, apply, sample_params
from ssad.synth.perlin import perlin_noise, shuffle_tiles
from ssad.synth.poisson import poisson_blend, poisson_box, poisson_change, poisson_solve, rectangle_change

SIZE = 64
ONLY_BIG = (0.0, 1.0, 0.0)  # every sample gets a big defect
NO_JITTER = dict(brightness=0.0, contrast=0.0, hue=0.0)


def _images(batch: int, value: float | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if value is not None:
        return torch.full((batch, 3, SIZE, SIZE), value)
    low = torch.rand(batch, 3, SIZE // 8, SIZE // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def _perlin(**options) -> SynthConfig:
    return SynthConfig(class_probs=ONLY_BIG, family_probs=(0.0, 1.0, 0.0), **options)


def test_perlin_noise_is_per_sample_and_bounded():
    g = torch.Generator().manual_seed(0)
    gradients = torch.rand(6, 16, 16, generator=g) * 6.283
    cells = torch.tensor([1, 2, 4, 8, 16, 4])
    angle = torch.rand(6, generator=g) * 360
    noise = perlin_noise(gradients, cells, angle, 40, 30)
    assert noise.shape == (6, 40, 30) and noise.abs().max() <= 1.0
    # A sample's field depends on its own parameters only, whatever else is in the batch.
    alone = perlin_noise(gradients[2:3], cells[2:3], angle[2:3], 40, 30)
    torch.testing.assert_close(alone[0], noise[2], rtol=0, atol=1e-6)
    # Finer lattices vary faster: mean absolute difference between neighbours grows with the cells.
    roughness = (noise[:5, :, 1:] - noise[:5, :, :-1]).abs().mean(dim=(1, 2))
    assert (roughness[1:] > roughness[:-1]).all()


def test_perlin_noise_equals_the_textbook_formula():
    """Against Perlin's definition, written directly: each corner's gradient looked up with the
    lattice wrapped by a modulo, the four dot products faded together."""
    g = torch.Generator().manual_seed(1)
    gradients = torch.rand(5, 16, 16, generator=g, dtype=torch.float64) * 6.283
    cells, angle = torch.tensor([1, 2, 4, 8, 16]), torch.tensor([0.0, 30.0, 95.0, 181.0, 333.0])
    noise = perlin_noise(gradients.float(), cells, angle, 24, 20)
    y, x = torch.meshgrid((torch.arange(24, dtype=torch.float64) + 0.5) / 24 - 0.5,
                          (torch.arange(20, dtype=torch.float64) + 0.5) / 20 - 0.5, indexing="ij")
    for b in range(5):
        t, c = torch.deg2rad(angle[b].double()), int(cells[b])
        u, v = (x * t.cos() - y * t.sin()) * c, (x * t.sin() + y * t.cos()) * c
        fu, fv = u - u.floor(), v - v.floor()

        def dot(du: int, dv: int) -> torch.Tensor:
            a = gradients[b, ((v.floor() + dv) % c).long(), ((u.floor() + du) % c).long()]
            return a.cos() * (fu - du) + a.sin() * (fv - dv)

        fade = lambda s: 6 * s**5 - 15 * s**4 + 10 * s**3  # noqa: E731
        top = dot(0, 0) + fade(fu) * (dot(1, 0) - dot(0, 0))
        bottom = dot(0, 1) + fade(fu) * (dot(1, 1) - dot(0, 1))
        torch.testing.assert_close(noise[b].double(), top + fade(fv) * (bottom - top), rtol=0, atol=1e-5)


def test_perlin_mask_area_follows_the_threshold_and_stays_in_the_object():
    object_masks = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    object_masks[..., 8:56, 16:48] = True
    areas = []
    for threshold in [(0.0, 0.01), (0.2, 0.21), (0.4, 0.41)]:
        config = _perlin(perlin_threshold=threshold)
        p = sample_params((256, 3, SIZE, SIZE), config, object_masks=object_masks,
                          generator=torch.Generator().manual_seed(1))
        masks = p["perlin_mask"]
        assert not (masks & ~object_masks).any()  # gated by the object
        share = masks.float().sum(dim=(1, 2, 3)) / object_masks.sum()
        assert (share >= config.perlin_min_area - 1e-6).all()  # small masks redrawn, none empty
        areas.append(share.mean())
    assert areas[0] > areas[1] > areas[2]
    assert 0.3 < areas[0] < 0.7  # noise is symmetric about 0: a threshold of 0 keeps about half


def test_perlin_masks_are_never_empty_even_at_the_highest_threshold():
    """A threshold at the object's noisiest grid point can leave the resized field below it
    everywhere; that mask still gets a pixel, inside the object (here a disk on a 100 px image,
    whose noise grid of 64 points does not divide it)."""
    from ssad.synth.perlin import perlin_masks

    ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(100.0), indexing="ij")
    disk = (((ys - 60) ** 2 + (xs - 40) ** 2) < 30**2)[None, None]
    config = _perlin(perlin_threshold=(0.9, 1.0))  # above the noise's range: the lowered threshold decides
    p = sample_params((64, 3, 100, 100), config, object_masks=disk, generator=torch.Generator().manual_seed(4))
    masks = perlin_masks(p, 100, 100, min_area=1e-6, object_masks=disk)  # keeps 1 grid point
    area = masks.sum(dim=(1, 2, 3))
    assert (area > 0).all() and not (masks & ~disk).any()
    assert area.float().median() < 10  # about the one grid point's pixels


def test_perlin_with_an_empty_object_mask_goes_anywhere():
    p = sample_params((8, 3, SIZE, SIZE), _perlin(), object_masks=torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool),
                      generator=torch.Generator().manual_seed(0))
    assert (p["perlin_mask"].sum(dim=(1, 2, 3)) > 0).all()


def test_perlin_blend_is_beta_between_image_and_fill():
    images, sources = _images(32, 0.2), _images(32, 0.8)
    config = _perlin(perlin_fill_probs=(1.0, 0.0), **NO_JITTER)
    out = DefectSynthesizer(config)(images, source_images=sources, generator=torch.Generator().manual_seed(3))
    beta = out.params["perlin_beta"][:, None, None, None]
    expected = torch.where(out.masks, 0.2 + 0.6 * beta, torch.tensor(0.2)).expand_as(images)
    torch.testing.assert_close(out.images, expected, rtol=0, atol=1e-6)
    low, high = config.perlin_beta
    assert ((beta >= low) & (beta <= high)).all()


def test_perlin_blend_of_uint8_is_the_rounded_blend_with_beta_in_128ths():
    images = torch.full((32, 3, SIZE, SIZE), 50, dtype=torch.uint8)
    sources = torch.full((32, 3, SIZE, SIZE), 200, dtype=torch.uint8)
    config = _perlin(perlin_fill_probs=(1.0, 0.0), **NO_JITTER)
    out = DefectSynthesizer(config)(images, source_images=sources, generator=torch.Generator().manual_seed(3))
    beta = out.params["perlin_beta"][:, None, None, None]
    k = (beta * 128).round()
    exact = torch.where(out.masks, ((128 - k) * 50 + k * 200 + 64) // 128, 50.0).expand_as(images)
    assert torch.equal(out.images, exact.to(torch.uint8))  # integer arithmetic: exact
    float_blend = torch.where(out.masks, 50 + 150 * beta, 50.0)
    assert (out.images.float() - float_blend).abs().max() <= 1  # within a level of beta unrounded


def test_perlin_fill_without_a_source_bank_is_the_previous_image():
    values = torch.arange(8.0) * 30  # every image flat, each its own value
    images = values[:, None, None, None].expand(8, 3, SIZE, SIZE).to(torch.uint8)
    out = DefectSynthesizer(_perlin(perlin_fill_probs=(1.0, 0.0), **NO_JITTER))(
        images, generator=torch.Generator().manual_seed(1))
    k = (out.params["perlin_beta"] * 128).round()
    expected = ((128 - k) * values + k * values.roll(1) + 64) // 128
    inside = out.masks[:, 0]
    for b in range(8):
        assert (out.images[b][:, inside[b]] == expected[b]).all() and (out.images[b][:, ~inside[b]] == values[b]).all()


def test_shuffled_tiles_are_a_permutation_of_the_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    order = torch.stack([torch.arange(4).flip(0), torch.tensor([1, 0, 3, 2])])
    out = shuffle_tiles(images, order)
    assert torch.equal(out[0, :, :4, :4], images[0, :, 4:, 4:])  # tile 0 <- tile 3
    assert torch.equal(out[1, :, :4, 4:], images[1, :, :4, :4])  # tile 1 <- tile 0
    assert torch.equal(out.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)


def test_shuffled_tiles_leave_the_rows_and_columns_beyond_whole_tiles():
    images = torch.randint(0, 256, (3, 2, 11, 14), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    order = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    out = shuffle_tiles(images, order)
    for b in range(3):  # tiles of 3 x 4 pixels on a 3 x 3 grid: rows 9-10 and columns 12-13 stay
        for i, j in enumerate(order[b].tolist()):
            r, c, sr, sc = 3 * (i // 3), 4 * (i % 3), 3 * (j // 3), 4 * (j % 3)
            assert torch.equal(out[b, :, r : r + 3, c : c + 4], images[b, :, sr : sr + 3, sc : sc + 4])
    assert torch.equal(out[..., 9:, :], images[..., 9:, :]) and torch.equal(out[..., 12:], images[..., 12:])
    # Pixels move as whole words where sizes allow: a view starting mid-storage, or floats, move the same.
    bigger = torch.cat([images[:1], images])
    assert torch.equal(shuffle_tiles(bigger[1:], order), out)
    assert torch.equal(shuffle_tiles(images.double(), order), out.double())
    # Tiles (and the rows and columns beyond them) from another image of the batch.
    previous = torch.tensor([2, 0, 1])
    assert torch.equal(shuffle_tiles(images, order, previous), shuffle_tiles(images.roll(1, dims=0), order))


@pytest.mark.parametrize("family_probs", [(0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.4, 0.3, 0.3)])
def test_without_jitter_only_the_defects_change_pixels(family_probs):
    """With no colour jitter (its identity map skipped) and no cut-paste drawn (that work skipped
    too, where the config rules it out), every pixel outside a Perlin or cut-paste defect, and
    every pixel of a normal or a non-Poisson sample's box, keeps its value; the input is untouched."""
    images = (_images(24) * 255).round().to(torch.uint8)
    before = images.clone()
    config = SynthConfig(class_probs=(0.25, 0.75, 0.0), family_probs=family_probs, **NO_JITTER)
    out = DefectSynthesizer(config)(images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(images, before) and out.images.data_ptr() != images.data_ptr()
    family = out.params.get("family", torch.zeros(24, dtype=torch.long))
    smooth = (out.labels == 1) & (family == 2)  # Poisson: the solve's correction fades past its mask
    kept = ~out.masks & ~smooth[:, None, None, None]
    assert torch.equal(torch.where(kept, out.images, 0), torch.where(kept, images, 0))
    assert not out.masks[out.labels == 0].any()


def test_poisson_solve_equals_a_direct_solve():
    n, m = 6, 9
    rhs = torch.randn(3, n, m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    laplacian = torch.zeros(n * m, n * m, dtype=torch.float64)
    for i in range(n):
        for j in range(m):
            laplacian[i * m + j, i * m + j] = 4
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < n and 0 <= b < m:
                    laplacian[i * m + j, a * m + b] = -1
    direct = torch.linalg.solve(laplacian, rhs.reshape(3, -1).T).T.reshape(3, n, m)
    torch.testing.assert_close(poisson_solve(rhs), direct, rtol=0, atol=1e-10)


def test_rectangle_change_equals_the_general_solve():
    """The edge-source solve for rectangles against the dense right-hand side, on rectangles of
    every kind: large, next to the border, one pixel, one row, one column, empty."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(7, 3, 20, 27, dtype=torch.float64, generator=g)
    patch = torch.rand(7, 3, 20, 27, dtype=torch.float64, generator=g)
    rows = torch.zeros(7, 20, dtype=torch.bool)
    cols = torch.zeros(7, 27, dtype=torch.bool)
    for b, (r0, r1, c0, c1) in enumerate([(1, 18, 1, 25), (3, 9, 5, 20), (5, 5, 2, 2), (1, 1, 1, 25),
                                          (2, 17, 10, 10), (7, 12, 24, 25)]):
        rows[b, r0:r1 + 1], cols[b, c0:c1 + 1] = True, True  # sample 6 stays empty
    inside = (rows[:, :, None] & cols[:, None, :])[:, None]
    change = rectangle_change(target, patch, rows, cols)
    torch.testing.assert_close(change, poisson_change(target, patch, inside), rtol=0, atol=1e-12)
    largest = change.abs().amax(dim=(1, 2, 3))
    assert largest[[0, 1, 3, 4, 5]].min() > 0.1  # a single pixel (2) has no gradients to keep, nor has nothing (6)
    assert largest[[2, 6]].max() < 1e-12
    # float32, in uint8 units as the engine works: within a hundredth of a level.
    change32 = rectangle_change(target.float() * 255, patch.float() * 255, rows, cols)
    torch.testing.assert_close(change32, poisson_change(target, patch, inside).float() * 255, rtol=0, atol=1e-2)


def test_poisson_blend_keeps_the_patch_gradients_and_the_border():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=g)
    patch = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=g)
    inside = torch.zeros(2, 1, 20, 24, dtype=torch.bool)
    inside[..., 5:14, 6:17] = True
    blended, soft = poisson_blend(target, patch, inside)
    # The border is the target's; a patch that only shifts the target's brightness changes nothing.
    torch.testing.assert_close(blended[..., 0, :], target[..., 0, :])
    torch.testing.assert_close(poisson_blend(target, target + 0.3, inside)[0], target)
    # Inside the rectangle the blend has the patch's gradients, up to the solve's smooth correction:
    # much closer to them than the target's.
    grad = lambda x: x[..., 6:13, 7:16] - x[..., 6:13, 8:17]  # noqa: E731
    assert (grad(blended) - grad(patch)).abs().mean() < 0.3 * (grad(target) - grad(patch)).abs().mean()
    assert soft.shape == (2, 1, 20, 24) and soft.max() == 1 and soft.min() >= 0


def test_poisson_samples_change_only_their_box():
    images = _images(16)
    config = SynthConfig(class_probs=ONLY_BIG, family_probs=(0.0, 0.0, 1.0), **NO_JITTER)
    out = DefectSynthesizer(config)(images, generator=torch.Generator().manual_seed(5))
    change = (out.images - images).abs().amax(dim=1, keepdim=True)
    assert (out.masks.sum(dim=(1, 2, 3)) > 0).all()
    # The mask: every pixel changed by a tenth of the sample's largest change; outside, less.
    largest = change.amax(dim=(2, 3), keepdim=True)
    level = torch.maximum(0.1 * largest, torch.tensor(1 / 255))
    assert not (out.masks & (change < level - 1e-5)).any() and not (~out.masks & (change > level + 1e-5)).any()
    # Nothing changes farther from the patch centre than the box reaches.
    short, long = poisson_box(config.poisson_size, config.poisson_aspect, SIZE, SIZE)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    centre, (width, height) = out.params["poisson_centre"], out.params["poisson_size"].unbind(1)
    box_w, box_h = [torch.where(height > width, a, b)[:, None, None] for a, b in ((short, long), (long, short))]
    far = ((xs - centre[:, 0, None, None]).abs() > box_w / 2 + 1) \
        | ((ys - centre[:, 1, None, None]).abs() > box_h / 2 + 1)
    assert not (out.masks[:, 0] & far).any()


def test_the_largest_patch_is_its_whole_domain():
    """As in Poisson image editing, the box is the largest patch with a one-pixel ring that keeps
    the image's values: a patch of that size changes nothing outside its rectangle (give or take
    the pixel its size rounds to), however much the blend corrects inside."""
    assert poisson_box((0.3, 0.3), (1.0, 1.0), SIZE, SIZE) == (math.ceil(0.3 * SIZE) + 2,) * 2
    config = SynthConfig(class_probs=ONLY_BIG, family_probs=(0.0, 0.0, 1.0), poisson_size=(0.299, 0.3),
                         poisson_aspect=(0.999, 1.0), **NO_JITTER)
    images, sources = _images(16, seed=1), _images(16, seed=2)
    out = DefectSynthesizer(config)(images, source_images=sources, generator=torch.Generator().manual_seed(4))
    changed = (out.images - images).abs().amax(dim=1) > 1e-6  # (B, H, W)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    centre, half = out.params["poisson_centre"][:, :, None, None], out.params["poisson_size"][:, :, None, None] / 2
    beyond = ((xs - centre[:, 0]).abs() > half[:, 0] + 1) | ((ys - centre[:, 1]).abs() > half[:, 1] + 1)
    assert changed.flatten(1).sum(dim=1).min() > 0.5 * (0.3 * SIZE) ** 2
    assert not (changed & beyond).any()


@pytest.mark.parametrize("aspect", [(0.5, 0.55), (1.9, 2.0), (0.5, 2.0)])
def test_poisson_boxes_hold_tall_and_wide_patches(aspect):
    """A tall patch's box is the wide box turned: either way the whole rectangle is blended."""
    images = torch.full((16, 3, SIZE, SIZE), 0.5)
    sources = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # texture everywhere
    config = SynthConfig(class_probs=ONLY_BIG, family_probs=(0.0, 0.0, 1.0), poisson_size=(0.25, 0.3),
                         poisson_aspect=aspect, **NO_JITTER)
    out = DefectSynthesizer(config)(images, source_images=sources, generator=torch.Generator().manual_seed(2))
    width, height = out.params["poisson_size"].unbind(1)
    rows = out.masks.any(dim=3).sum(dim=(1, 2))  # rows and columns the defect reaches
    cols = out.masks.any(dim=2).sum(dim=(1, 2))
    assert (rows >= height.floor() - 1).all() and (cols >= width.floor() - 1).all()
    if aspect != (0.5, 2.0):
        assert ((height > width) == (aspect[1] < 1)).all()


def test_families_replay_and_labels():
    images = (_images(64) * 255).round().to(torch.uint8)
    config = SynthConfig(family_probs=(0.4, 0.3, 0.3), pretext="families")
    synth = DefectSynthesizer(config)
    first = synth(images, generator=torch.Generator().manual_seed(9))
    again = synth(images, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first.images, again.images) and torch.equal(first.masks, again.masks)
    replayed, masks = apply(images, first.params, config)
    assert torch.equal(replayed, first.images) and torch.equal(masks, first.masks)
    labels, family = first.labels, first.params["family"]
    assert set(labels.tolist()) == {0, 1, 2, 3, 4} and config.num_classes == 5
    assert torch.equal(labels == 3, family == 1) and torch.equal(labels == 4, family == 2)
    assert (first.masks[labels > 0].flatten(1).any(dim=1)).all()  # every defect marks pixels
    assert not first.masks[labels == 0].any()


def test_default_config_draws_no_family_parameters():
    """The spec's defaults are unchanged: the same draws as before families existed."""
    p = sample_params((8, 3, SIZE, SIZE), SynthConfig(), generator=torch.Generator().manual_seed(0))
    assert "family" not in p and not any(k.startswith(("perlin", "poisson")) for k in p)
    with_families = sample_params((8, 3, SIZE, SIZE), SynthConfig(family_probs=(0.5, 0.25, 0.25)),
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(p["centre"], with_families["centre"]) and torch.equal(p["labels"], with_families["labels"])


def test_poisson_sources_of_large_images_are_sampled_in_slices(monkeypatch):
    """Above 128 x 128 pixels the sources' float copy is made a slice of the batch at a time:
    the same patches as from one copy (each sample's bilinear reads are its own)."""
    import ssad.synth.functional as functional

    size = 144
    images = torch.randint(0, 256, (10, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    synth = DefectSynthesizer(SynthConfig(class_probs=ONLY_BIG, family_probs=(0.0, 0.0, 1.0)))
    calls = []
    monkeypatch.setattr(functional.F, "grid_sample", lambda x, *a, **k: calls.append(len(x)) or grid_sample(x, *a, **k))
    sliced = synth(images, generator=torch.Generator().manual_seed(1))
    assert calls == [2, 2, 1, 1, 1, 1, 1, 1]  # 10 samples in 8 slices
    calls.clear()
    monkeypatch.setattr(functional, "SLICES", 1)
    whole = synth(images, generator=torch.Generator().manual_seed(1))
    assert calls == [10]
    assert sliced.masks.any() and torch.equal(sliced.images, whole.images) and torch.equal(sliced.masks, whole.masks)


def test_same_operations_for_any_batch_size_with_every_family(ops_by_batch, reads_back):
    synth = DefectSynthesizer(SynthConfig(family_probs=(0.4, 0.3, 0.3)))
    object_masks = torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)

    def call(batch: int) -> None:
        images = (_images(batch) * 255).round().to(torch.uint8)
        synth(images, object_masks=object_masks, generator=torch.Generator().manual_seed(0))

    counts = ops_by_batch(call, (4, 96))
    assert counts[0] == counts[1] and not reads_back(counts[0])


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("family_probs", (0.5, 0.5), "family_probs"),
        ("family_probs", (0.5, 0.6, 0.0), "family_probs"),
        ("pretext", "4way", "pretext"),
        ("perlin_scale", (3, 1), "perlin_scale"),
        ("perlin_beta", (0.5, 1.5), "perlin_beta"),
        ("perlin_min_area", 0.0, "perlin_min_area"),
        ("perlin_tiles", 0, "perlin_tiles"),
        ("poisson_size", (0.1, 0.9), "poisson_size"),
        ("poisson_scale", (0.0, 1.0), "poisson_scale"),
    ],
)
def test_bad_family_configs_are_named(field, value, named):
    with pytest.raises(ValueError, match=named):
        SynthConfig(**{field: value})
