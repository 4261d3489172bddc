"""Object masks of a category: where on its images synthetic defects may be centred.

Computed once at load, on the data's device, with `ssad.synth.object_mask`:

- texture: all ones, `(1, 1, S, S)`;
- still object: one mask for the category, `(1, 1, S, S)`: the pixels that the per-image estimates
  mark in a majority of training images (their union if no pixel has a majority);
- moving object: one mask per training image, `(N, 1, S, S)`.
"""

from __future__ import annotations

import warnings

import torch

from ssad.data.categories import CategoryInfo
from ssad.synth.object_mask import object_mask

__all__ = ["MARGIN", "category_object_masks", "combine_still_masks", "estimate_object_masks"]

_CHUNK = 64  # images per object_mask call, to bound the float temporaries at load

#: Margin around the estimated object, as a fraction of the image side. A moving object's mask is its
#: own image's, so it must also reach parts that real defects remove (a missing tip or bite leaves
#: backdrop where the object should be); a still object's mask is voted over the training set.
#: Chosen on bench/object_mask.py (bottle, screw, demo categories).
MARGIN = {"still": 0.035, "moving": 0.05}


def estimate_object_masks(images: torch.Tensor, moves: bool, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """`object_mask` of `images` `(N, 3, S, S) uint8`, a chunk at a time to bound the float temporaries,
    with the margin for objects that move or not (`MARGIN`); `options` go to `object_mask`.

    Returns masks `(N, 1, S, S) bool` and fallback `(N,) bool` (True where no object was found).
    """
    options = {"margin": MARGIN["moving" if moves else "still"], **options}
    estimates = [object_mask(chunk, return_info=True, **options) for chunk in images.split(_CHUNK)]
    return torch.cat([m for m, _ in estimates]), torch.cat([i["fallback"] for _, i in estimates])


def category_object_masks(train: torch.Tensor, info: CategoryInfo, **options) -> torch.Tensor:
    """Object masks for `train` `(N, 3, S, S) uint8`: `(N, 1, S, S)` bool if the object moves, else `(1, 1, S, S)` bool.

    `options` go to `object_mask`. Warns when the estimate fell back to the whole image on most
    training images.
    """
    size = train.shape[-1]
    if info.kind == "texture":
        return torch.ones(1, 1, size, size, dtype=torch.bool, device=train.device)
    masks, fallback = estimate_object_masks(train, info.moves, **options)
    fallbacks = int(fallback.sum())
    if 2 * fallbacks > len(train):
        warnings.warn(
            f"{info.name}: no object found on {fallbacks} of {len(train)} training images; defects may be "
            "placed anywhere on them. If the category is a texture, mark it so in "
            f"{info.name}/category.json ({{\"kind\": \"texture\"}}).",
            stacklevel=3,
        )
    return masks if info.moves else combine_still_masks(masks)


def combine_still_masks(masks: torch.Tensor) -> torch.Tensor:
    """One mask `(1, 1, S, S) bool` from per-image masks `(N, 1, S, S) bool`: majority vote, else union."""
    majority = masks.float().mean(dim=0, keepdim=True) > 0.5
    return torch.where(majority.any(), majority, masks.any(dim=0, keepdim=True))
