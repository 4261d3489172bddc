"""Image scores: how an image's anomaly map, and its pooled features, become one number.

Three statistics, each higher for more anomalous images:

- ``"map_max"``: the anomaly map's maximum (as PatchCore). One defect pixel decides, and so does
  the brightest normal variation (a specular highlight) when defects are small.
- ``"map_top"``: the mean of the map's highest `TOP_SHARE` of pixels. A defect must cover some
  area; a lone hot pixel weighs less.
- ``"density"``: the pooled features' distance to the normal ones (`ssad.score.GaussianDensity`,
  CutPaste's image score). Sees the whole image; small defects weigh little.

and ``"fusion"``, their **calibrated** combination: each statistic is standardised by its
distribution on held-out normal images (its median and its interquartile range: robust to the few
odd normals a training set holds), and the fused score is the mean of the three standardised
values. No weight is fitted on defects; standardising only puts the three on one scale, so that
none dominates because its units are larger.

`ImageScore` is the small module that computes one of the four from a batch's statistics; a
`ssad.detector.Detector` holds one, and saves its standardisation with the rest of its state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssad.registry import IMAGE_SCORES, STATISTICS

__all__ = ["STATISTICS", "IMAGE_SCORES", "TOP_SHARE", "ImageScore", "map_statistics", "robust_scale"]

#: ``"map_top"`` averages this share of the map's pixels: at 320 x 320 about 1,000 pixels, the
#: area of a defect some 30 pixels across; far smaller than a large defect, far larger than a peak.
TOP_SHARE = 0.01
#: Interquartile range of a standard normal distribution: IQR / this estimates the standard deviation.
_IQR_OF_NORMAL = 1.349


def map_statistics(maps: Tensor, top_share: float = TOP_SHARE) -> Tensor:
    """(B, 2) float: each map's maximum and the mean of its top ``top_share`` of pixels, from
    (B, 1, H, W) anomaly maps (``STATISTICS[:2]``)."""
    flat = maps.flatten(1).float()
    k = max(1, math.ceil(top_share * flat.shape[1]))  # fixed by the map's size: traceable
    return torch.stack([flat.amax(dim=1), flat.topk(k, dim=1).values.mean(dim=1)], dim=1)


def robust_scale(values: Tensor) -> tuple[Tensor, Tensor]:
    """Each column's centre (median) and spread (interquartile range / `_IQR_OF_NORMAL`: the
    standard deviation, were it normal) of (N >= 2, K) float ``values``, both (K,) float: robust
    to the few odd normal images a training set holds. A column that barely varies gets a small
    floor on its spread, so that standardising by it cannot amplify without bound."""
    if values.dim() != 2 or len(values) < 2:
        raise ValueError(f"robust_scale needs (N >= 2, K) values; got {tuple(values.shape)}.")
    values = values.double()
    low, centre, high = values.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype,
                                                     device=values.device), dim=0)
    spread = ((high - low) / _IQR_OF_NORMAL).clamp_min(1e-6 * centre.abs().clamp_min(1e-6))
    return centre.float(), spread.float()


class ImageScore(nn.Module):
    """One of `IMAGE_SCORES`, computed from a (B, 3) tensor of `STATISTICS` (columns in that order).

    ``"fusion"`` needs `calibrate` first (its ``centre`` and ``spread`` buffers, (3,) float, come
    from held-out normal images); the single statistics are used as they are.
    """

    def __init__(self, kind: str = "map_max") -> None:
        super().__init__()
        if kind not in IMAGE_SCORES:
            raise ValueError(f"image score {kind!r}: choose one of {IMAGE_SCORES}.")
        self.kind = kind

    @property
    def needs_density(self) -> bool:
        """Whether the score uses the pooled-feature density (which costs the network's deeper layers)."""
        return self.kind in ("density", "fusion")

    @property
    def calibrated(self) -> bool:
        return hasattr(self, "centre")

    def calibrate(self, normal: Tensor) -> ImageScore:
        """Standardise by held-out normal images' statistics ``normal`` (N, 3) float: each column's
        median and interquartile range (N >= 2). Kept as buffers, saved with the detector."""
        if normal.dim() != 2 or normal.shape[1] != len(STATISTICS) or len(normal) < 2:
            raise ValueError(f"calibrate needs (N >= 2, {len(STATISTICS)}) statistics; got {tuple(normal.shape)}.")
        centre, spread = robust_scale(normal)
        self.register_buffer("centre", centre)
        self.register_buffer("spread", spread)
        return self

    def standardise(self, statistics: Tensor) -> Tensor:
        """(B, 3) statistics in units of the normal images' spread, 0 at their median."""
        if not self.calibrated:
            raise RuntimeError("this image score is not calibrated: call calibrate() with held-out normal statistics.")
        return (statistics.float() - self.centre) / self.spread

    def forward(self, statistics: Tensor) -> Tensor:
        """(B,) float image scores from (B, 3) ``statistics``; higher = more anomalous."""
        if self.kind == "fusion":
            return self.standardise(statistics).mean(dim=1)
        return statistics[:, STATISTICS.index(self.kind)].float()

    def extra_repr(self) -> str:
        return repr(self.kind)
