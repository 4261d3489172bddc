"""Score the test set with a fitted detector and measure it: the detector's report card.

A test split need not hold everything every metric needs: image labels without ground-truth masks
(factories often label images, not pixels), only normal images, or some defective images without a
mask. A metric that cannot be computed is ``None`` (``null`` in metrics.json, "n/a" in the table),
with a note that says why; the others are computed as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ssad.data import CategoryData
from ssad.detector import Detector
from ssad.metrics import aupro, f1_max, image_auroc, pixel_auroc

__all__ = ["METRICS", "Evaluation", "evaluate", "measure"]

#: The figures of a run, in the order its table prints them.
METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")


@dataclass
class Evaluation:
    """``metrics``: image_auroc, pixel_auroc, aupro (to 30% FPR), image_f1_max, pixel_f1_max, each
    a float or None where the test split cannot give it (``notes`` say why).
    ``image_scores`` (M,) float and ``anomaly_maps`` (M, 1, S, S) float: higher = more anomalous.
    ``f1_thresholds``: the (image, pixel) thresholds at F1-max, None without labelled defects; the
    pixel one is None without ground-truth masks."""

    metrics: dict[str, float | None]
    image_scores: Tensor
    anomaly_maps: Tensor
    f1_thresholds: tuple[float, float | None] | None
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def evaluate(detector: Detector, data: CategoryData) -> Evaluation:
    """Score ``data.test`` (at the detector's size) and measure against the labels and masks."""
    if len(data.test) == 0:
        raise ValueError(f"{data.category} has no test images to score; add test/<good|defect>/ folders.")
    scores, maps = detector.score_all(data.test)
    return measure(scores, maps, data.test_labels, data.test_masks, data.test_mask_known)


def measure(scores: Tensor, maps: Tensor, labels: Tensor, masks: Tensor, known: Tensor) -> Evaluation:
    """`Evaluation` of image ``scores`` (M,) and ``maps`` (M, 1, S, S) float against image
    ``labels`` (M,) int64, ground-truth ``masks`` (M, 1, S, S) bool and ``known`` (M,) bool (where
    a mask exists, `ssad.data.CategoryData.test_mask_known`)."""
    metrics: dict[str, float | None] = dict.fromkeys(METRICS)
    notes: list[str] = []
    anomalous = int(labels.sum())
    image_threshold = pixel_threshold = None
    if anomalous == 0:
        notes.append("the test split holds no defective image: no image or pixel metric can be computed.")
    else:
        metrics["image_f1_max"], image_threshold = f1_max(scores, labels)
        if anomalous == len(labels):
            notes.append("the test split holds no normal image: image AUROC is n/a.")
        else:
            metrics["image_auroc"] = image_auroc(scores, labels)

        with_mask = int((known & (labels == 1)).sum())
        if with_mask == 0:
            notes.append(f"none of the {anomalous} defective test images has a ground-truth mask (image labels "
                         "only): pixel AUROC, AUPRO and pixel F1-max are n/a.")
        else:
            if with_mask < anomalous:
                notes.append(f"{anomalous - with_mask} of the {anomalous} defective test images have no ground-truth "
                             "mask: the pixel metrics leave them out.")
            truth, known_maps = masks[known], maps[known]
            metrics["pixel_auroc"] = pixel_auroc(known_maps, truth)
            metrics["aupro"] = aupro(known_maps, truth)
            metrics["pixel_f1_max"], pixel_threshold = f1_max(known_maps.flatten(), truth.flatten())
    thresholds = None if image_threshold is None else (image_threshold, pixel_threshold)
    return Evaluation(metrics, scores, maps, thresholds, notes)
