"""Reading folders in MVTec AD layout: formats, kinds, data root, bad input, disk cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.data import (
    BadDataError,
    DataNotFoundError,
    load_category,
    resolve_data_root,
    scan_category,
)
from ssad.data.objects import combine_still_masks

SIZE = 32

# make_category has no category.json: every load notes the kind it estimated (asserted where it matters)
pytestmark = pytest.mark.filterwarnings("ignore:no category.json")


def save(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def uniform(value: int, shape: tuple[int, ...] = (24, 24, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def disc(rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """A reddish disc at the centre of a beige backdrop, both lightly noisy: a still object."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.array([205.0, 200, 185]) + rng.normal(0, 2, (size, size, 1))
    image[np.hypot(yy - 0.5, xx - 0.5) < 0.25] = np.array([150, 60, 40]) * (0.9 + 0.2 * rng.random())
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make_category(root: Path, name: str = "widget", n_train: int = 3) -> Path:
    """A tiny category (a still disc): `n_train` train images, 1 good and 2 scratched test images, their masks."""
    category = root / name
    rng = np.random.default_rng(0)
    for i in range(n_train):
        save(category / "train" / "good" / f"{i:03d}.png", disc(rng))
    save(category / "test" / "good" / "000.png", uniform(90))
    for i in range(2):
        save(category / "test" / "scratch" / f"{i:03d}.png", uniform(200))
        mask = np.zeros((24, 24), dtype=np.uint8)
        mask[4:10, 4:12] = 255
        save(category / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask)
    return category


# --- formats -------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:no other category")  # flat colours: no object found, read as a texture
def test_any_format_mode_and_size_becomes_rgb_uint8_of_the_configured_size(tmp_path: Path) -> None:
    train = tmp_path / "mixed" / "train" / "good"
    save(train / "a_gray.png", uniform(77, (20, 20)))
    save(train / "b_rgba.png", np.broadcast_to(np.array([10, 20, 30, 0], dtype=np.uint8), (20, 20, 4)).copy())
    save(train / "c_16bit.png", np.full((20, 20), 128 * 257, dtype=np.uint16))
    save(train / "d_wide.PNG", uniform(50, (12, 40, 3)))
    save(train / "e_photo.jpg", uniform(100), quality=95)
    save(train / "f_bitmap.bmp", uniform(150))
    save(train / "g_scan.tiff", uniform(200))
    (train / ".DS_Store").write_bytes(b"\0\1")
    (train / "notes.txt").write_text("not an image")

    with pytest.warns(UserWarning, match="no test images"):
        data = load_category(tmp_path, "mixed", image_size=SIZE, cache_dir=tmp_path / "cache")

    assert [p.name for p in data.train_paths] == [
        "a_gray.png", "b_rgba.png", "c_16bit.png", "d_wide.PNG", "e_photo.jpg", "f_bitmap.bmp", "g_scan.tiff"
    ]
    assert data.train.shape == (7, 3, SIZE, SIZE) and data.train.dtype == torch.uint8
    colours = data.train.flatten(2).float().mean(dim=2).round().tolist()
    assert colours[0] == [77, 77, 77]  # grayscale to RGB
    assert colours[1] == [10, 20, 30]  # alpha dropped
    assert colours[2] == [128, 128, 128]  # 16-bit scaled, not clipped
    assert colours[3] == [50, 50, 50] and colours[5] == [150, 150, 150] and colours[6] == [200, 200, 200]
    assert all(abs(c - 100) <= 2 for c in colours[4])  # JPEG is lossy
    assert data.test.shape == (0, 3, SIZE, SIZE) and data.test_masks.shape == (0, 1, SIZE, SIZE)


def test_custom_category_reads_as_still_object_with_masks(tmp_path: Path) -> None:
    make_category(tmp_path)
    with pytest.warns(UserWarning, match=r"no category\.json: .*read as: an object that sits still"):
        data = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert (data.kind, data.moves, data.source_kind, data.kind_source) == ("object", False, None, "estimated")
    assert data.object_masks.shape == (1, 1, SIZE, SIZE)
    assert 0.1 < data.object_mask_share < 0.6 and not data.object_masks[0, 0, 0, 0]  # the disc, corners out
    assert data.test_defect_types == ["good", "scratch", "scratch"]
    assert data.test_labels.tolist() == [0, 1, 1]
    # nearest-neighbour resize (pixel centres) of the 24 px mask's [4:10, 4:12] box to 32 px
    expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    rows = ((torch.arange(SIZE) + 0.5) * 24 / SIZE).floor()
    expected[((rows >= 4) & (rows < 10))[:, None] & ((rows >= 4) & (rows < 12))[None, :]] = True
    assert torch.equal(data.test_masks[1, 0], expected) and not data.test_masks[0].any()


def test_defect_without_mask_gets_an_empty_mask_and_a_warning(tmp_path: Path) -> None:
    category = make_category(tmp_path)
    (category / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.warns(UserWarning, match=r"no ground-truth mask.*scratch/001\.png"):
        data = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert data.test_labels.tolist() == [0, 1, 1]
    assert data.test_masks[1].any() and not data.test_masks[2].any()
    # good: known (no defect); defective with a mask file: known; without one: unknown
    assert data.test_mask_known.tolist() == [True, True, False] and data.test_mask_known.dtype == torch.bool


def test_progress_bars_show_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_category(tmp_path)
    load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "quiet", progress=False)
    assert "widget: images" not in capsys.readouterr().err
    load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "shown")
    assert "widget: images" in capsys.readouterr().err


