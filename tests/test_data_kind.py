"""A category's kind when nobody stated it: estimated from its training images, recorded, overridable.

Small synthetic categories in MVTec AD layout (64 px PNGs): a grayscale surface that fills the frame,
a disc that sits still, a rod at random angles and places; the rule itself on measured values; grey
sources for grayscale textures; which test images have known ground truth; bottle and screw.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.data import DEMO_CATEGORIES, estimate_kind, load_category, make_demo_dataset, procedural_sources
from ssad.data.categories import MIN_SIZE_RATIO, STILL_MIN_IOU, decide_kind
from ssad.data.sources import is_grayscale, to_grayscale

SIZE = 64
Render = Callable[[np.random.Generator], np.ndarray]


def surface(rng: np.random.Generator) -> np.ndarray:
    """Grayscale brushed metal filling the frame: row streaks, a periodic band, grain; R = G = B."""
    y = np.arange(SIZE)[:, None] / SIZE
    streaks = 0.04 * rng.normal(0, 1, (SIZE, 1)) + 0.06 * np.sin(2 * math.pi * (rng.uniform(5, 9) * y + rng.random()))
    image = 0.5 + 0.1 * rng.random() + streaks + 0.03 * rng.normal(0, 1, (SIZE, SIZE))
    return np.repeat((np.clip(image, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _backdrop(rng: np.random.Generator) -> np.ndarray:
    return np.array([205.0, 200, 185]) + rng.normal(0, 2, (SIZE, SIZE, 1))


def disc(rng: np.random.Generator) -> np.ndarray:
    """A reddish disc at the centre of a beige backdrop: an object that sits still."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    image = _backdrop(rng)
    image[np.hypot(yy - 0.5, xx - 0.5) < 0.25] = np.array([150, 60, 40]) * (0.9 + 0.2 * rng.random())
    return np.clip(image, 0, 255).round().astype(np.uint8)


def rod(rng: np.random.Generator) -> np.ndarray:
    """A dark rod (half the side long) at a random angle and place: an object that moves."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    image = _backdrop(rng)
    angle, (cy, cx) = rng.uniform(0, math.pi), rng.uniform(0.3, 0.7, 2)
    along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    across = (yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)
    image[(np.abs(along) < 0.25) & (np.abs(across) < 0.04)] = (50, 55, 70)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def dot(rng: np.random.Generator) -> np.ndarray:
    """A 2 x 2 px dark dot, always at the same place, on a plain backdrop."""
    image = np.full((SIZE, SIZE, 3), 200, dtype=np.uint8)
    image[30:32, 40:42] = 20
    return image


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make(root: Path, name: str, render: Render, n_train: int = 8, meta: dict | None = None, seed: int = 0) -> Path:
    """`<root>/<name>` in MVTec AD layout: `n_train` training images, one good test image, one
    defective one with its mask; a `category.json` with `meta` if given."""
    rng = np.random.default_rng(seed)
    folder = root / name
    for i in range(n_train):
        save(folder / "train" / "good" / f"{i:03d}.png", render(rng))
    save(folder / "test" / "good" / "000.png", render(rng))
    defective = render(rng)
    defective[20:26, 20:30] = 0
    save(folder / "test" / "dent" / "000.png", defective)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[20:26, 20:30] = 255
    save(folder / "ground_truth" / "dent" / "000_mask.png", mask)
    if meta is not None:
        (folder / "category.json").write_text(json.dumps(meta))
    return folder


def load(root: Path, name: str) -> tuple[object, list[str]]:
    """`load_category` at 64 px and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_category(root, name, image_size=SIZE, cache_dir=root / ".cache", progress=False)
    return data, [str(w.message) for w in caught]


def estimated(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("no category.json:")]


# --- estimated from the training images ----------------------------------------------------------------


