"""Where a detector's anomaly map comes from: the patch memory, the segmentation head, or both.

Three sources (`MAP_SOURCES`):

- ``"memory"``: each patch feature's distance to the normal ones (`ssad.score.PatchScorer`: the
  kNN memory, or a Gaussian per place). Sees any departure from the normal images and knows
  nothing of defects.
- ``"head"``: the logit of the segmentation head (`ssad.model.SegmentationHead`), trained on the
  synthetic defects' masks. Knows what a defect looks like, but only as the engine draws them.
- ``"fusion"``: both, each **standardised** by held-out normal images' map maxima (their median
  and interquartile range: the level and spread of the brightest normal response of that
  source), then averaged. No weight is fitted on defects: standardising puts the two on one
  scale, so that neither dominates because its units are larger.

`AnomalyMap` is the small module a `ssad.detector.Detector` holds: it turns the sources' scores
on their coarse grids into one (B, 1, S, S) map, and saves its standardisation with the detector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssad.image_score import robust_scale
from ssad.registry import MAP_SOURCES
from ssad.score import smooth_map

__all__ = ["MAP_SOURCES", "AnomalyMap"]


class AnomalyMap(nn.Module):
    """One of `MAP_SOURCES`, drawn at the image size and smoothed with ``sigma`` pixels.

    ``"fusion"`` needs `calibrate` first (its ``centre`` and ``spread`` buffers, (2,) float for
    memory and head, come from held-out normal images).
    """

    def __init__(self, kind: str = "memory", sigma: float = 0.0) -> None:
        super().__init__()
        if kind not in MAP_SOURCES:
            raise ValueError(f"map source {kind!r}: choose one of {MAP_SOURCES}.")
        self.kind, self.sigma = kind, sigma

    @property
    def needs_memory(self) -> bool:
        return self.kind in ("memory", "fusion")

    @property
    def needs_head(self) -> bool:
        return self.kind in ("head", "fusion")

    @property
    def calibrated(self) -> bool:
        return hasattr(self, "centre")

    def source_maps(self, memory: Tensor | None, head: Tensor | None, size: tuple[int, int]) -> list[Tensor]:
        """The (B, 1, *size) float maps of the sources this kind uses, memory first, from the
        memory's (B, 1, h, w) patch scores and the head's (B, 1, h', w') logits."""
        sources = []
        if self.needs_memory:
            sources.append(smooth_map(_given(memory, "memory"), size, self.sigma))
        if self.needs_head:
            sources.append(smooth_map(_given(head, "head"), size, self.sigma))
        return sources

    def calibrate(self, maxima: Tensor) -> AnomalyMap:
        """Standardise a fusion by held-out normal images' map maxima ``maxima`` (N >= 2, 2) float
        (memory, head): each column's median and interquartile range, kept as buffers."""
        if self.kind != "fusion":
            raise ValueError(f"only a fusion is calibrated; this map source is {self.kind!r}.")
        centre, spread = robust_scale(maxima)
        self.register_buffer("centre", centre)
        self.register_buffer("spread", spread)
        return self

    def forward(self, memory: Tensor | None, head: Tensor | None, size: tuple[int, int]) -> Tensor:
        """(B, 1, *size) float anomaly map; higher = more anomalous. ``memory``, ``head``: the
        coarse scores of `source_maps` (either may be None where this kind does not use it)."""
        sources = self.source_maps(memory, head, size)
        if self.kind != "fusion":
            return sources[0]
        if not self.calibrated:
            raise RuntimeError("this map fusion is not calibrated: call calibrate() with held-out normal maxima.")
        stacked = torch.cat(sources, dim=1)  # (B, 2, H, W)
        return ((stacked - self.centre[:, None, None]) / self.spread[:, None, None]).mean(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"{self.kind!r}, sigma={self.sigma:g}"


def _given(scores: Tensor | None, source: str) -> Tensor:
    if scores is None:
        raise ValueError(f"the {source} map was asked for, but no {source} scores were given.")
    return scores
