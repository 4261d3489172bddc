"""What kind of product a category shows: texture, still object or moving object.

The kind decides where synthetic defects may go (object mask) and what fills textures:

- texture (carpet, grid, leather, tile, wood): the whole image is product; object mask all ones; the
  synthesizer cuts its fill from images of other categories.
- still object (bottle, cable, ...): the object sits at the same place in every image, so one object
  mask serves the whole category.
- moving object (hazelnut, screw, metal_nut): position or rotation varies, one mask per image.

The 15 MVTec AD names are built in. Any other folder in the MVTec AD layout is a custom category,
read as a still object unless a `category.json` file in the category folder says otherwise::

    {"kind": "texture"}                    # or
    {"kind": "object", "moves": true}

The file wins over the built-in table, so it can also correct a built-in entry. `ssad.data.demo`
writes one for each demo category.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ssad.data.errors import BadDataError

__all__ = ["CATEGORY_FILE", "CategoryInfo", "CategoryKind", "MVTEC_CATEGORIES", "category_info"]

CategoryKind = Literal["texture", "object"]

CATEGORY_FILE = "category.json"
"""Name of the optional per-category metadata file, inside `<root>/<category>/`."""


@dataclass(frozen=True)
class CategoryInfo:
    """A category's name and kind. `moves` is True for objects whose position/rotation varies."""

    name: str
    kind: CategoryKind
    moves: bool = False


_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
_STILL_OBJECTS = ("bottle", "cable", "capsule", "pill", "toothbrush", "transistor", "zipper")
_MOVING_OBJECTS = ("hazelnut", "metal_nut", "screw")

MVTEC_CATEGORIES: dict[str, CategoryInfo] = dict(
    sorted(
        [(n, CategoryInfo(n, "texture")) for n in _TEXTURES]
        + [(n, CategoryInfo(n, "object")) for n in _STILL_OBJECTS]
        + [(n, CategoryInfo(n, "object", moves=True)) for n in _MOVING_OBJECTS]
    )
)
"""The 15 MVTec AD categories, by name, in alphabetical order."""


def category_info(category_dir: Path) -> CategoryInfo:
    """Kind of the category stored in `category_dir` (`<root>/<category>`).

    Order: its `category.json` if present, else the MVTec AD table, else a still object.
    Raises `BadDataError` naming the file when `category.json` is not valid.
    """
    name = category_dir.name
    meta_path = category_dir / CATEGORY_FILE
    if not meta_path.is_file():
        return MVTEC_CATEGORIES.get(name, CategoryInfo(name, "object"))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadDataError(f"cannot read {meta_path}: {err}; fix or delete the file") from err
    valid = (
        isinstance(meta, dict)
        and meta.get("kind") in ("texture", "object")
        and set(meta) <= {"kind", "moves"}
        and isinstance(meta.get("moves", False), bool)
        and not (meta["kind"] == "texture" and meta.get("moves", False))
    )
    if not valid:
        raise BadDataError(
            f"{meta_path} must be a JSON object with 'kind' ('texture' or 'object') and, for objects, "
            f"optionally 'moves' (true/false), e.g. {{\"kind\": \"object\", \"moves\": true}}; got {meta!r}"
        )
    return CategoryInfo(name, meta["kind"], meta.get("moves", False))
