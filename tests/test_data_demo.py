"""The procedural demo dataset, read back through the reader; texture sources."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.data import CATEGORY_FILE, DEMO_CATEGORIES, load_category, make_demo_dataset, procedural_sources

SMALL = {"image_size": 64, "n_train": 6, "n_test": 2}
ALL = ["demo_dark", "demo_glossy", "demo_moving", "demo_object", "demo_strip", "demo_texture"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=0, **SMALL)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(demo_root: Path, tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "again", seed=0, **SMALL)
    make_demo_dataset(tmp_path / "other", seed=1, **SMALL)
    reference = tree(demo_root)
    assert tree(tmp_path / "again") == reference
    other = tree(tmp_path / "other")
    assert other.keys() == reference.keys() and other != reference


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_layout_and_non_empty_masks(demo_root: Path) -> None:
    assert sorted(DEMO_CATEGORIES) == ALL
    assert sorted(p.name for p in demo_root.iterdir()) == ALL
    for category in demo_root.iterdir():
        assert len(list((category / "train" / "good").glob("*.png"))) == SMALL["n_train"]
        defect_dirs = [d for d in (category / "test").iterdir() if d.name != "good"]
        assert len(defect_dirs) >= 2
        for defect_dir in defect_dirs:
            for image in defect_dir.glob("*.png"):
                mask = np.asarray(Image.open(category / "ground_truth" / defect_dir.name / f"{image.stem}_mask.png"))
                assert mask.shape == (64, 64) and mask.any(), image


@pytest.mark.parametrize(
    "name, kind, moves, n_object_masks",
    [("demo_object", "object", False, 1), ("demo_moving", "object", True, 6), ("demo_dark", "object", False, 1),
     ("demo_texture", "texture", False, 1), ("demo_glossy", "object", False, 1)],
)
def test_demo_reads_back_with_its_kind(
    demo_root: Path, tmp_path: Path, name: str, kind: str, moves: bool, n_object_masks: int
) -> None:
    data = load_category(demo_root, name, image_size=64, cache_dir=tmp_path)
    assert (data.kind, data.moves) == (kind, moves) == (DEMO_CATEGORIES[name][0].kind, DEMO_CATEGORIES[name][0].moves)
    assert data.train.shape == (6, 3, 64, 64) and data.test.shape == (8, 3, 64, 64)
    assert data.object_masks.shape == (n_object_masks, 1, 64, 64)
    assert data.test_labels.tolist() == [int(t != "good") for t in data.test_defect_types]
    assert torch.equal(data.test_masks.flatten(1).any(dim=1), data.test_labels.bool())
    if kind == "object":  # the object is found: part of the image, corners out
        coverage = data.object_masks.float().mean(dim=(1, 2, 3))
        assert bool(((coverage > 0.05) & (coverage < 0.6)).all()) and not data.object_masks[:, 0, 0, 0].any()
        assert moves == any(not torch.equal(m, data.object_masks[0]) for m in data.object_masks)  # rotations
    else:  # other demo categories lie next to it: texture fills come from them
        assert bool(data.object_masks.all()) and data.source_kind == "other_categories"
        n_sources = SMALL["n_train"] * (len(DEMO_CATEGORIES) - 1)  # every training image of the others
        assert data.source_images.shape == (n_sources, 3, 64, 64) and data.source_images.dtype == torch.uint8


def test_strip_has_no_category_file_and_reads_back(demo_root: Path, tmp_path: Path) -> None:
    """demo_strip is written without a category.json, on purpose: the reader infers its kind. Which
    kind it infers is the reader's business (tested with the reader); here it only has to read back."""
    assert DEMO_CATEGORIES["demo_strip"][0] is None
    assert not (demo_root / "demo_strip" / CATEGORY_FILE).exists()
    assert all((demo_root / name / CATEGORY_FILE).is_file() for name in ALL if name != "demo_strip")
    with warnings.catch_warnings():  # whatever the reader says about the kind it inferred
        warnings.simplefilter("ignore")
        data = load_category(demo_root, "demo_strip", image_size=64, cache_dir=tmp_path)
    assert data.train.shape == (6, 3, 64, 64) and data.test.shape == (8, 3, 64, 64)
    assert data.test_defect_types == ["crack"] * 2 + ["good"] * 2 + ["scratch"] * 2 + ["spot"] * 2
    assert torch.equal(data.test_masks.flatten(1).any(dim=1), data.test_labels.bool())


def test_texture_alone_gets_procedural_sources_with_a_warning(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, categories=["demo_texture"], **SMALL)
    with pytest.warns(UserWarning, match="procedural source images"):
        data = load_category(tmp_path, "demo_texture", image_size=64, cache_dir=tmp_path / "cache")
    assert data.source_kind == "procedural"
    assert torch.equal(data.source_images, procedural_sources(len(data.source_images), 64))


def test_procedural_sources_are_deterministic_and_varied() -> None:
    a, b, c = procedural_sources(6, 32, seed=3), procedural_sources(6, 32, seed=3), procedural_sources(6, 32, seed=4)
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.flatten(1).float().std(dim=1).min() > 5  # no flat images


