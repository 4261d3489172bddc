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
from ssad.synth import object_mask

__all__ = ["category_object_masks", "combine_still_masks"]

_CHUNK = 64  # images per object_mask call, to bound the float temporaries at load


def category_object_masks(train: torch.Tensor, info: CategoryInfo) -> torch.Tensor:
    """Object masks for `train` `(N, 3, S, S) uint8`: `(N, 1, S, S)` bool if the object moves, else `(1, 1, S, S)` bool.

    Warns when the estimate fell back to the whole image on most training images.
    """
    size = train.shape[-1]
    if info.kind == "texture":
        return torch.ones(1, 1, size, size, dtype=torch.bool, device=train.device)
    estimates = [object_mask(chunk) for chunk in train.split(_CHUNK)]
    masks = torch.cat([m for m, _ in estimates])
    fallbacks = int(torch.cat([i["fallback"] for _, i in estimates]).sum())
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
