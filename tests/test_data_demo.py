"""The procedural demo dataset, read back through the reader; texture sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.data import DEMO_CATEGORIES, load_category, make_demo_dataset, procedural_sources

SMALL = {"image_size": 64, "n_train": 6, "n_test": 2}


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


def test_layout_and_non_empty_masks(demo_root: Path) -> None:
    assert sorted(p.name for p in demo_root.iterdir()) == ["demo_dark", "demo_moving", "demo_object", "demo_texture"]
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
     ("demo_texture", "texture", False, 1)],
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
        assert data.source_images.shape == (18, 3, 64, 64) and data.source_images.dtype == torch.uint8


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