def test_category_json_sets_the_kind(tmp_path: Path) -> None:
    category = make_category(tmp_path, "cloth")
    make_category(tmp_path, "other")
    (category / "category.json").write_text(json.dumps({"kind": "texture"}))
    data = load_category(tmp_path, "cloth", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert data.kind == "texture" and bool(data.object_masks.all()) and data.object_masks.shape == (1, 1, SIZE, SIZE)
    assert (data.kind_source, data.object_mask_share) == ("category.json", 1.0)
    assert data.kind_reason == "cloth/category.json says: a texture (object mask all ones, defects cut from other sources)."
    assert data.source_kind == "other_categories" and data.source_images.shape == (3, 3, SIZE, SIZE)
    assert not data.sources_greyed and bool((data.source_images[:, 0] != data.source_images[:, 1]).any())  # colour

    (category / "category.json").write_text(json.dumps({"kind": "cloth"}))
    with pytest.raises(BadDataError, match="category.json"):
        load_category(tmp_path, "cloth", image_size=SIZE, cache_dir=tmp_path / "cache")


def test_combine_still_masks_takes_the_majority_else_the_union() -> None:
    masks = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    masks[0, 0, 0, 0] = masks[1, 0, 0, 0] = masks[2, 0, 1, 1] = True
    assert combine_still_masks(masks)[0, 0].tolist() == [[True, False], [False, False]]
    disjoint = torch.eye(4, dtype=torch.bool)[:3].view(3, 1, 2, 2)
    assert combine_still_masks(disjoint)[0, 0].tolist() == [[True, True], [True, False]]


# --- data root ----------------------------------------------------------------------------------------


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSAD_DATA_ROOT", raising=False)
    assert resolve_data_root() == Path("datasets/MVTecAD")
    monkeypatch.setenv("SSAD_DATA_ROOT", "/from/env")
    assert resolve_data_root() == Path("/from/env")
    assert resolve_data_root("/from/cli") == Path("/from/cli")
    monkeypatch.setenv("SSAD_DATA_ROOT", "")
    assert resolve_data_root(None) == Path("datasets/MVTecAD")


# --- bad input ------------------------------------------------------------------------------------------


def test_missing_root_says_where_it_looked_and_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"nowhere.*--download.*--demo") as err:
        load_category(tmp_path / "nowhere", "bottle", cache_dir=tmp_path / "cache")
    assert isinstance(err.value, FileNotFoundError) and str(tmp_path / "nowhere") in str(err.value)


def test_missing_category_lists_what_is_there(tmp_path: Path) -> None:
    make_category(tmp_path, "widget")
    with pytest.raises(DataNotFoundError, match=r"'bottle' not found.*bottle does not exist.*widget.*--download"):
        scan_category(tmp_path, "bottle")


def test_empty_train_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"no training images in .*empty/train/good"):
        scan_category(tmp_path, "empty")


def test_corrupt_image_is_named_and_nothing_is_cached(tmp_path: Path) -> None:
    category = make_category(tmp_path)
    bad = category / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    with pytest.raises(BadDataError, match=r"cannot read image .*train/good/001\.png"):
        load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_mask_of_another_size_is_an_error_naming_both_files(tmp_path: Path) -> None:
    category = make_category(tmp_path)
    save(category / "ground_truth" / "scratch" / "000_mask.png", np.zeros((24, 30), dtype=np.uint8))
    with pytest.raises(BadDataError, match=r"mask .*000_mask\.png is 30x24 but its image .*scratch/000\.png is 24x24"):
        load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# --- disk cache -----------------------------------------------------------------------------------------


def test_cache_hit_then_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    category = make_category(tmp_path)
    cache = tmp_path / "cache"
    first = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache)
    second = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache)
    assert not first.from_cache and second.from_cache
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # one file, no temporaries left

    changed = category / "train" / "good" / "002.png"
    save(changed, uniform(255))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match=r"stale \(1 file"):
        rebuilt = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache)
    assert not rebuilt.from_cache and bool((rebuilt.train[2] == 255).all())
    assert load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache).from_cache

    save(category / "train" / "good" / "003.png", uniform(1))  # an added file
    with pytest.warns(UserWarning, match="stale"):
        assert load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache).train.shape[0] == 4


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    make_category(tmp_path)
    cache = tmp_path / "cache"
    reference = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[: cache_file.stat().st_size // 2])
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache)
    assert not rebuilt.from_cache and torch.equal(rebuilt.train, reference.train)
    assert load_category(tmp_path, "widget", image_size=SIZE, cache_dir=cache).from_cache


def test_cache_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_category(tmp_path)
    monkeypatch.setenv("SSAD_CACHE_DIR", str(tmp_path / "env-cache"))
    load_category(tmp_path, "widget", image_size=SIZE)
    assert [p.name.startswith("widget-32px-") for p in (tmp_path / "env-cache").iterdir()] == [True]


def test_unwritable_cache_dir_costs_a_warning_not_the_run(tmp_path: Path) -> None:
    make_category(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write cache"):
        data = load_category(tmp_path, "widget", image_size=SIZE, cache_dir=tmp_path / "a_file")
    assert data.train.shape == (3, 3, SIZE, SIZE) and not data.from_cache


def test_atomic_writes_get_a_normal_file_mode(tmp_path):
    import os
    import stat

    from ssad.atomic import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644