def test_frame_filling_grayscale_surface_reads_as_texture_with_grey_sources(tmp_path: Path) -> None:
    make(tmp_path, "strip", surface)
    make(tmp_path, "parts", disc)  # another category, in colour: the texture's sources
    data, messages = load(tmp_path, "strip")
    assert (data.kind, data.moves, data.kind_source) == ("texture", False, "estimated")
    assert data.object_masks.shape == (1, 1, SIZE, SIZE) and bool(data.object_masks.all())
    assert data.object_mask_share == 1.0
    (note,) = estimated(messages)  # one warning, the sentence kept in kind_reason
    assert note == data.kind_reason
    assert "read as a surface that fills the frame: a texture" in note and "Write strip/category.json" in note
    assert "grayscale" in note
    # sources: the other category's training images, made grey (luma), so colour gives no fill away
    assert data.source_kind == "other_categories" and data.sources_greyed
    parts, _ = load(tmp_path, "parts")
    assert not is_grayscale(parts.train)
    assert torch.equal(data.source_images, to_grayscale(parts.train))


def test_grayscale_surface_alone_gets_grey_procedural_sources(tmp_path: Path) -> None:
    make(tmp_path, "strip", surface)
    data, messages = load(tmp_path, "strip")
    assert data.kind == "texture" and data.source_kind == "procedural" and data.sources_greyed
    assert torch.equal(data.source_images, to_grayscale(procedural_sources(len(data.source_images), SIZE)))
    assert any("procedural source images" in m for m in messages) and len(estimated(messages)) == 1


