"""The anomaly-detection metrics of the field, in torch, on the inputs' own device.

Scores follow one convention throughout: higher means more anomalous. Labels and ground-truth
masks are binary: 0 (or False) normal, 1 (or True) anomalous.

- `auroc`, `roc_curve`: the ROC curve and its area, exact with ties (a tied normal/anomalous pair
  counts 1/2, as in the Mann-Whitney U statistic). One sort, so millions of values are fine.
- `image_auroc`, `pixel_auroc`: the same on per-image scores and on whole anomaly maps.
- `aupro`: the area under MVTec AD's per-region-overlap curve up to a false-positive rate.
- `f1_max`: the best F1 score over all thresholds.

Every distinct score is a threshold: all curves are exact, none is sampled at chosen thresholds.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["auroc", "roc_curve", "image_auroc", "pixel_auroc", "aupro", "f1_max", "AUPRO_MAX_FPR"]

#: `aupro` integrates up to this false positive rate, as the MVTec AD benchmark reports it: beyond
#: it so many normal pixels are flagged that a segmentation is of no practical use.
AUPRO_MAX_FPR = 0.3


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: the chance that an anomalous sample outscores a normal one.

    Args:
        scores: (N,) real, higher = more anomalous. No NaN.
        labels: (N,) bool, or integer/float holding only 0 (normal) and 1 (anomalous).

    Returns:
        The area in [0, 1]; tied normal/anomalous pairs count 1/2 (equals U / (n0 * n1) of the
        Mann-Whitney test). Computed from integer counts, so it is exact up to the final division.

    Raises:
        ValueError: shapes differ or are not 1-D, labels are not binary, scores hold NaN, or only
            one class is present.
    """
    _, fps, tps = _roc_counts(scores, labels, "AUROC")
    fps, tps = _from_origin(fps), _from_origin(tps)
    # Trapezoids between successive thresholds: width (new false positives) times the mean
    # height (true positives before and after), all doubled to stay in integers.
    doubled_area = ((fps[1:] - fps[:-1]) * (tps[1:] + tps[:-1])).sum().item()
    return doubled_area / (2 * fps[-1].item() * tps[-1].item())


def roc_curve(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The ROC curve, one point per distinct score, for plotting.

    Args:
        scores, labels: as for `auroc`.

    Returns:
        fpr, tpr, thresholds: (K + 1,) float64 each, K the number of distinct scores. Point i is
            the rates of predicting "anomalous" for score >= thresholds[i]; thresholds decrease,
            the first is +inf (nothing predicted anomalous: the point (0, 0)), the last is the
            lowest score (everything predicted anomalous: the point (1, 1)). The trapezoid area
            of (fpr, tpr) is `auroc`.
    """
    thresholds, fps, tps = _roc_counts(scores, labels, "A ROC curve")
    fpr = _from_origin(fps).double() / fps[-1]
    tpr = _from_origin(tps).double() / tps[-1]
    infinity = torch.full((1,), torch.inf, dtype=torch.float64, device=thresholds.device)
    return fpr, tpr, torch.cat([infinity, thresholds.double()])


def image_auroc(image_scores: Tensor, image_labels: Tensor) -> float:
    """AUROC of per-image anomaly scores against per-image labels.

    Args:
        image_scores: (M,) real, one score per image.
        image_labels: (M,) binary, 1 where the image holds a defect.
    """
    return auroc(image_scores, image_labels)


def pixel_auroc(anomaly_maps: Tensor, gt_masks: Tensor) -> float:
    """AUROC over every pixel of every image, each pixel one sample.

    Args:
        anomaly_maps: (M, H, W) or (M, 1, H, W) real.
        gt_masks: the same shape, bool (or 0/1): True on defect pixels.
    """
    maps, defect = _as_maps(anomaly_maps, gt_masks, "pixel_auroc")
    return auroc(maps.flatten(), defect.flatten())


def aupro(anomaly_maps: Tensor, gt_masks: Tensor, max_fpr: float = AUPRO_MAX_FPR) -> float:
    """Area under the per-region-overlap (PRO) curve up to ``max_fpr``, as in MVTec AD.

    Each connected region of the ground truth (8-connectivity, within one image) counts once,
    whatever its size. At a threshold t: PRO = mean over all regions of all images of the
    fraction of the region's pixels scoring >= t; FPR = fraction of all normal pixels (gt False,
    in every image) scoring >= t. Every distinct score is a threshold, so the curve is exact,
    as in the MVTec AD evaluation code. PRO is integrated over FPR in [0, max_fpr] by trapezoids,
    the curve interpolated linearly at exactly ``max_fpr``, and divided by ``max_fpr``: a perfect
    detector gets 1.0, a constant map gets max_fpr / 2.

    Args:
        anomaly_maps: (M, H, W) or (M, 1, H, W) real, higher = more anomalous. No NaN.
        gt_masks: the same shape, bool (or 0/1): True on defect pixels.
        max_fpr: the upper limit of the integration, in (0, 1].

    Returns:
        The normalised area in [0, 1].

    Raises:
        ValueError: shapes differ, masks are not binary, maps hold NaN, ``max_fpr`` is out of
            range, or the masks hold no defect pixel or no normal pixel.
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must lie in (0, 1]; got {max_fpr}.")
    maps, defect = _as_maps(anomaly_maps, gt_masks, "aupro")
    regions, num_regions = _label_regions(defect)
    if num_regions == 0:
        raise ValueError("AUPRO needs at least one defect region; every ground-truth mask is empty.")
    normal = ~defect
    num_normal = int(normal.sum())
    if num_normal == 0:
        raise ValueError("AUPRO needs normal pixels to measure false positives; every pixel is a defect.")

    # A defect pixel weighs 1 / (its region's size * number of regions): the weights of the pixels
    # scoring >= t then sum to the mean over regions of the fraction above t, that is PRO(t).
    region_sizes = torch.bincount(regions.flatten(), minlength=num_regions + 1).double()
    overlap_weights = torch.where(defect, 1.0 / (region_sizes[regions] * num_regions), 0.0)
    _, (false_positives, overlap) = _cumulate_by_threshold(
        maps.flatten(), normal.flatten().long(), overlap_weights.flatten()
    )
    fpr = _from_origin(false_positives).double() / num_normal
    pro = _from_origin(overlap)
    return _area_up_to(fpr, pro, max_fpr) / max_fpr


