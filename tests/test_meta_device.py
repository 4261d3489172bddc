"""The data side runs on the meta device, where tensors have shapes and no values.

An op there fails if it reads a value back to the host (``.item()``, ``bool(t)``, ``nonzero``,
``.cpu()``) or mixes in a tensor made on the CPU: the two mistakes that stall a GPU step or break
it, caught here without a GPU. Every sample config, input dtype and random source goes through,
and a fitted detector's scoring with each patch scorer.
"""

from __future__ import annotations

import pytest
import torch

from ssad.config import ScoreConfig
from ssad.detector import fit_detector
from ssad.model import create_model
from ssad.score import PATCH_SCORERS
from ssad.synth import DefectSynthesizer, SampleStreams, SynthConfig, object_mask
from ssad.synth.kornia import RandomDefects
from ssad.train import augment_normals

META = torch.device("meta")
CONFIGS = {
    "spec": SynthConfig(check_values=False),
    "families": SynthConfig(family_probs=(0.4, 0.3, 0.3), pretext="families", check_values=False),
    "texture fill": SynthConfig(fill_probs=(1.0, 0.0, 0.0), family_probs=(0.5, 0.5, 0.0), perlin_fill_probs=(0.5, 0.5),
                                check_values=False),
}


def test_meta_catches_read_backs_and_cpu_tensors():
    """What the tests below rely on."""
    x = torch.empty(4, device=META)
    with pytest.raises(RuntimeError, match="meta"):
        x.sum().item()
    with pytest.raises(RuntimeError, match="device"):
        x + torch.ones(4)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("streams", [False, True], ids=["global-rng", "sample-streams"])
@pytest.mark.parametrize("sources", [False, True], ids=["own-images", "source-images"])
def test_synthesizer_stays_on_the_device(name, dtype, streams, sources):
    images = torch.empty(6, 3, 64, 64, dtype=dtype, device=META)
    object_masks = torch.empty(6, 1, 64, 64, dtype=torch.bool, device=META)
    generator = SampleStreams(0, torch.arange(6, device=META)) if streams else None
    out = DefectSynthesizer(CONFIGS[name])(images, object_masks, images.clone() if sources else None, generator)
    assert out.images.device == META and out.images.shape == images.shape and out.images.dtype == dtype
    assert out.masks.shape == (6, 1, 64, 64) and out.labels.shape == (6,)
    assert all(value.device == META for value in out.params.values())


def test_object_masks_augmentation_and_kornia_stay_on_the_device():
    images = torch.empty(4, 3, 64, 64, dtype=torch.uint8, device=META)
    assert object_mask(images).device == META
    masks, info = object_mask(images, return_info=True)
    assert masks.shape == (4, 1, 64, 64) and all(v.device == META for v in info.values() if torch.is_tensor(v))
    moved, moved_masks = augment_normals(images, 0.1, True, None, rotate=True, object_masks=masks[:1])
    assert moved.device == moved_masks.device == META and moved_masks.shape == (4, 1, 64, 64)
    assert RandomDefects()(moved).device == META


@pytest.mark.parametrize("patch_scorer", PATCH_SCORERS)
def test_detector_scores_on_the_device(patch_scorer):
    """A detector fitted on the CPU, moved to the device, scores any size without leaving it."""
    torch.manual_seed(0)
    model, _ = create_model("scratch")
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8)
    config = ScoreConfig(image_score="density", patch_scorer=patch_scorer, patch_memory=300)
    detector = fit_detector(model, train, config, moves=False).to(META)
    for dtype in (torch.uint8, torch.float32):
        out = detector(torch.empty(3, 3, 90, 70, dtype=dtype, device=META))
        assert all(t.device == META for t in out)
        assert out.scores.shape == (3,) and out.maps.shape == out.defect_masks.shape == (3, 1, 90, 70)
