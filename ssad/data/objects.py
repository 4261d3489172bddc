"""Object masks of a category: where on its images synthetic defects may be centred.

Computed once at load, on the data's device, with `ssad.synth.object_mask`:

- texture: all ones, `(1, 1, S, S)`;
- still object: one mask for the category, `(1, 1, S, S)`: the pixels that the per-image estimates
  mark in a majority of training images (their union if no pixel has a majority);
- moving object: one mask per training image, `(N, 1, S, S)`.

Fallbacks, so that a failed estimate never hides where defects may go: an image on which no object
is found gets all ones (`object_mask` does it, for still and moving objects alike; a warning when
that happens on most training images); a still object's combined mask that covers less than
`MIN_OBJECT_SHARE` of the image is replaced by all ones, with a warning, whoever stated the kind
(the kind stays an object). For a category whose kind nobody stated, `estimate_kind` reads it from
the same per-image masks (the rule is in `ssad.data.categories`).
"""

from __future__ import annotations

import inspect
import warnings

import torch

from ssad.data.categories import (
    CATEGORY_FILE,
    MIN_OBJECT_SHARE,
    CategoryInfo,
    KindEstimate,
    decide_kind,
)
from ssad.synth.object_mask import object_mask

__all__ = [
    "ESTIMATE_SPECK_PX",
    "MARGIN",
    "category_object_masks",
    "combine_still_masks",
    "estimate_kind",
    "estimate_object_masks",
    "kind_and_object_masks",
]

_CHUNK = 64  # images per object_mask call, to bound the float temporaries at load

#: Margin around the estimated object, as a fraction of the image side. A moving object's mask is its
#: own image's, so it must also reach parts that real defects remove (a missing tip or bite leaves
#: backdrop where the object should be); a still object's mask is voted over the training set.
#: Chosen on bench/object_mask.py (bottle, screw, demo categories).
MARGIN = {"still": 0.035, "moving": 0.05}

#: Specks up to this many pixels are removed from the masks the kind is estimated on. `object_mask`'s
#: own speck removal (1% of the side) rounds to none below 200 px, where the grain pixels of a surface
#: that stand out join into a large hull that looks like a still object's mask (demo_texture at 128
#: px: mean IoU 0.64 with its majority mask, read as a still object); removing 3-pixel specks, as
#: `object_mask` does from 200 px up, leaves a surface little or nothing (IoU 0.00, a texture) and
#: the objects measured (bottle, screw, demo_object, demo_moving, demo_dark) the same reading.
ESTIMATE_SPECK_PX = 3
_DEFAULT_SPECK = inspect.signature(object_mask).parameters["speck"].default


