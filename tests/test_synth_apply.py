"""`apply` and `DefectSynthesizer`: what the output holds, reproducibility, bad input, vectorization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssad.synth import DefectSynthesizer, SynthConfig, apply, sample_params

SIZE = 64


def _images(batch: int, channels: int = 3, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """Smooth random images (uint8), so neighbouring pixels differ but not wildly."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, channels, size // 8, size // 8, generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    noise = torch.rand(batch, channels, size, size, generator=g) * 0.2
    return ((up * 0.8 + noise) * 255).round().to(torch.uint8)


def _reference_colour(x: np.ndarray, brightness: float, contrast: float, hue: float) -> np.ndarray:
    """Independent float64 colour jitter of x (C, H, W) in [0, 1], written from the definition."""
    if x.shape[0] == 3:
        k = np.ones(3) / math.sqrt(3)
        cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        t = 2 * math.pi * hue
        rotation = math.cos(t) * np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * np.outer(k, k)
        x = np.einsum("ij,jhw->ihw", rotation, x)
    return np.clip(brightness * (contrast * (x - 0.5) + 0.5), 0, 1)


def _source_pixel(p: dict, i: int, row: int, col: int) -> tuple[int, int]:
    """Where cut-paste takes pixel (row, col) of sample i from, by the definition in `params`."""
    cx, cy = p["centre"][i].double().tolist()
    sx, sy = p["source"][i].double().tolist()
    t = math.radians(float(p["angle"][i]))
    dx, dy = col + 0.5 - cx, row + 0.5 - cy
    qx, qy = sx + dx * math.cos(t) - dy * math.sin(t), sy + dx * math.sin(t) + dy * math.cos(t)
    return min(max(math.floor(qy), 0), SIZE - 1), min(max(math.floor(qx), 0), SIZE - 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_outside_is_jittered_input_and_inside_is_the_fill(channels):
    batch = 48
    images = _images(batch, channels).float() / 255
    config = SynthConfig(class_probs=(0.2, 0.4, 0.4), fill_probs=(0.5, 0.25, 0.25))
    p = sample_params(images.shape, config, generator=torch.Generator().manual_seed(7))
    out, masks = apply(images, p, config)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert masks.shape == (batch, 1, SIZE, SIZE) and masks.dtype == torch.bool
    assert set(p["fill_mode"][p["labels"] > 0].tolist()) == {0, 1, 2}

    for i in range(batch):  # a test may loop; the engine may not
        factors = (float(p[k][i]) for k in ("brightness", "contrast", "hue"))
        expected = _reference_colour(images[i].double().numpy(), *factors)
        got, inside = out[i].double().numpy(), masks[i, 0].numpy()
        label, mode = int(p["labels"][i]), int(p["fill_mode"][i])
        assert inside.any() == (label > 0)
        np.testing.assert_allclose(got[:, ~inside], expected[:, ~inside], atol=1e-5)
        if label == 0:
            continue
        rows, cols = np.nonzero(inside)
        if mode == 0:
            src = [_source_pixel(p, i, r, c) for r, c in zip(rows, cols)]
            want = np.stack([expected[:, r, c] for r, c in src], axis=1)
            if label == 1:  # an unrotated defect is an exact integer shift
                shift = {(r - sr, c - sc) for (r, c), (sr, sc) in zip(zip(rows, cols), src)}
                assert len(shift) == 1
        elif mode == 1:
            patch = np.stack([expected[:, r, c] for r, c in (_source_pixel(p, i, r, c) for r, c in zip(rows, cols))], 1)
            want = np.repeat(patch.mean(axis=1, keepdims=True), len(rows), axis=1)
        else:
            want = np.repeat(p["flat_colour"][i].double().numpy()[:, None], len(rows), axis=1)
        np.testing.assert_allclose(got[:, rows, cols], want, atol=1e-5)


def test_hue_rotates_about_the_grey_axis():
    # A third of a turn about the grey axis permutes the channels; grey stays grey.
    config = SynthConfig(class_probs=(1.0, 0.0, 0.0))
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    images[1] = images[1, :1]  # grey
    p = sample_params(images.shape, config)
    p.update(brightness=torch.ones(2), contrast=torch.ones(2), hue=torch.full((2,), 1 / 3))
    out, _ = apply(images, p, config)
    assert torch.allclose(out[0], images[0].roll(1, dims=0), atol=1e-5)
    assert torch.allclose(out[1], images[1], atol=1e-5)


def test_uint8_and_float_paths_agree():
    images = _images(32)
    config = SynthConfig()
    p = sample_params(images.shape, config, generator=torch.Generator().manual_seed(9))
    out_u8, masks_u8 = apply(images, p, config)
    out_f, masks_f = apply(images.float() / 255, p, config)
    assert out_u8.dtype == torch.uint8
    assert torch.equal(masks_u8, masks_f)
    assert ((out_f * 255).round() - out_u8.float()).abs().max() <= 1


def test_same_generator_seed_gives_bit_identical_output():
    images = _images(16)
    synth = DefectSynthesizer()
    a = synth(images, generator=torch.Generator().manual_seed(10))
    b = synth(images, generator=torch.Generator().manual_seed(10))
    c = synth(images, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.images, c.images)


def test_params_replay_on_a_second_view():
    images = _images(8)
    config = SynthConfig(class_probs=(0, 1, 0))
    p = sample_params(images.shape, config, generator=torch.Generator().manual_seed(12))
    _, masks_a = apply(images, p, config)
    _, masks_b = apply(_images(8, seed=1), p, config)
    assert torch.equal(masks_a, masks_b)


def test_cut_paste_takes_patches_from_source_images():
    images = torch.zeros(16, 3, SIZE, SIZE, dtype=torch.uint8)
    sources = torch.full_like(images, 200)
    config = SynthConfig(class_probs=(0, 0.5, 0.5), fill_probs=(1, 0, 0), brightness=0, contrast=0, hue=0)
    out = DefectSynthesizer(config)(images, source_images=sources, generator=torch.Generator().manual_seed(13))
    inside = out.masks.expand_as(out.images)
    assert (out.images[inside] == 200).all() and (out.images[~inside] == 0).all()


def test_module_output_fields_and_object_masks():
    images = _images(8)
    object_masks = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    object_masks[..., 24:40, 24:40] = True
    out = DefectSynthesizer()(images, object_masks=object_masks, generator=torch.Generator().manual_seed(14))
    assert out.images.dtype == torch.uint8 and out.labels.dtype == torch.int64
    assert torch.equal(out.labels, out.params["labels"])
    shape_params = {"area_ratio", "aspect_ratio", "angle", "centre", "source", "vertices", "num_vertices", "fill_mode"}
    assert shape_params <= set(out.params)
    assert out.params["vertices"].shape == (8, 8, 2)


def test_no_nan_on_extreme_inputs():
    synth = DefectSynthesizer()
    for value in (0.0, 1.0):
        out = synth(torch.full((16, 3, SIZE, SIZE), value), generator=torch.Generator().manual_seed(15))
        assert torch.isfinite(out.images).all() and (out.images >= 0).all() and (out.images <= 1).all()


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (torch.zeros(3, SIZE, SIZE), {}, "dimensions"),
        (torch.zeros(2, 4, SIZE, SIZE), {}, "1 or 3 channels"),
        (torch.zeros(0, 3, SIZE, SIZE), {}, "empty batch"),
        (torch.full((2, 3, SIZE, SIZE), 1.5), {}, r"\[0, 1\]"),
        (torch.full((2, 3, SIZE, SIZE), float("nan")), {}, "NaN"),
        (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.int32), {}, "uint8 or float"),
        (torch.zeros(2, 3, 32, 32), {}, "too small"),
        (torch.zeros(2, 3, SIZE, SIZE), {"object_masks": torch.ones(2, 1, 32, 32, dtype=torch.bool)}, "object_masks"),
        (torch.zeros(2, 3, SIZE, SIZE), {"object_masks": torch.ones(2, 1, SIZE, SIZE)}, "bool"),
        (torch.zeros(2, 3, SIZE, SIZE), {"source_images": torch.zeros(2, 3, SIZE, 32)}, "source_images"),
    ],
)
def test_bad_input_raises_value_error(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DefectSynthesizer()(images, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"object_masks": (torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool), {})}, "object_masks .*tuple.*return_info"),
        ({"object_masks": np.ones((1, 1, SIZE, SIZE), dtype=bool)}, "object_masks .*ndarray"),
        ({"source_images": [torch.zeros(3, SIZE, SIZE)]}, "source_images .*list"),
    ],
)
def test_inputs_that_are_not_tensors_raise_type_error(kwargs, message):
    with pytest.raises(TypeError, match=message):
        DefectSynthesizer()(torch.zeros(2, 3, SIZE, SIZE), **kwargs)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        DefectSynthesizer()(np.zeros((2, 3, SIZE, SIZE), dtype=np.uint8))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("class_probs", (0.5, 0.5, 0.5)),
        ("fill_probs", (1.0, 0.1, -0.1)),
        ("polygon_area", (0.1, 0.05)),
        ("scar_area", (0.5, 1.0)),
        ("polygon_aspect", ((1.0, 1.0),)),
        ("scar_aspect", ()),
        ("polygon_points_per_side", (1, 3)),
        ("brightness", 1.5),
        ("backend", "magic"),
    ],
)
def test_invalid_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SynthConfig(**{field: value})


def test_config_from_dict_names_unknown_keys():
    assert SynthConfig.from_dict({"scar_angle": [-10, 10]}).scar_angle == (-10, 10)
    with pytest.raises(ValueError, match="scar_angel"):
        SynthConfig.from_dict({"scar_angel": [-10, 10]})


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_same_operations_for_any_batch_size_and_no_host_sync(dtype, ops_by_batch, reads_back):
    """With the default config, one call dispatches the same aten ops for B = 4 and B = 256 and
    never reads a value back: the float range check is an asynchronous assertion."""
    synth = DefectSynthesizer()
    object_masks = torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)

    def call(batch: int) -> None:
        images = _images(batch)
        images = images if dtype == torch.uint8 else images.float() / 255
        synth(images, object_masks=object_masks, generator=torch.Generator().manual_seed(0))

    counts = ops_by_batch(call, (4, 256))
    assert counts[0] == counts[1] and not reads_back(counts[0])
    assert ("aten._assert_async.msg" in counts[0]) == dtype.is_floating_point  # uint8 needs no range check
