"""Where the data is, and which files make up a category in the MVTec AD folder layout.

::

    <root>/<category>/train/good/*.png                     normal training images
    <root>/<category>/test/good/*.png                      normal test images
    <root>/<category>/test/<defect_type>/*.png             defective test images
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png

Images may be PNG, JPEG, BMP or TIFF (any of their extensions, any case); masks likewise. Files are
listed in name order; hidden files and other extensions are ignored.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ssad.data.categories import CategoryInfo, category_info
from ssad.data.errors import DataNotFoundError

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "GOOD",
    "IMAGE_EXTENSIONS",
    "CategoryFiles",
    "find_images",
    "list_images",
    "no_images_error",
    "resolve_data_root",
    "scan_category",
]

DATA_ROOT_ENV = "SSAD_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("datasets/MVTecAD")
"""Relative to the working directory; the same default as anomalib, so both can share one copy."""

GOOD = "good"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

_HOW_TO_GET_DATA = (
    "Point ssad at the folder that holds the category folders with --data-root (or the "
    f"{DATA_ROOT_ENV} environment variable), fetch the official MVTec AD archive with --download, "
    "or generate a small procedural dataset with --demo."
)


def resolve_data_root(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """The data root: `cli_value` (from `--data-root`), else `$SSAD_DATA_ROOT`, else `./datasets/MVTecAD`.

    Empty strings count as unset. `~` is expanded; the path is not required to exist.
    """
    for value in (cli_value, os.environ.get(DATA_ROOT_ENV)):
        if value is not None and str(value) != "":
            return Path(value).expanduser()
    return DEFAULT_DATA_ROOT


@dataclass(frozen=True)
class CategoryFiles:
    """The files of one category. Test lists are aligned: entry i of each describes test image i.

    `test_mask_paths[i]` is None for good images and for defective images without a mask file.
    """

    root: Path
    info: CategoryInfo
    train_paths: list[Path]
    test_paths: list[Path]
    test_defect_types: list[str]
    test_mask_paths: list[Path | None]

    @property
    def directory(self) -> Path:
        """`<root>/<category>`."""
        return self.root / self.info.name


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension, hidden files skipped), sorted by name."""
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def find_images(folder: Path, masks: bool = True) -> list[Path]:
    """Image files anywhere under `folder` (by extension), sorted by path; ground-truth masks
    (``*_mask``) too unless `masks` is False."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and (masks or not p.stem.endswith("_mask"))
    )


def no_images_error(folder: Path) -> str:
    """The message for a folder that holds no image: what was looked for, and where."""
    return f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {folder}"


def scan_category(root: str | os.PathLike[str], category: str) -> CategoryFiles:
    """List the train, test and ground-truth files of `<root>/<category>`.

    Raises `DataNotFoundError` (a `FileNotFoundError`) when the root, the category or its training
    images are missing, saying where it looked and how to get the data. Warns (once, naming the
    files) about defective test images without a mask; they get an empty mask.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data root {root.absolute()} does not exist. {_HOW_TO_GET_DATA}")
    directory = root / category
    if not directory.is_dir():
        present = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
        found = f"categories found there: {', '.join(present)}" if present else "no categories found there"
        raise DataNotFoundError(
            f"category {category!r} not found: {directory.absolute()} does not exist ({found}). "
            f"{_HOW_TO_GET_DATA}"
        )
    train_dir = directory / "train" / GOOD
    train_paths = list_images(train_dir) if train_dir.is_dir() else []
    if not train_paths:
        raise DataNotFoundError(
            f"no training images in {train_dir.absolute()} (looked for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); a category needs normal images in "
            "<root>/<category>/train/good/"
        )

    test_paths: list[Path] = []
    defect_types: list[str] = []
    mask_paths: list[Path | None] = []
    test_dir = directory / "test"
    type_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    for type_dir in type_dirs:
        images = list_images(type_dir)
        masks = {} if type_dir.name == GOOD else _masks_by_stem(directory / "ground_truth" / type_dir.name)
        test_paths += images
        defect_types += [type_dir.name] * len(images)
        mask_paths += [masks.get(p.stem) for p in images]
    if not test_paths:
        warnings.warn(f"no test images in {test_dir.absolute()}; the category can be trained but not evaluated",
                      stacklevel=2)
    unmasked = [p for p, t, m in zip(test_paths, defect_types, mask_paths) if t != GOOD and m is None]
    if unmasked:
        named = ", ".join(str(p) for p in unmasked[:3]) + (f" and {len(unmasked) - 3} more" if len(unmasked) > 3 else "")
        warnings.warn(
            f"{len(unmasked)} defective test image(s) have no ground-truth mask ({named}; expected "
            f"<root>/{category}/ground_truth/<defect_type>/<stem>_mask.png): image metrics count them, "
            "pixel metrics leave them out.",
            stacklevel=2,
        )
    return CategoryFiles(root, category_info(directory), train_paths, test_paths, defect_types, mask_paths)


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    """`{image stem: mask path}` for the `<stem>_mask.<ext>` files in `folder` ({} if it is absent)."""
    if not folder.is_dir():
        return {}
    return {p.stem.removesuffix("_mask"): p for p in list_images(folder) if p.stem.endswith("_mask")}
