"""Fit on the normal training images, score the test set, measure: the detector's report card."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssad.config import ScoreConfig
from ssad.data import CategoryData
from ssad.metrics import aupro, f1_max, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.score import create_density, create_patch_scorer, embed_images

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """``metrics``: image_auroc, pixel_auroc, aupro (to 30% FPR), image_f1_max, pixel_f1_max.
    ``image_scores`` (M,) float and ``anomaly_maps`` (M, 1, S, S) float: higher = more anomalous."""

    metrics: dict[str, float]
    image_scores: Tensor
    anomaly_maps: Tensor


def _patch_options(cfg: ScoreConfig, scorer: str, image_size: int) -> dict:
    """Keyword arguments of `create_patch_scorer(scorer, ...)` from the config (sigma scaled to the
    image size)."""
    options = dict(channels=cfg.patch_channels, sigma=cfg.sigma * image_size / 256, layers=cfg.patch_layers)
    return {**options, "memory": cfg.patch_memory} if scorer == "knn" else options


@torch.no_grad()
def evaluate(model: PretextModel, data: CategoryData, cfg: ScoreConfig) -> Evaluation:
    """Score ``data.test`` with densities fitted on ``data.train``; measure against the ground truth."""
    if len(data.test) == 0:
        raise ValueError(f"{data.category} has no test images to score; add test/<good|defect>/ folders.")
    density = create_density(cfg.density, cfg.knn_k)
    density.fit(embed_images(model, data.train))
    image_scores = density.score(embed_images(model, data.test))

    scorer = cfg.patch_scorer_for(data.moves)
    patches = create_patch_scorer(scorer, **_patch_options(cfg, scorer, data.image_size))
    maps = patches.fit(model, data.train).score(model, data.test)

    labels, masks = data.test_labels, data.test_masks
    metrics = {
        "image_auroc": image_auroc(image_scores, labels),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks, max_fpr=0.3),
        "image_f1_max": f1_max(image_scores, labels)[0],
        "pixel_f1_max": f1_max(maps.flatten(), masks.flatten())[0],
    }
    return Evaluation(metrics=metrics, image_scores=image_scores, anomaly_maps=maps)
