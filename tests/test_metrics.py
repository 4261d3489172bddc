"""`ssad.metrics`: hand-worked cases, independent cross-checks, and the AUPRO region rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssad.metrics import _label_regions, aupro, auroc, f1_max, image_auroc, pixel_auroc, roc_curve


def _pairwise_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The definition, O(n^2): over all (anomalous, normal) pairs, 1 for a win, 1/2 for a tie."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return ((pos > neg).double() + 0.5 * (pos == neg).double()).mean().item()


def _random_tied(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores with many ties (few distinct values) and labels that lean on them."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.3).long()
    scores = (torch.rand(n, generator=g) + 0.4 * labels).mul(10).round() / 10
    return scores, labels


# --- AUROC -------------------------------------------------------------------------------------


def test_auroc_hand_worked_cases():
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auroc(torch.full((6,), 0.3), torch.tensor([0, 1, 0, 1, 1, 0])) == 0.5
    # Anomalous 0.35 beats normal 0.1, loses to normal 0.4; anomalous 0.8 beats both: 3 of 4 pairs.
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    # Ties: anomalous 0.5 beats normal 0.2 (1) and ties normal 0.5 (1/2); anomalous 0.9 beats
    # both (2): (1 + 1/2 + 2) / 4 pairs.
    assert auroc(torch.tensor([0.2, 0.5, 0.5, 0.9]), torch.tensor([0, 1, 0, 1])) == 0.875


def test_auroc_accepts_bool_and_float_labels_and_integer_scores():
    scores = torch.tensor([1, 4, 3, 8])
    assert auroc(scores, torch.tensor([False, False, True, True])) == 0.75
    assert auroc(scores, torch.tensor([0.0, 0.0, 1.0, 1.0])) == 0.75


def test_auroc_matches_the_pairwise_definition_with_ties():
    for seed in range(5):
        scores, labels = _random_tied(300, seed)
        assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_matches_scipy_mann_whitney_on_many_tied_values():
    stats = pytest.importorskip("scipy.stats")
    scores, labels = _random_tied(200_000, seed=7)
    pos, neg = scores[labels == 1].numpy(), scores[labels == 0].numpy()
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert auroc(scores, labels) == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)


def test_roc_curve_area_is_auroc_and_curve_runs_from_origin_to_one():
    scores, labels = _random_tied(1000, seed=3)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert fpr.dtype == tpr.dtype == thresholds.dtype == torch.float64
    assert len(fpr) == len(tpr) == len(thresholds) == len(scores.unique()) + 1
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thresholds[0] == torch.inf
    assert (thresholds.diff() < 0).all() and (fpr.diff() >= 0).all() and (tpr.diff() >= 0).all()
    area = ((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2).sum().item()
    assert area == pytest.approx(auroc(scores, labels), abs=1e-12)


def test_auroc_rejects_a_single_class_mismatched_shapes_and_bad_labels():
    with pytest.raises(ValueError, match="needs both normal and anomalous samples; got only 3 normal"):
        auroc(torch.rand(3), torch.zeros(3))
    with pytest.raises(ValueError, match="got only 2 anomalous"):
        auroc(torch.rand(2), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="same length"):
        auroc(torch.rand(4), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="1-D"):
        auroc(torch.rand(2, 2), torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="binary"):
        auroc(torch.rand(3), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))


def test_image_and_pixel_auroc_wrap_auroc():
    assert image_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    maps = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = maps > 0.7
    assert pixel_auroc(maps, masks) == 1.0
    assert pixel_auroc(maps[:, 0], masks[:, 0]) == 1.0
    assert pixel_auroc(-maps, masks) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(maps, masks[:, 0])


# --- F1 ----------------------------------------------------------------------------------------


def test_f1_max_hand_worked():
    # Predict anomalous for score >= t; F1 = 2TP / (2TP + FP + FN), 3 anomalous samples in all:
    #   t=0.9: TP 1 FP 0 -> 2/5; t=0.8: TP 1 FP 1 -> 2/6; t=0.7: TP 2 FP 1 -> 4/6;
    #   t=0.6: TP 3 FP 1 -> 6/7 (best); t=0.5: TP 3 FP 2 -> 6/8.
    f1, threshold = f1_max(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 0, 1, 1, 0]))
    assert f1 == pytest.approx(6 / 7) and threshold == pytest.approx(0.6)
    assert f1_max(torch.tensor([0.3, 0.2]), torch.tensor([1, 1])) == (1.0, pytest.approx(0.2))
    with pytest.raises(ValueError, match="F1 needs anomalous samples"):
        f1_max(torch.rand(3), torch.zeros(3))


# --- connected regions -------------------------------------------------------------------------


def test_diagonal_neighbours_are_one_region_and_images_never_share_one():
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # touch at a corner: one region (8-connectivity)
    masks[0, 1, 3] = masks[0, 0, 4] = True  # anti-diagonal: one region
    masks[0, 4, 0] = True  # alone: a third region
    masks[:, 3:, 3:] = True  # the same square in both images: one region in each
    labels, count = _label_regions(masks)
    assert count == 5
    assert labels[0, 0, 0] == labels[0, 1, 1] and labels[0, 1, 3] == labels[0, 0, 4]
    assert labels[0, 3, 3] != labels[1, 3, 3]
    assert len(labels[masks].unique()) == 5 and (labels[~masks] == 0).all()


def test_region_labels_match_scipy_on_random_masks():
    ndimage = pytest.importorskip("scipy.ndimage")
    masks = torch.rand(4, 40, 40, generator=torch.Generator().manual_seed(1)) < 0.45
    labels, count = _label_regions(masks)
    offset = 0
    for mask, ours in zip(masks.numpy(), labels.numpy()):
        theirs, n = ndimage.label(mask, structure=np.ones((3, 3)))
        np.testing.assert_array_equal(np.where(mask, ours - offset, 0), theirs)
        offset += n
    assert count == offset


# --- AUPRO -------------------------------------------------------------------------------------


def _two_regions() -> tuple[torch.Tensor, torch.Tensor]:
    """A 9-pixel and a 1-pixel defect in a 10x10 image, normal pixels scoring 0.1 ... 0.9."""
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 1:4, 1:4] = True  # 3x3 region
    masks[0, 7, 7] = True  # single-pixel region
    maps = torch.linspace(0.1, 0.9, 100).view(1, 10, 10).clone()
    return maps, masks


def test_aupro_perfect_and_constant_maps():
    maps, masks = _two_regions()
    assert aupro(masks.float(), masks) == pytest.approx(1.0, abs=1e-12)
    # A constant map puts every pixel at one threshold: the curve is the line (0,0)-(1,1), whose
    # area up to 0.3 is 0.3^2 / 2, divided by 0.3.
    assert aupro(torch.zeros_like(maps), masks) == pytest.approx(0.15, abs=1e-12)


def test_aupro_counts_each_region_once_whatever_its_size():
    maps, masks = _two_regions()
    # The 3x3 region scores above every normal pixel, the single pixel below every one: for all
    # FPR in (0, 1), PRO = (1 + 0) / 2 regions = 0.5, so the normalised area up to 0.3 is 0.5
    # (pixel-wise the overlap would be 9/10).
    maps[0, 1:4, 1:4] = 2.0
    maps[0, 7, 7] = -1.0
    assert aupro(maps, masks) == pytest.approx(0.5, abs=1e-12)
    # Swapped: the big region missed, the single pixel found: still 0.5 (pixel-wise 1/10).
    assert aupro(-maps, masks) == pytest.approx(0.5, abs=1e-12)


def test_aupro_interpolates_the_curve_at_max_fpr():
    # 1 defect pixel, 10 normal ones. Three normal pixels outscore the defect: the curve is 0 up
    # to FPR 0.3, jumps to 1 there and stays. Up to 0.35 the area is 0.05 * 1; normalised: 1/7.
    maps = torch.tensor([[[0.5, 0.9, 0.8, 0.7, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1]]])
    masks = torch.zeros_like(maps, dtype=torch.bool)
    masks[0, 0, 0] = True
    assert aupro(maps, masks, max_fpr=0.3) == pytest.approx(0.0, abs=1e-12)
    assert aupro(maps, masks, max_fpr=0.35) == pytest.approx(1 / 7, abs=1e-12)
    # Tied with all the normal pixels, the defect pixel makes the curve the line from (0,0) to
    # (1,1) after the three above: area up to 0.5 is the triangle cut at 0.5 of the segment
    # (0.3, 0) -> (1, 1): 0.2 * (0.2 / 0.7) / 2, normalised by 0.5.
    maps[0, 0, 4:] = 0.5
    expected = 0.2 * (0.2 / 0.7) / 2 / 0.5
    assert aupro(maps, masks, max_fpr=0.5) == pytest.approx(expected, abs=1e-12)


def test_aupro_diagonal_pixels_form_one_region():
    # Defect pixels (0,0) and (1,1) touch at a corner: one 2-pixel region. (0,0) scores above
    # every normal pixel, (1,1) below: PRO = 1/2 at every FPR in (0, 1). Were they two regions,
    # plus the separate pixel (3,3) that is found, PRO would be 2/3 instead of (1/2 + 1) / 2.
    maps = torch.linspace(0.1, 0.9, 16).view(1, 4, 4).clone()
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
    maps[0, 0, 0] = maps[0, 3, 3] = 2.0
    maps[0, 1, 1] = -1.0
    assert aupro(maps, masks) == pytest.approx(0.75, abs=1e-12)


def test_aupro_regions_never_continue_into_the_next_image():
    # Image 0 has a 2-pixel defect on its bottom row, found; image 1 a 1-pixel defect right below
    # it on its top row, missed. Two regions: PRO = (1 + 0) / 2 = 0.5. Were the images stacked into
    # one 3-pixel region, PRO would be 2/3.
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 5, 2:4] = True
    masks[1, 0, 2] = True
    maps = torch.linspace(0.1, 0.9, 72).view(2, 6, 6).clone()
    maps[0][masks[0]] = 2.0
    maps[1][masks[1]] = -1.0
    assert aupro(maps, masks) == pytest.approx(0.5, abs=1e-12)
    assert aupro(maps[:, None], masks[:, None]) == pytest.approx(0.5, abs=1e-12)  # (M, 1, H, W)


def test_aupro_is_invariant_to_monotone_transforms():
    g = torch.Generator().manual_seed(2)
    seeds = torch.rand(3, 1, 32, 32, generator=g) < 0.01
    masks = torch.nn.functional.max_pool2d(seeds.float(), 5, 1, 2) > 0  # 5x5 blobs
    maps = torch.rand(3, 1, 32, 32, generator=g, dtype=torch.float64) + 0.5 * masks
    reference = aupro(maps, masks)
    assert 0.5 < reference < 1
    assert aupro(torch.exp(4 * maps) - 7, masks) == pytest.approx(reference, abs=1e-12)
    assert aupro(maps.float(), masks.long()) == pytest.approx(reference, abs=1e-6)


def _mvtec_reference_aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    """The MVTec AD evaluation code's compute_pro + trapezoid, condensed, with scipy's labelling."""
    from scipy import ndimage

    fp_changes = np.zeros(maps.shape, dtype=np.float64)
    pro_changes = np.zeros(maps.shape, dtype=np.float64)
    num_ok, num_regions = 0, 0
    for i, mask in enumerate(masks):
        labeled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        num_regions += n
        fp_changes[i][labeled == 0] = 1
        num_ok += (labeled == 0).sum()
        for k in range(1, n + 1):
            pro_changes[i][labeled == k] = 1 / (labeled == k).sum()
    order = np.argsort(maps.ravel(), kind="stable")[::-1]
    sorted_scores = maps.ravel()[order]
    keep = np.append(np.diff(sorted_scores) != 0, True)
    fprs = np.concatenate([[0], np.cumsum(fp_changes.ravel()[order])[keep] / num_ok])
    pros = np.concatenate([[0], np.cumsum(pro_changes.ravel()[order])[keep] / num_regions])
    correction = 0.0
    if max_fpr not in fprs:
        ins = np.searchsorted(fprs, max_fpr, side="right")
        slope = (pros[ins] - pros[ins - 1]) / (fprs[ins] - fprs[ins - 1])
        y_interp = pros[ins - 1] + slope * (max_fpr - fprs[ins - 1])
        correction = 0.5 * (y_interp + pros[ins - 1]) * (max_fpr - fprs[ins - 1])
    inside = fprs <= max_fpr
    x, y = fprs[inside], pros[inside]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction) / max_fpr


@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_the_mvtec_evaluation_code(max_fpr):
    pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(5)
    seeds = torch.rand(6, 1, 48, 48, generator=g) < 0.004
    masks = torch.nn.functional.max_pool2d(seeds.float(), 7, 1, 3) > 0
    masks[0] = False  # a defect-free image adds normal pixels only
    # Rounded scores: many ties, some spanning normal and defect pixels.
    maps = ((torch.rand(6, 1, 48, 48, generator=g) + 0.3 * masks) * 20).round() / 20
    expected = _mvtec_reference_aupro(maps[:, 0].double().numpy(), masks[:, 0].numpy(), max_fpr)
    assert aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-9)


def test_aupro_rejects_masks_without_defects_and_bad_arguments():
    maps, masks = _two_regions()
    with pytest.raises(ValueError, match="at least one defect region"):
        aupro(maps, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="no normal|every pixel is a defect"):
        aupro(maps, torch.ones_like(masks))
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(maps, masks, max_fpr=0.0)
    with pytest.raises(ValueError, match="same shape"):
        aupro(maps, masks[0])
    with pytest.raises(ValueError, match=r"\(M, H, W\)"):
        aupro(maps[0], masks[0])
