"""Image scores, the synthetic validation set, and the settings chosen on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssad.config import ScoreConfig, ValidationConfig
from ssad.data import load_category, make_demo_dataset
from ssad.detector import fit_detector, load_detector
from ssad.image_score import IMAGE_SCORES, STATISTICS, ImageScore, map_statistics
from ssad.model import create_model
from ssad.selection import RULE, CandidateFigures, choose, select_and_fit, validation_plan, validation_set
from ssad.validation import VALIDATION_FAMILIES, synthetic_defects

#: A small, fast scorer for tests: few memory features.
SCORE = ScoreConfig(patch_memory=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, image_size=96, n_train=20, n_test=2, categories=["demo_object", "demo_moving"])
    return root


def load(root: Path, category: str, cache: Path):
    return lambda size: load_category(root, category, image_size=size, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("scratch")[0].eval()


def test_map_statistics_tell_a_peak_from_an_area():
    maps = torch.zeros(2, 1, 20, 20)
    maps[0, 0, 5, 5] = 10.0  # one hot pixel
    maps[1, 0, :4, :] = 5.0  # a hot area of 80 pixels, above the top 1% (4 pixels)
    stats = map_statistics(maps)
    assert stats.shape == (2, 2)
    torch.testing.assert_close(stats[:, 0], torch.tensor([10.0, 5.0]))  # the maximum prefers the peak
    torch.testing.assert_close(stats[:, 1], torch.tensor([2.5, 5.0]))  # the top-1% mean the area


def test_fusion_standardises_each_statistic_on_normal_images():
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(200, 3, generator=generator) * torch.tensor([1.0, 10.0, 1000.0]) + torch.tensor([5.0, 0, 3e4])
    fusion = ImageScore("fusion").calibrate(normal)
    standard = fusion.standardise(normal)
    # Median 0 and interquartile range that of a standard normal, per statistic, whatever its units.
    torch.testing.assert_close(standard.median(dim=0).values, torch.zeros(3), atol=0.02, rtol=0)
    spread = standard.quantile(0.75, dim=0) - standard.quantile(0.25, dim=0)
    torch.testing.assert_close(spread, torch.full((3,), 1.349), atol=0.02, rtol=0)
    # So no statistic dominates: one standard unit up in any of them moves the fused score alike.
    base = normal.median(dim=0).values
    steps = [fusion((base + torch.eye(3)[i] * fusion.spread)[None]) - fusion(base[None]) for i in range(3)]
    torch.testing.assert_close(torch.cat(steps), torch.full((3,), 1 / 3), atol=0.01, rtol=0)
    # The single statistics are read as they are, with no calibration.
    for i, kind in enumerate(STATISTICS):
        torch.testing.assert_close(ImageScore(kind)(normal), normal[:, i])
    with pytest.raises(RuntimeError, match="calibrate"):
        ImageScore("fusion")(normal)
    with pytest.raises(ValueError, match="image score 'mean'"):
        ImageScore("mean")


def test_the_rule_prefers_the_best_mean_then_the_smaller_size_then_the_simpler_score():
    def figures(size, kind, a, b, c):
        return CandidateFigures(size, kind, a, b, c)

    best = figures(256, "map_top", 0.9, 0.9, 0.9)
    assert choose([figures(128, "map_max", 0.9, 0.9, 0.8), best, figures(320, "fusion", 0.8, 0.9, 0.9)]) == best
    tied = [figures(320, "map_max", 0.9, 0.9, 0.9), figures(256, "fusion", 0.9, 0.9, 0.9005),
            figures(256, "density", 0.9, 0.9, 0.9)]
    assert choose(tied) == tied[2]  # within the tie: 256 px, then density before fusion
    assert "mean of validation image AUROC, pixel AUROC and AUPRO" in RULE


def test_synthetic_defects_are_the_same_at_every_size_and_change_only_their_masks(demo, tmp_path):
    positions = torch.arange(8)
    reference = load(demo, "demo_moving", tmp_path)(96)
    where = {}
    for size in (64, 96):
        data = load(demo, "demo_moving", tmp_path)(size)
        made = validation_set(data, positions, ("perlin", "poisson"), seed=3,
                              drawn_on=reference.object_masks_at(positions))
        assert made.images.shape == data.train[:8].shape and made.images.dtype == torch.uint8
        assert made.masks.flatten(1).any(dim=1).all()  # every copy has a defect
        assert made.family.tolist() == [0, 1] * 4  # the families take turns
        # No colour jitter: a Perlin copy differs only under its mask; a Poisson blend fades out
        # over its box, its mask holding where it changed the image by a tenth of its most.
        change = (made.images.float() - data.train[:8].float()).abs().amax(dim=1, keepdim=True)
        perlin = made.family == 0
        assert not change[perlin][~made.masks[perlin]].any()
        for i in (~perlin).nonzero().flatten():
            assert change[i][~made.masks[i]].max() <= 0.1 * change[i].max() + 1
        # Each defect's place (its centroid, as a fraction of the side) and its share of the image.
        m = made.masks[:, 0].float()
        ramp = (torch.arange(size) + 0.5) / size
        area = m.sum(dim=(1, 2))
        where[size] = torch.stack([(m * ramp[:, None]).sum((1, 2)) / area, (m * ramp).sum((1, 2)) / area,
                                   area / size**2], dim=1)
    # Drawn once on the reference and replayed: the same defects at both sizes, scaled.
    torch.testing.assert_close(where[64][:, :2], where[96][:, :2], atol=0.03, rtol=0)
    large = where[96][:, 2] > 0.002  # a defect of a few pixels cannot keep its share at 64 px
    torch.testing.assert_close(where[64][large, 2], where[96][large, 2], rtol=0.5, atol=0)
    with pytest.raises(ValueError, match="validation families"):
        synthetic_defects(data.train[:2], positions[:2], data.object_masks[:2], data.train[:2], data.train[:2],
                          families=("cutpaste",))
    assert set(VALIDATION_FAMILIES) == {"perlin", "poisson"}


def test_select_and_fit_chooses_among_the_candidates_and_fits_on_every_image(demo, tmp_path, model):
    validation = ValidationConfig(sizes=(0, 96), images=10)
    detector, selection = select_and_fit(model, load(demo, "demo_object", tmp_path), SCORE, validation,
                                         training_size=64, progress=False)
    assert [(f.image_size, f.image_score) for f in selection.figures] == \
        [(size, kind) for size in (64, 96) for kind in IMAGE_SCORES]
    chosen = choose(selection.figures)
    assert (selection.image_size, selection.image_score) == (chosen.image_size, chosen.image_score)
    assert (detector.image_size, detector.image_score.kind) == (chosen.image_size, chosen.image_score)
    assert selection.decided_by == {"image_size": "validation", "map_source": "validation", "image_score": "validation"}
    assert selection.map_source == "memory"  # the network has no head: the memory is the one source
    assert (selection.folds, selection.normal_images, selection.defective_images) == (5, 20, 10)
    assert all(0 <= f.image_auroc <= 1 and 0 < f.aupro <= 1 for f in selection.figures)
    # The final scorers hold every training image: a kNN memory of all their patches.
    data = load(demo, "demo_object", tmp_path)(chosen.image_size)
    scored = detector(data.train)
    assert torch.isfinite(scored.scores).all()
    assert torch.isfinite(torch.stack([detector.image_threshold_normal, detector.pixel_threshold_normal])).all()
    # The plan: folds cover every image once; the validation images are a seeded choice.
    folds, positions = validation_plan(20, validation)
    assert sorted(torch.cat(folds).tolist()) == list(range(20)) and len(positions) == 10
    assert torch.equal(validation_plan(20, validation)[1], positions)


def test_settings_given_in_the_config_are_not_chosen(demo, tmp_path, model):
    score = ScoreConfig(patch_memory=300, image_size=96, image_score="fusion")
    detector, selection = select_and_fit(model, load(demo, "demo_object", tmp_path), score,
                                         ValidationConfig(images=6), training_size=64, progress=False)
    assert [(f.image_size, f.image_score) for f in selection.figures] == [(96, "fusion")]
    assert selection.decided_by == {"image_size": "config", "map_source": "validation", "image_score": "config"}
    assert detector.image_size == 96 and detector.image_score.calibrated
    # The fusion's standardisation travels with the detector.
    detector.save(tmp_path / "detector.pt")
    loaded = load_detector(tmp_path / "detector.pt")
    images = load(demo, "demo_object", tmp_path)(96).test
    torch.testing.assert_close(loaded(images).scores, detector(images).scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.image_score.centre, detector.image_score.centre)


def test_too_few_images_to_validate_fall_back_to_the_first_candidates(tmp_path, model):
    make_demo_dataset(tmp_path / "tiny", image_size=64, n_train=6, n_test=1, categories=["demo_object"])
    detector, selection = select_and_fit(model, load(tmp_path / "tiny", "demo_object", tmp_path), SCORE,
                                         ValidationConfig(sizes=(0, 96)), training_size=64, progress=False)
    assert (selection.image_size, selection.image_score) == (64, "map_max") and selection.figures == []
    assert selection.decided_by == {"image_size": "default", "map_source": "default", "image_score": "default"}
    assert "too few" in selection.notes[0] and detector.image_size == 64


def test_fit_detector_with_a_fusion_calibrates_it_on_held_out_images(model):
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    detector = fit_detector(model, train, ScoreConfig(patch_memory=200, image_score="fusion"), moves=False, folds=3)
    assert detector.image_score.calibrated and detector.density is not None
    assert fit_detector(model, train, SCORE, moves=False).image_score.kind == "map_max"  # "auto" chooses nothing here


@pytest.mark.parametrize("bad, message", [
    (dict(sizes=(32,)), "validation.sizes"), (dict(image_scores=("best",)), "validation.image_scores"),
    (dict(folds=1), "validation.folds"), (dict(families=("cutpaste",)), "validation.families"),
])
def test_bad_validation_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        ValidationConfig(**bad)
