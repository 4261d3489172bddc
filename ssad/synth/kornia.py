"""`RandomDefects`: the synthesizer as a kornia augmentation, for kornia pipelines.

    import kornia.augmentation as K
    from ssad.synth.kornia import RandomDefects

    pipeline = K.AugmentationSequential(
        K.RandomHorizontalFlip(), RandomDefects(), K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.3),
        data_keys=["input", "mask"],
    )
    images, masks = pipeline(images, masks)          # masks: the given ones plus the defects
    labels = pipeline[1].labels                      # (B,) pretext labels of the last call
    again = pipeline(images, masks, params=pipeline._params)  # the same defects, replayed
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import IntensityAugmentationBase2D
from torch import Tensor

from .config import SynthConfig
from .functional import apply
from .params import sample_params

__all__ = ["RandomDefects"]

class RandomDefects(IntensityAugmentationBase2D):
    """Synthetic defects (`ssad.synth`) in a kornia pipeline: every sample drawn normal (label 0)
    or given a defect of ``config`` (labels 1, 2, ... as `DefectSynthesizer`).

    Images: (B, C, H, W) float in [0, 1], C in {1, 3}. Masks (``data_keys`` "mask"): the defect
    pixels are added to the given masks (set to 1), so a segmentation target marks them.
    ``labels`` holds the last call's labels; ``params`` (kornia's ``_params``) replay a call.

    Limits next to the native `DefectSynthesizer`: parameters are drawn with torch's global
    random generator on the CPU and copied to the images' device (kornia's convention: no
    ``torch.Generator``, no `SampleStreams`); float input only (no uint8); defects go anywhere in
    the image (kornia passes no object masks); kornia's ``p`` gate is fixed at 1, since the
    label itself says which samples stay normal (``config.class_probs``); the masks come from
    the image pass (kornia containers run "input" first).
    """

    def __init__(self, config: SynthConfig | None = None, keepdim: bool = False) -> None:
        super().__init__(p=1.0, same_on_batch=False, keepdim=keepdim)
        self.config = config or SynthConfig()

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return sample_params(tuple(batch_shape), self.config)

    def apply_transform(self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any],
                        transform: Tensor | None = None) -> Tensor:
        # kornia adds its own entries (gates, shapes, flags) to the params; apply reads only ours.
        ours = {k: v.to(input.device) for k, v in params.items() if isinstance(v, Tensor)}
        out, self._defect_masks = apply(input, ours, self.config)  # kept for the masks' pass
        return out

    def apply_transform_mask(self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any],
                             transform: Tensor | None = None) -> Tensor:
        defects = getattr(self, "_defect_masks", None)
        if defects is None or defects.shape[0] != input.shape[0]:
            raise ValueError("RandomDefects makes its masks from the images: transform the images first.")
        return torch.where(defects, torch.ones((), dtype=input.dtype, device=input.device), input)

    @property
    def labels(self) -> Tensor:
        """(B,) int64 labels of the last call."""
        return self._params["labels"]
