"""What kind of product a category shows: texture, still object or moving object, and who said so.

The kind decides where synthetic defects may go (object mask) and what fills textures:

- texture (carpet, grid, leather, tile, wood): the whole image is product; object mask all ones; the
  synthesizer cuts its fill from images of other categories.
- still object (bottle, cable, ...): the object sits at the same place in every image, so one object
  mask serves the whole category.
- moving object (hazelnut, screw, metal_nut): position or rotation varies, one mask per image.

Who decides, first that applies (`CategoryInfo.source`, `KindSource`):

1. "category.json": a `category.json` file in the category folder::

       {"kind": "texture"}                    # or
       {"kind": "object", "moves": true}

   It wins over the built-in table, so it can also correct a built-in entry. `ssad.data.demo`
   writes one for most demo categories.
2. "mvtec_table": the 15 MVTec AD names are built in (`MVTEC_CATEGORIES`).
3. "estimated": any other folder is read from its training images (`ssad.data.objects.estimate_kind`,
   once `load_category` has decoded them). Each image gets an object mask (`object_mask` with the
   still-object margin, specks up to 3 px removed); measured on the images where an object was
   found, `decide_kind` reads, first that applies:

   a. a texture when no object was found on more than half of the images;
   b. a texture when the masks cover on average less than `MIN_OBJECT_SHARE` (0.02) of the image;
   c. a texture when the majority mask (the pixels that more than half of the masks hold) covers
      more than `FULL_FRAME_SHARE` (0.9) of the image;
   d. a still object when the masks agree with the majority mask: mean IoU at least
      `STILL_MIN_IOU` (0.6);
   e. else the masks disagree: a texture when they also vary in size (the 10th-percentile mask's
      share of the image is below `MIN_SIZE_RATIO` (0.75) times the 90th percentile's: masks that
      follow a surface's grain), a moving object when they keep it (one object, moved or turned).

   A texture so read is "a surface that fills the frame: mask all ones, defects cut from other
   sources". Measured at 128 and 256 px: the still bottle, demo_object and demo_dark show a mean IoU
   of 0.80-0.99, the moving screw and demo_moving 0.29-0.34 with a size ratio of 0.91-0.96;
   frame-filling surfaces (demo_texture, demo_strip) fall under a, b or e (size ratio 0.08-0.23).
   `load_category` warns with the sentence that says what was measured and read
   (`KindEstimate.reason`, also `CategoryData.kind_reason`); a `category.json` overrides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ssad.data.errors import BadDataError

__all__ = [
    "CATEGORY_FILE",
    "FULL_FRAME_SHARE",
    "MIN_OBJECT_SHARE",
    "MIN_SIZE_RATIO",
    "MVTEC_CATEGORIES",
    "STILL_MIN_IOU",
    "CategoryInfo",
    "CategoryKind",
    "KindEstimate",
    "KindSource",
    "category_info",
    "decide_kind",
    "describe_kind",
]

CategoryKind = Literal["texture", "object"]

KindSource = Literal["category.json", "mvtec_table", "estimated"]
"""Who decided a category's kind: its `category.json`, the built-in MVTec AD table, or the estimate
from its training images."""

CATEGORY_FILE = "category.json"
"""Name of the optional per-category metadata file, inside `<root>/<category>/`."""

#: An object mask covering less of the image than this is no object (nothing stood out of a surface):
#: the objects measured cover 0.17 (demo_moving) to 0.79 (bottle) with their margin. Also the least a
#: still object's combined mask must cover before training trusts it (`ssad.data.objects`).
MIN_OBJECT_SHARE = 0.02
#: A majority mask covering more than this is the frame, not an object on a backdrop: the largest
#: object measured (bottle, a disc touching the four sides) covers 0.79.
FULL_FRAME_SHARE = 0.9
#: Masks that disagree keep their size when one object moves: the 10th-percentile mask over the
#: 90th-percentile one is 0.91 (screw) to 0.96 (demo_moving); surfaces' masks show 0.08-0.23.
MIN_SIZE_RATIO = 0.75
#: Still objects' masks overlap their majority mask with a mean IoU of 0.80 (demo_dark read at 128 px
#: from 256 px pictures) to 0.99 (bottle); moving ones 0.29 (screw) to 0.34 (demo_moving): about halfway.
STILL_MIN_IOU = 0.6


@dataclass(frozen=True)
class CategoryInfo:
    """A category's name and kind. `moves` is True for objects whose position/rotation varies.

    `source` says who decided the kind (see the module docstring). `category_info` gives
    `source="estimated"` with a provisional still object for a category that neither a
    `category.json` nor the table describes; `load_category` replaces it with the estimate from the
    training images. Made by hand (the demo's table, tests) it reads as a stated kind.
    """

    name: str
    kind: CategoryKind
    moves: bool = False
    source: KindSource = "category.json"


_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
_STILL_OBJECTS = ("bottle", "cable", "capsule", "pill", "toothbrush", "transistor", "zipper")
_MOVING_OBJECTS = ("hazelnut", "metal_nut", "screw")

MVTEC_CATEGORIES: dict[str, CategoryInfo] = dict(
    sorted(
        [(n, CategoryInfo(n, "texture", source="mvtec_table")) for n in _TEXTURES]
        + [(n, CategoryInfo(n, "object", source="mvtec_table")) for n in _STILL_OBJECTS]
        + [(n, CategoryInfo(n, "object", moves=True, source="mvtec_table")) for n in _MOVING_OBJECTS]
    )
)
"""The 15 MVTec AD categories, by name, in alphabetical order."""


def category_info(category_dir: Path) -> CategoryInfo:
    """Kind of the category stored in `category_dir` (`<root>/<category>`).

    Order: its `category.json` if present, else the MVTec AD table, else `source="estimated"` with a
    provisional still object (the estimate needs the decoded images: `load_category` makes it).
    Raises `BadDataError` naming the file when `category.json` is not valid.
    """
    name = category_dir.name
    meta_path = category_dir / CATEGORY_FILE
    if not meta_path.is_file():
        return MVTEC_CATEGORIES.get(name, CategoryInfo(name, "object", source="estimated"))
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
    return CategoryInfo(name, meta["kind"], meta.get("moves", False), source="category.json")


@dataclass(frozen=True)
class KindEstimate:
    """What a category's training images showed, and the kind `decide_kind` read from it.

    The shares and the IoU are measured on the images where an object was found (all images when
    there is none). Attributes:
        info: the kind read, with `source="estimated"`.
        n_images: training images measured; `found`: those where an object was found.
        mean_share: the masks' mean share of the image, in [0, 1].
        majority_share: share of the image held by more than half of the masks.
        size_ratio: 10th-percentile over 90th-percentile mask share, in [0, 1] (1: equal sizes).
        mean_iou: mean IoU of each mask with the majority mask, in [0, 1].
        reason: one sentence for the user: what was measured, what was read, how to override.
    """

    info: CategoryInfo
    n_images: int
    found: int
    mean_share: float
    majority_share: float
    size_ratio: float
    mean_iou: float
    reason: str


def decide_kind(
    name: str, n_images: int, found: int, mean_share: float, majority_share: float, size_ratio: float,
    mean_iou: float,
) -> KindEstimate:
    """The rule of the module docstring, on measured values (see `KindEstimate` for their meaning)."""
    masks = f"the object masks estimated on the {n_images} training images"
    surface = "read as a surface that fills the frame"
    moves = False
    if 2 * (n_images - found) > n_images:
        evidence, reading = f"no object was found on {n_images - found} of the {n_images} training images", surface
    elif mean_share < MIN_OBJECT_SHARE:
        evidence, reading = f"{masks} cover {mean_share:.3f} of the image on average (below {MIN_OBJECT_SHARE})", surface
    elif majority_share > FULL_FRAME_SHARE:
        evidence = (f"the pixels that most of {masks} hold cover {majority_share:.3f} of the image "
                    f"(above {FULL_FRAME_SHARE})")
        reading = surface
    elif mean_iou >= STILL_MIN_IOU:
        evidence = (f"{masks} cover {mean_share:.3f} of the image and agree with the pixels most of them hold "
                    f"(mean IoU {mean_iou:.2f}, at least {STILL_MIN_IOU})")
        reading = "read as"
    elif size_ratio < MIN_SIZE_RATIO:
        evidence = (f"{masks} disagree with the pixels most of them hold (mean IoU {mean_iou:.2f}, below "
                    f"{STILL_MIN_IOU}) and vary in size (the 10th percentile covers {size_ratio:.2f} of what the 90th "
                    f"does, below {MIN_SIZE_RATIO}): they follow a surface's grain, not an object")
        reading = surface
    else:
        evidence = (f"{masks} cover {mean_share:.3f} of the image on average, keep their size (ratio "
                    f"{size_ratio:.2f}, at least {MIN_SIZE_RATIO}) but disagree with the pixels most of them hold "
                    f"(mean IoU {mean_iou:.2f}, below {STILL_MIN_IOU})")
        reading, moves = "read as", True
    if reading == surface:
        info = CategoryInfo(name, "texture", source="estimated")
    else:
        info = CategoryInfo(name, "object", moves=moves, source="estimated")
    reason = (f"no {CATEGORY_FILE}: {evidence}, {reading}: {describe_kind(info)}. "
              f"Write {name}/{CATEGORY_FILE} to override, e.g. {_example(info)}.")
    return KindEstimate(info, n_images, found, mean_share, majority_share, size_ratio, mean_iou, reason)


def describe_kind(info: CategoryInfo) -> str:
    """The kind in words, with what it means for training, e.g. "a texture (object mask all ones, ...)"."""
    if info.kind == "texture":
        return "a texture (object mask all ones, defects cut from other sources)"
    if info.moves:
        return "an object that moves (one object mask per image)"
    return "an object that sits still (one object mask for the category)"


def _example(info: CategoryInfo) -> str:
    """A `category.json` content for a kind other than `info`'s, as the override hint."""
    if info.kind == "texture":
        return '{"kind": "object", "moves": true}'
    return '{"kind": "texture"}'