def test_unknown_demo_category_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown demo categories"):
        make_demo_dataset(tmp_path, categories=["bottle"])


def content_digest(folder: Path) -> str:
    """SHA-256 over a category folder's file names, PNGs' decoded pixels and other files' bytes."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + b"\n")
            h.update(read(path).tobytes() if path.suffix == ".png" else path.read_bytes())
    return h.hexdigest()


# Computed from ssad/data/demo.py before demo_glossy and demo_strip were added (seed 0, SMALL).
OLD_DIGESTS = {
    "demo_object": "ea8fdf5c405633a99198d1fda955fb88a8cca54bc53a23e6dbda6e8befc60843",
    "demo_moving": "6fa48577cf053dd95ec2eacc911d499731c77f2275a3d1f401d35fbafef3b48e",
    "demo_dark": "7e41b8858b57651c470d0c6ca5cf0119d573d7c5178fe7219df39f448c769630",
    "demo_texture": "105f4a01eb171c667e280f9e27b7f6bfb46d01a893601091579a40d2df042cf8",
}


@pytest.mark.parametrize("name", sorted(OLD_DIGESTS))
def test_older_categories_are_unchanged(demo_root: Path, name: str) -> None:
    """Pins the generated data: adding a category (at the end of DEMO_CATEGORIES) or a helper must not
    change what an existing category writes, so results on it stay comparable. The digests are
    hard-coded on purpose; they hash decoded pixels, not PNG bytes, so a Pillow or zlib update that
    compresses differently does not fail this test (same-seed byte identity is tested above)."""
    assert content_digest(demo_root / name) == OLD_DIGESTS[name]


GLOSSY_SIZE = 128


@pytest.fixture(scope="module")
def glossy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("glossy")
    make_demo_dataset(root, image_size=GLOSSY_SIZE, n_train=12, n_test=4, categories=["demo_glossy"])
    return root / "demo_glossy"


def bright(image: np.ndarray) -> np.ndarray:
    """The highlights' pixels: brighter than anything else in a demo_glossy image (body, backdrop, defects)."""
    return image.mean(axis=2) > 0.5 * 255


def test_glossy_highlights_move_and_outsize_the_defects(glossy_root: Path) -> None:
    train = [read(p) for p in sorted((glossy_root / "train" / "good").glob("*.png"))]
    highlights = [bright(image) for image in train]
    assert all(h.any() for h in highlights)
    centroids = np.array([np.argwhere(h).mean(axis=0) for h in highlights]) / GLOSSY_SIZE
    assert centroids.std(axis=0).min() > 0.05  # the highlights move about, in y and in x
    brightest = {np.unravel_index(image.mean(axis=2).argmax(), image.shape[:2]) for image in train}
    assert len(brightest) == len(train)  # every image's brightest pixel lies elsewhere
    masks = [read(p) > 0 for p in sorted((glossy_root / "ground_truth").rglob("*.png"))]
    assert len(masks) == 12
    highlight_areas, defect_areas = [h.sum() for h in highlights], [m.sum() for m in masks]
    assert min(highlight_areas) > max(defect_areas)
    assert np.mean(defect_areas) < 0.25 * np.mean(highlight_areas)
    for defect_dir in (d for d in (glossy_root / "test").iterdir() if d.name != "good"):
        for path in defect_dir.glob("*.png"):  # test images have highlights too, bigger than their defect
            mask = read(glossy_root / "ground_truth" / defect_dir.name / f"{path.stem}_mask.png") > 0
            assert bright(read(path)).sum() > mask.sum()


@pytest.mark.parametrize("defect", ["pinhole", "cut", "speck"])
def test_glossy_defects_are_small_on_the_object_and_off_the_highlights(defect: str) -> None:
    _, render, painters = DEMO_CATEGORIES["demo_glossy"]
    rng = np.random.default_rng(7)
    for _ in range(8):
        scene = render(rng, 256)
        image, mask = painters[defect](rng, scene)
        assert mask.any() and not (mask & ~scene.obj).any()
        assert mask.mean() < 0.002  # under 0.2% of the image, some 130 px at 256
        assert (mask & (scene.shine < 0.1)).any()  # not on a highlight only
        change = np.abs(image - scene.image).max(axis=2)
        assert change[mask].max() > 0.04  # visible
        assert change[~mask].max() < 0.07  # and where the mask says


def test_strip_is_grayscale_and_fills_the_frame(demo_root: Path) -> None:
    folder = demo_root / "demo_strip"
    paths = sorted(folder.glob("t*/*/*.png"))
    assert len(paths) == 6 + 2 * 4
    for path in paths:
        image = read(path)
        assert image.shape == (64, 64, 3)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        gray = image[..., 0].astype(float)
        sides = [gray[:4], gray[-4:], gray[:, :4], gray[:, -4:]]
        # The streaks run to every edge: no flat backdrop there, whose only variation would be the
        # sensor noise (sd 0.01, 2.5 grey levels; demo_glossy's border is like that).
        assert min(side.std() for side in sides) > max(4.0, 0.4 * gray[16:48, 16:48].std())
