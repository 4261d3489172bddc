"""Fit on the normal training images, score the test set, measure: the detector's report card."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssad.config import ScoreConfig
from ssad.data import CategoryData
from ssad.metrics import aupro, f1_max, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.detector import Detector, fit_detector

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """``metrics``: image_auroc, pixel_auroc, aupro (to 30% FPR), image_f1_max, pixel_f1_max.
    ``image_scores`` (M,) float and ``anomaly_maps`` (M, 1, S, S) float: higher = more anomalous.
    ``detector``: what scored them, its "f1" thresholds set from them."""

    metrics: dict[str, float]
    image_scores: Tensor
    anomaly_maps: Tensor
    detector: Detector


@torch.no_grad()
def evaluate(model: PretextModel, data: CategoryData, cfg: ScoreConfig) -> Evaluation:
    """Score ``data.test`` with densities fitted on ``data.train``; measure against the ground truth."""
    if len(data.test) == 0:
        raise ValueError(f"{data.category} has no test images to score; add test/<good|defect>/ folders.")
    detector = fit_detector(model, data.train, cfg, data.moves)
    image_scores, maps = detector.score_all(data.test)
    labels, masks = data.test_labels, data.test_masks
    metrics = {
        "image_auroc": image_auroc(image_scores, labels),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks, max_fpr=0.3),
    }
    (metrics["image_f1_max"], image_threshold), (metrics["pixel_f1_max"], pixel_threshold) = (
        f1_max(image_scores, labels), f1_max(maps.flatten(), masks.flatten()))
    detector.set_thresholds("f1", image_threshold, pixel_threshold)
    detector.use_thresholds("f1")
    return Evaluation(metrics=metrics, image_scores=image_scores, anomaly_maps=maps, detector=detector)
