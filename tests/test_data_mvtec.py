"""ssad.data on the real MVTec AD `bottle` category (../shared/data/mvtec; skipped where absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

import ssad.data.loader
from ssad.data import load_category, scan_category

MVTEC = Path(__file__).parents[1].parent / "shared/data/mvtec"
SIZE = 64

pytestmark = pytest.mark.skipif(
    not (MVTEC / "bottle").is_dir(), reason=f"MVTec AD bottle not found at {MVTEC} (real data, not in the repo)"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def bottle(cache_dir: Path) -> ssad.data.CategoryData:
    return load_category(MVTEC, "bottle", image_size=SIZE, cache_dir=cache_dir)


def test_bottle_counts_labels_and_defect_types(bottle: ssad.data.CategoryData) -> None:
    assert (bottle.category, bottle.kind, bottle.moves) == ("bottle", "object", False)
    assert len(bottle.train_paths) == 209 and len(bottle.test_paths) == 83
    counts = {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert Counter(bottle.test_defect_types) == counts
    expected_labels = [int(t != "good") for t in bottle.test_defect_types]
    assert bottle.test_labels.tolist() == expected_labels and bottle.test_labels.dtype == torch.int64
    assert all(p.parent.name == t for p, t in zip(bottle.test_paths, bottle.test_defect_types))
    assert bottle.source_images is None and bottle.source_kind is None


def test_bottle_tensors_have_the_configured_size(bottle: ssad.data.CategoryData) -> None:
    assert bottle.train.shape == (209, 3, SIZE, SIZE) and bottle.train.dtype == torch.uint8
    assert bottle.test.shape == (83, 3, SIZE, SIZE) and bottle.test.dtype == torch.uint8
    assert bottle.test_masks.shape == (83, 1, SIZE, SIZE) and bottle.test_masks.dtype == torch.bool
    assert bottle.object_masks.shape == (1, 1, SIZE, SIZE) and bottle.object_masks.dtype == torch.bool
    assert bottle.image_size == SIZE and bottle.device == torch.device("cpu")
    assert bottle.train.float().std() > 10  # real pictures, not zeros


def test_bottle_masks_match_their_images(bottle: ssad.data.CategoryData) -> None:
    files = scan_category(MVTEC, "bottle")
    matched = [(p, m) for p, m in zip(files.test_paths, files.test_mask_paths) if m is not None]
    assert len(matched) == 63
    assert all(m.name == f"{p.stem}_mask.png" and m.parent.name == p.parent.name for p, m in matched)
    has_defect = bottle.test_masks.flatten(1).any(dim=1)
    assert torch.equal(has_defect, bottle.test_labels.bool())


def test_second_load_is_served_from_disk(
    bottle: ssad.data.CategoryData, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(ssad.data.loader, "read_image", no_decoding)
    monkeypatch.setattr(ssad.data.loader, "read_mask", no_decoding)
    again = load_category(MVTEC, "bottle", image_size=SIZE, cache_dir=cache_dir)
    assert not bottle.from_cache and again.from_cache
    assert again.load_seconds < bottle.load_seconds
    for name in ("train", "test", "test_masks", "test_labels", "object_masks"):
        assert torch.equal(getattr(again, name), getattr(bottle, name)), name
    assert again.test_paths == bottle.test_paths