def test_still_disc_reads_as_still_object(tmp_path: Path) -> None:
    make(tmp_path, "washer", disc)
    data, messages = load(tmp_path, "washer")
    assert (data.kind, data.moves, data.kind_source) == ("object", False, "estimated")
    assert data.object_masks.shape == (1, 1, SIZE, SIZE)
    assert data.object_masks[0, 0, SIZE // 2, SIZE // 2] and not data.object_masks[0, 0, 0, 0]
    assert 0.15 < data.object_mask_share < 0.5  # the disc (0.20 of the image) and its margin
    assert estimated(messages) == [data.kind_reason] and "an object that sits still" in data.kind_reason
    assert data.source_images is None and data.source_kind is None and not data.sources_greyed


def test_elongated_object_at_random_poses_reads_as_moving(tmp_path: Path) -> None:
    make(tmp_path, "pin", rod)
    data, messages = load(tmp_path, "pin")
    assert (data.kind, data.moves, data.kind_source) == ("object", True, "estimated")
    assert data.object_masks.shape == (8, 1, SIZE, SIZE)  # one per image, and they differ
    assert any(not torch.equal(m, data.object_masks[0]) for m in data.object_masks[1:])
    assert 0.05 < data.object_mask_share < 0.3
    assert estimated(messages) == [data.kind_reason] and "an object that moves" in data.kind_reason


@pytest.mark.skipif("demo_strip" not in DEMO_CATEGORIES, reason="no demo_strip in this version of the demo")
def test_demo_strip_reads_as_texture(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, image_size=SIZE, n_train=8, n_test=1, categories=["demo_strip", "demo_object"])
    data, messages = load(tmp_path, "demo_strip")
    assert (data.kind, data.kind_source, data.sources_greyed) == ("texture", "estimated", True)
    assert estimated(messages) == [data.kind_reason]


# --- stated kinds win ----------------------------------------------------------------------------------


def test_category_json_wins_over_the_estimate(tmp_path: Path) -> None:
    make(tmp_path, "pin", rod, meta={"kind": "texture"})  # the estimate would say: moving object
    data, messages = load(tmp_path, "pin")
    assert (data.kind, data.moves, data.kind_source) == ("texture", False, "category.json")
    assert data.kind_reason.startswith("pin/category.json says: a texture") and not estimated(messages)


def test_mvtec_name_is_not_re_estimated(tmp_path: Path) -> None:
    make(tmp_path, "bottle", surface)  # the estimate would say: texture
    data, messages = load(tmp_path, "bottle")
    assert (data.kind, data.moves, data.kind_source) == ("object", False, "mvtec_table")
    assert data.kind_reason.startswith("bottle is a built-in MVTec AD category: an object that sits still")
    assert not estimated(messages) and data.source_images is None


def test_nearly_empty_still_mask_falls_back_to_all_ones_with_a_warning(tmp_path: Path) -> None:
    make(tmp_path, "speck", dot, meta={"kind": "object"})
    data, messages = load(tmp_path, "speck")
    assert (data.kind, data.moves, data.kind_source) == ("object", False, "category.json")  # the user said so
    assert bool(data.object_masks.all()) and data.object_mask_share == 1.0
    assert any("covers only 0.0" in m and "below 0.02" in m and "stays an object" in m for m in messages), messages


def test_moving_object_without_an_object_falls_back_per_image(tmp_path: Path) -> None:
    blank = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    make(tmp_path, "blank", lambda rng: blank, meta={"kind": "object", "moves": True})
    data, messages = load(tmp_path, "blank")
    assert data.object_masks.shape == (8, 1, SIZE, SIZE) and bool(data.object_masks.all())
    assert any("no object found on 8 of 8" in m for m in messages)


# --- the rule on measured values -----------------------------------------------------------------------


def read(**measured: float) -> tuple[str, bool]:
    values = {"n_images": 10, "found": 10, "mean_share": 0.3, "majority_share": 0.3, "size_ratio": 0.95,
              "mean_iou": 0.95}
    estimate = decide_kind("thing", **{**values, **measured})
    assert estimate.info.source == "estimated" and estimate.reason.startswith("no category.json: ")
    return estimate.info.kind, estimate.info.moves


def test_rule_reads_each_clause_in_order() -> None:
    assert read() == ("object", False)
    assert read(found=4) == ("texture", False)  # no object on 6 of 10
    assert read(found=5) == ("object", False)  # half is not most
    assert read(mean_share=0.019) == ("texture", False)  # nearly empty
    assert read(majority_share=0.91) == ("texture", False)  # fills the frame
    assert read(mean_iou=STILL_MIN_IOU) == ("object", False)  # agree: sits still, whatever the sizes
    assert read(mean_iou=0.9, size_ratio=0.1) == ("object", False)
    assert read(mean_iou=0.3) == ("object", True)  # disagree, keep their size: moves
    assert read(mean_iou=0.3, size_ratio=MIN_SIZE_RATIO) == ("object", True)
    assert read(mean_iou=0.3, size_ratio=0.5) == ("texture", False)  # disagree and vary in size: grain


def test_reason_states_what_was_measured() -> None:
    reason = decide_kind("kolektor", 231, 231, 0.0004, 0.0, 1.0, 0.0).reason
    assert reason.startswith("no category.json: the object masks estimated on the 231 training images cover 0.000 "
                             "of the image on average (below 0.02), read as a surface that fills the frame: a texture")
    assert reason.endswith('Write kolektor/category.json to override, e.g. {"kind": "object", "moves": true}.')
    moving = decide_kind("screws", 40, 40, 0.24, 0.1, 0.91, 0.29).reason
    assert "mean IoU 0.29, below 0.6" in moving and "an object that moves" in moving and '{"kind": "texture"}' in moving


def test_grayscale_conversion_is_luma() -> None:
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]], dtype=torch.uint8)
    images = colours.T.reshape(1, 3, 2, 2)
    grey = to_grayscale(images)
    assert grey.dtype == torch.uint8 and grey.shape == images.shape and is_grayscale(grey)
    assert grey[0, 0].flatten().tolist() == [76, 150, 29, 90]  # BT.601: 0.299 R + 0.587 G + 0.114 B, grey kept
    assert not is_grayscale(images)


# --- on real parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("category, moves", [("bottle", False), ("screw", True)])
def test_real_bottle_sits_still_and_screw_moves(mvtec_root: Path, tmp_path_factory: pytest.TempPathFactory,
                                                category: str, moves: bool) -> None:
    """The thresholds on real parts, with margin: bottle's masks agree (IoU near 1), screw's disagree
    but keep their size."""
    data = load_category(mvtec_root, category, image_size=128, cache_dir=tmp_path_factory.mktemp("cache"),
                         progress=False)
    estimate = estimate_kind(data.train, category)
    assert estimate.found == len(data.train)
    assert (estimate.info.kind, estimate.info.moves) == ("object", moves), estimate.reason
    if moves:
        assert estimate.mean_iou < STILL_MIN_IOU - 0.2 and estimate.size_ratio > MIN_SIZE_RATIO + 0.1, estimate
    else:
        assert estimate.mean_iou > STILL_MIN_IOU + 0.2, estimate