def estimate_object_masks(images: torch.Tensor, moves: bool, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """`object_mask` of `images` `(N, 3, S, S) uint8`, a chunk at a time to bound the float temporaries,
    with the margin for objects that move or not (`MARGIN`); `options` go to `object_mask`.

    Returns masks `(N, 1, S, S) bool` and fallback `(N,) bool` (True where no object was found).
    """
    options = {"margin": MARGIN["moving" if moves else "still"], **options}
    estimates = [object_mask(chunk, return_info=True, **options) for chunk in images.split(_CHUNK)]
    return torch.cat([m for m, _ in estimates]), torch.cat([i["fallback"] for _, i in estimates])


def estimate_kind(train: torch.Tensor, name: str, **options) -> KindEstimate:
    """The kind of a category read from its training images `train` `(N, 3, S, S) uint8` (any device).

    Estimates each image's object mask with the still-object margin and specks up to
    `ESTIMATE_SPECK_PX` removed (`options` go to `object_mask` and win), and applies `decide_kind`
    (rule and thresholds: `ssad.data.categories`). `name` is the category's, for the result and its
    sentence.
    """
    options = {**_estimate_options(train.shape[-1]), **options}
    return _measure(*estimate_object_masks(train, moves=False, **options), name)


def kind_and_object_masks(
    train: torch.Tensor, info: CategoryInfo, **options
) -> tuple[CategoryInfo, torch.Tensor, KindEstimate | None]:
    """The kind used for `train` `(N, 3, S, S) uint8` and its object masks (as `category_object_masks`).

    A stated kind (`info.source` "category.json" or "mvtec_table") is kept and the estimate is None;
    an unstated one (`"estimated"`) is read by `estimate_kind`, whose per-image masks then also make
    a still object's mask where they are the ones `object_mask` gives by default (from 200 px up),
    so that they are not estimated twice. Returns `(info, masks, estimate)`.
    """
    if info.source != "estimated":
        return info, category_object_masks(train, info, **options), None
    estimate_options = {**_estimate_options(train.shape[-1]), **options}
    still = estimate_object_masks(train, moves=False, **estimate_options)
    estimate = _measure(*still, info.name)
    reuse = still if estimate_options == options else None
    return estimate.info, _object_masks(train, estimate.info, reuse, **options), estimate


def category_object_masks(train: torch.Tensor, info: CategoryInfo, **options) -> torch.Tensor:
    """Object masks for `train` `(N, 3, S, S) uint8`: `(N, 1, S, S)` bool if the object moves, else `(1, 1, S, S)` bool.

    Uses `info`'s kind as given (see `kind_and_object_masks` for an unstated one). `options` go to
    `object_mask`. Warns when the estimate fell back to the whole image on most training images, and
    when a still object's combined mask covers less than `MIN_OBJECT_SHARE` of the image (it is
    then all ones).
    """
    return _object_masks(train, info, None, **options)


def combine_still_masks(masks: torch.Tensor) -> torch.Tensor:
    """One mask `(1, 1, S, S) bool` from per-image masks `(N, 1, S, S) bool`: majority vote, else union."""
    majority = masks.float().mean(dim=0, keepdim=True) > 0.5
    return torch.where(majority.any(), majority, masks.any(dim=0, keepdim=True))


def _object_masks(
    train: torch.Tensor, info: CategoryInfo, still: tuple[torch.Tensor, torch.Tensor] | None, **options
) -> torch.Tensor:
    """`category_object_masks`, reusing `still` (`estimate_object_masks(train, moves=False)`) if given."""
    size = train.shape[-1]
    if info.kind == "texture":
        return torch.ones(1, 1, size, size, dtype=torch.bool, device=train.device)
    if info.moves or still is None:
        still = estimate_object_masks(train, info.moves, **options)
    masks, fallback = still
    fallbacks = int(fallback.sum())
    if 2 * fallbacks > len(train):
        warnings.warn(
            f"{info.name}: no object found on {fallbacks} of {len(train)} training images; defects may be "
            "placed anywhere on them. If the category is a texture, mark it so in "
            f"{info.name}/{CATEGORY_FILE} ({{\"kind\": \"texture\"}}).",
            stacklevel=4,
        )
    if info.moves:
        return masks
    combined = combine_still_masks(masks)
    share = float(combined.float().mean())
    if share < MIN_OBJECT_SHARE:
        warnings.warn(
            f"{info.name}: the object mask estimated from the {len(train)} training images covers only "
            f"{share:.3f} of the image (below {MIN_OBJECT_SHARE}), too little to trust: defects may be placed "
            "anywhere (mask all ones); the category stays an object. If it is a surface that fills the "
            f"frame, mark it so in {info.name}/{CATEGORY_FILE} ({{\"kind\": \"texture\"}}).",
            stacklevel=4,
        )
        return torch.ones_like(combined)
    return combined


def _estimate_options(side: int) -> dict[str, float]:
    """`object_mask` options for the kind's estimate on images of `side` px: {} where its default speck
    removal already takes `ESTIMATE_SPECK_PX` (its opening kernel is the odd size at most
    `speck * side`, so 3 px from `speck * side >= 2`), else a speck of `ESTIMATE_SPECK_PX` pixels."""
    return {} if _DEFAULT_SPECK * side >= ESTIMATE_SPECK_PX - 1 else {"speck": ESTIMATE_SPECK_PX / side}


def _measure(masks: torch.Tensor, fallback: torch.Tensor, name: str) -> KindEstimate:
    """`decide_kind` on per-image masks `(N, 1, S, S) bool` and their fallback flags `(N,) bool`,
    measured on the images where an object was found (all of them if there is none)."""
    found = ~fallback
    n_found = int(found.sum())
    if n_found:
        masks = masks[found]
    shares = masks.flatten(1).float().mean(dim=1)
    majority = masks.float().mean(dim=0, keepdim=True) > 0.5
    iou = (masks & majority).flatten(1).sum(1).float() / (masks | majority).flatten(1).sum(1).clamp_min(1).float()
    low, high = shares.quantile(torch.tensor([0.1, 0.9], device=shares.device)).tolist()
    return decide_kind(
        name,
        n_images=len(fallback),
        found=n_found,
        mean_share=float(shares.mean()),
        majority_share=float(majority.float().mean()),
        size_ratio=low / high if high > 0 else 1.0,
        mean_iou=float(iou.mean()),
    )