def f1_max(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """The best F1 score over all thresholds, and the threshold that reaches it.

    Args:
        scores, labels: as for `auroc`, except that only anomalous samples are required.

    Returns:
        f1: the largest F1 = 2 * precision * recall / (precision + recall) over thresholds.
        threshold: the score t such that predicting "anomalous" for score >= t reaches it; the
            highest such t when several do.
    """
    thresholds, fps, tps = _roc_counts(scores, labels, "F1", need_normal=False)
    f1 = 2 * tps.double() / (tps + fps + tps[-1])  # 2TP / (2TP + FP + FN), with TP + FN = tps[-1]
    best = int(f1.argmax())
    return f1[best].item(), thresholds[best].item()


def _roc_counts(
    scores: Tensor, labels: Tensor, metric: str, need_normal: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Check a (scores, labels) pair and count, for each distinct score t in decreasing order,
    the normal (false positives) and anomalous (true positives) samples scoring >= t.

    Returns thresholds (K,) in the scores' dtype, false positives (K,) and true positives (K,)
    int64; the last entries are the class totals.
    """
    if scores.dim() != 1 or scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(
            f"{metric} expects non-empty 1-D scores and labels of the same length (flatten maps first); "
            f"got scores {tuple(scores.shape)} and labels {tuple(labels.shape)}."
        )
    _check_no_nan(scores, "scores")
    anomalous = _as_bool(labels, "labels").to(scores.device)
    num_anomalous = int(anomalous.sum())
    num_normal = anomalous.numel() - num_anomalous
    if num_anomalous == 0 or (need_normal and num_normal == 0):
        present = f"only {num_normal} normal" if num_anomalous == 0 else f"only {num_anomalous} anomalous"
        needed = "both normal and anomalous samples" if need_normal else "anomalous samples"
        raise ValueError(f"{metric} needs {needed}; got {present} samples.")
    thresholds, (false_positives, true_positives) = _cumulate_by_threshold(
        scores, (~anomalous).long(), anomalous.long()
    )
    return thresholds, false_positives, true_positives


def _cumulate_by_threshold(scores: Tensor, *weights: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Sort once; for each distinct score t, in decreasing order, sum each weight over the
    samples scoring >= t.

    Args:
        scores: (N,) real.
        weights: (N,) each, any dtype (sums keep it).

    Returns:
        thresholds (K,) the distinct scores, decreasing; one (K,) tensor of sums per weight.
    """
    sorted_scores, order = torch.sort(scores, descending=True)
    # Only the last sample of a run of ties closes a threshold: it sums the whole run.
    last_of_ties = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_ties[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    sums = [weight[order].cumsum(0)[last_of_ties] for weight in weights]
    return sorted_scores[last_of_ties], sums


def _from_origin(values: Tensor) -> Tensor:
    """Prepend a 0: the curve's point before any threshold, where nothing is predicted anomalous."""
    return torch.cat([values.new_zeros(1), values])


def _area_up_to(x: Tensor, y: Tensor, x_max: float) -> float:
    """Trapezoid area under the piecewise-linear curve through (x, y) from x[0] to x_max.

    x is non-decreasing (repeated x: vertical steps, no area). The segment that crosses x_max is
    cut there, its end height interpolated linearly.
    """
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    run = x1 - x0
    slope = (y1 - y0) / torch.where(run > 0, run, 1.0)  # vertical segments have no width anyway
    x1_cut = x1.clamp(max=x_max)
    width = (x1_cut - x0).clamp(min=0)  # 0 for segments starting at or beyond x_max
    y1_cut = y0 + slope * width
    return (width * (y0 + y1_cut) / 2).sum().item()


def _label_regions(masks: Tensor) -> tuple[Tensor, int]:
    """Label the 8-connected regions of each mask; regions never span two images.

    Union-find done as tensor ops over the whole batch: every pixel starts as its own root
    (its flat index); each round, the two roots at the ends of every link between neighbouring
    mask pixels both hook onto the smaller one, then every pixel jumps to its root. A round at
    least halves the number of roots per region, so O(log(pixels)) rounds. Kept over
    ``kornia.contrib.connected_components``, which needs as many max-pooling iterations as a
    region is long and is several times slower on defect masks (bench/results/kornia_choice.json).

    Args:
        masks: (M, H, W) bool.

    Returns:
        labels: (M, H, W) int64, 0 off the masks, 1..K on them, regions numbered in raster order
            of their first pixel, image after image (per image, as scipy.ndimage.label).
        K: the number of regions.
    """
    index = torch.arange(masks.numel(), device=masks.device).view(masks.shape)
    # Each pixel links to its right, lower, lower-right and lower-left neighbours; with the links
    # pointing at it from the other side that makes all 8. Slicing within each image keeps links
    # from crossing between images.
    links = [
        (index[:, :, :-1], index[:, :, 1:], masks[:, :, :-1] & masks[:, :, 1:]),
        (index[:, :-1, :], index[:, 1:, :], masks[:, :-1, :] & masks[:, 1:, :]),
        (index[:, :-1, :-1], index[:, 1:, 1:], masks[:, :-1, :-1] & masks[:, 1:, 1:]),
        (index[:, :-1, 1:], index[:, 1:, :-1], masks[:, :-1, 1:] & masks[:, 1:, :-1]),
    ]
    start = torch.cat([a[both] for a, _, both in links])
    end = torch.cat([b[both] for _, b, both in links])

    parent = index.flatten().clone()
    while True:
        root_start, root_end = parent[start], parent[end]
        if torch.equal(root_start, root_end):
            break
        lower = torch.minimum(root_start, root_end)
        parent.scatter_reduce_(0, root_start, lower, reduce="amin")
        parent.scatter_reduce_(0, root_end, lower, reduce="amin")
        while not torch.equal(grandparent := parent[parent], parent):
            parent = grandparent

    on = masks.flatten()
    roots, region_of_pixel = torch.unique(parent[on], return_inverse=True)
    labels = torch.zeros_like(parent)
    labels[on] = region_of_pixel + 1
    return labels.view(masks.shape), len(roots)


def _as_maps(anomaly_maps: Tensor, gt_masks: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """Check maps and masks; return them as (M, H, W) scores and (M, H, W) bool on the maps' device."""
    if anomaly_maps.shape != gt_masks.shape:
        raise ValueError(
            f"{metric}: anomaly_maps {tuple(anomaly_maps.shape)} and gt_masks "
            f"{tuple(gt_masks.shape)} must have the same shape."
        )
    if anomaly_maps.dim() == 4 and anomaly_maps.shape[1] == 1:
        anomaly_maps, gt_masks = anomaly_maps[:, 0], gt_masks[:, 0]
    if anomaly_maps.dim() != 3 or anomaly_maps.numel() == 0:
        raise ValueError(
            f"{metric} expects non-empty (M, H, W) or (M, 1, H, W) maps; got {tuple(anomaly_maps.shape)}."
        )
    _check_no_nan(anomaly_maps, "anomaly_maps")
    return anomaly_maps, _as_bool(gt_masks, "gt_masks").to(anomaly_maps.device)


def _as_bool(labels: Tensor, name: str) -> Tensor:
    """Binary labels as bool; anything but 0/1 (say, a mask blurred by resizing) is an error."""
    if labels.dtype == torch.bool:
        return labels
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(
            f"{name} must be binary (0 normal, 1 anomalous); got other values, "
            f"e.g. {labels[(labels != 0) & (labels != 1)][0].item()}."
        )
    return labels == 1


def _check_no_nan(scores: Tensor, name: str) -> None:
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{name} hold NaN; a score must be comparable to every other.")
