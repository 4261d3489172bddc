"""`RandomDefects` inside a real kornia pipeline, with kornia's own transforms."""

from __future__ import annotations

import kornia.augmentation as K
import torch

from ssad.synth import SynthConfig, apply
from ssad.synth.kornia import RandomDefects

CONFIG = SynthConfig(class_probs=(0.2, 0.4, 0.4), family_probs=(0.6, 0.4, 0.0))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 64, 64, generator=g), torch.zeros(16, 1, 64, 64)


def test_defects_follow_kornia_geometry_and_mark_the_masks():
    torch.manual_seed(0)
    images, masks = _batch()
    masks[:, :, :8, :8] = 1  # a region the user already marked
    pipeline = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0), RandomDefects(CONFIG),
                                        data_keys=["input", "mask"])
    out, out_masks = pipeline(images, masks)
    defects = pipeline[1]
    params = {k: v for k, v in defects._params.items() if isinstance(v, torch.Tensor)}
    expected, defect_masks = apply(images.flip(-1), params, CONFIG)  # the native core on the flipped batch
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(out_masks > 0, defect_masks | (masks.flip(-1) > 0))
    labels = defects.labels
    assert torch.equal(defect_masks.flatten(1).any(dim=1), labels > 0) and set(labels.tolist()) <= {0, 1, 2}


def test_replay_with_kornia_params_and_other_transforms_after():
    torch.manual_seed(1)
    images, masks = _batch()
    pipeline = K.AugmentationSequential(
        K.RandomAffine(degrees=20, p=0.5), RandomDefects(CONFIG), K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.5),
        data_keys=["input", "mask"],
    )
    first = pipeline(images, masks)
    again = pipeline(images, masks, params=pipeline._params)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert first[1].flatten(1).amax(dim=1).gt(0).equal(pipeline[1].labels > 0)
