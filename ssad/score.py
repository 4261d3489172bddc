"""Scoring: densities fitted on normal features, image scores and anomaly maps, all in torch.

Image level: pooled 512-d features of the trained network, L2-normalised, scored by
- `GaussianDensity` (default, as in CutPaste): Mahalanobis distance to the mean under a
  Ledoit-Wolf shrunk covariance;
- `KNNDensity` (the seed's): mean cosine distance to the k nearest training features.

Pixel level (`PatchScorer`): dense features of intermediate layers (by default layer2 and layer1,
resampled to layer2's grid, i.e. one feature per 8x8 pixels), one Gaussian per grid location,
fitted on the training images; the Mahalanobis distance map is upsampled to the image and
Gaussian-smoothed. Channels are reduced to a fixed random subset, so the per-location
covariances stay small. bench/localization.py compares the alternatives.

Nothing here builds a matrix that grows with the square of the training set: the covariance is
accumulated from feature sums, kNN scores test features against training features in blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ssad.model import PretextModel, normalise

__all__ = [
    "GaussianDensity",
    "KNNDensity",
    "PatchScorer",
    "create_density",
    "embed_images",
    "ledoit_wolf",
    "gaussian_blur",
]


def ledoit_wolf(features: Tensor) -> tuple[Tensor, Tensor, float]:
    """Mean (D,), shrunk covariance (D, D) and shrinkage of (N, D) samples (Ledoit & Wolf, 2004).

    The covariance is pulled toward ``mu * I`` (``mu`` its mean variance) by the amount that
    minimises the expected squared error; computed in float64 from (D, D) products only.
    """
    x = features.double()
    n, d = x.shape
    mean = x.mean(dim=0)
    x = x - mean
    cov = x.T @ x / n
    mu = cov.diagonal().mean()
    # Distance of the sample covariance to the target, and the variance of its estimate.
    delta = ((cov - mu * torch.eye(d, dtype=x.dtype, device=x.device)) ** 2).sum() / d
    x2 = x**2
    beta = ((x2.T @ x2).sum() / n - (cov**2).sum()) / (d * n)
    shrinkage = float(torch.clamp(beta / delta, 0, 1)) if delta > 0 else 0.0
    shrunk = (1 - shrinkage) * cov + shrinkage * mu * torch.eye(d, dtype=x.dtype, device=x.device)
    return mean, shrunk, shrinkage


class GaussianDensity:
    """Mahalanobis distance to the training features under a shrunk Gaussian (CutPaste's scorer)."""

    def fit(self, features: Tensor) -> GaussianDensity:
        """features: (N, D) float, normal samples."""
        features = F.normalize(features.float(), dim=1)
        mean, cov, self.shrinkage = ledoit_wolf(features)
        self.mean, self.precision = mean.float(), torch.linalg.inv(cov).float()
        return self

    def score(self, features: Tensor) -> Tensor:
        """(M,) float distances of (M, D) features; higher = more anomalous."""
        diff = F.normalize(features.float(), dim=1) - self.mean
        return ((diff @ self.precision) * diff).sum(dim=1).clamp_min(0).sqrt()


class KNNDensity:
    """Mean cosine distance to the k nearest training features (the seed's scorer)."""

    def __init__(self, k: int = 3, block: int = 1024) -> None:
        self.k, self.block = k, block

    def fit(self, features: Tensor) -> KNNDensity:
        """features: (N, D) float, normal samples; needs N >= k."""
        if len(features) < self.k:
            raise ValueError(f"kNN with k={self.k} needs at least {self.k} training features; got {len(features)}.")
        self.bank = F.normalize(features.float(), dim=1)
        return self

    def score(self, features: Tensor) -> Tensor:
        """(M,) float scores of (M, D) features, computed in blocks of test features."""
        scores = []
        for chunk in F.normalize(features.float(), dim=1).split(self.block):
            similarity = chunk @ self.bank.T  # (block, N): linear in the training set
            scores.append(1 - similarity.topk(self.k, dim=1).values.mean(dim=1))
        return torch.cat(scores)


def create_density(name: str, k: int = 3) -> GaussianDensity | KNNDensity:
    """``"gaussian"`` or ``"knn"`` (with ``k`` neighbours)."""
    if name == "gaussian":
        return GaussianDensity()
    if name == "knn":
        return KNNDensity(k)
    raise ValueError(f"unknown density {name!r}: choose 'gaussian' or 'knn'.")


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(images), batch_size):
        yield normalise(images[start : start + batch_size])


@torch.no_grad()
def embed_images(model: PretextModel, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N, 512) pooled features of (N, 3, S, S) uint8 images, in eval mode, in batches."""
    model.eval()
    return torch.cat([model.embed(x).float() for x in _batches(images, batch_size)])


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of (M, 1, H, W) maps (reflect padding), sigma in pixels."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(maps, (radius, radius, 0, 0), mode="reflect")
    maps = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(maps, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1))


_LAYER_CHANNELS = {"layer1": 64, "layer2": 128, "layer3": 256}


class PatchScorer:
    """Anomaly maps from Gaussians of dense intermediate features.

    Features of ``layers`` are upsampled to the grid of the first one and concatenated; a fixed
    random subset of ``channels`` of them is kept. ``shared=False`` fits one Gaussian per grid
    location (the default: objects that sit still look alike at each place), ``shared=True`` one
    Gaussian for all locations. Maps are Mahalanobis distances, upsampled to the image and
    smoothed with a Gaussian of ``sigma`` pixels.
    """

    def __init__(
        self,
        channels: int = 100,
        sigma: float = 4.0,
        layers: tuple[str, ...] = ("layer2", "layer1"),
        shared: bool = False,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        unknown = set(layers) - set(_LAYER_CHANNELS)
        if not layers or unknown:
            raise ValueError(f"layers={layers!r}: choose among {sorted(_LAYER_CHANNELS)}.")
        available = sum(_LAYER_CHANNELS[name] for name in layers)
        if not 1 <= channels <= available:
            raise ValueError(f"channels={channels}: {layers} have {available}; keep between 1 and {available}.")
        self.channels, self.sigma, self.layers, self.shared = channels, sigma, layers, shared
        self.seed, self.batch_size = seed, batch_size

    @torch.no_grad()
    def _features(self, model: PretextModel, images: Tensor) -> Iterator[Tensor]:
        """Per batch: (b, channels, h, w) float features on the grid of the first layer."""
        model.eval()
        for x in _batches(images, self.batch_size):
            maps = model.feature_maps(x)
            grid = maps[self.layers[0]].shape[-2:]
            stacked = [F.interpolate(maps[name].float(), size=grid, mode="bilinear", align_corners=False)
                       for name in self.layers]
            yield torch.cat(stacked, dim=1)[:, self.keep]

    @torch.no_grad()
    def fit(self, model: PretextModel, images: Tensor) -> PatchScorer:
        """Fit on (N, 3, S, S) uint8 normal images: accumulate feature sums, then shrink."""
        generator = torch.Generator().manual_seed(self.seed)
        available = sum(_LAYER_CHANNELS[name] for name in self.layers)
        self.keep = torch.randperm(available, generator=generator)[: self.channels].sort().values.to(images.device)
        count, total, outer = 0, 0.0, 0.0
        for f in self._features(model, images):
            f = f.double().flatten(2).permute(2, 0, 1)  # (L, b, D)
            if self.shared:
                f = f.reshape(1, -1, f.shape[-1])  # every location is a sample of one Gaussian
            count += f.shape[1]
            total = total + f.sum(dim=1)
            outer = outer + f.transpose(1, 2) @ f
        mean = total / count  # (L or 1, D)
        cov = outer / count - mean[:, :, None] * mean[:, None, :]
        # Shrink each covariance toward its mean variance; a fixed 1% of it plus a small ridge
        # keeps every one invertible with a few hundred training images.
        mu = cov.diagonal(dim1=1, dim2=2).mean(dim=1)[:, None, None]
        eye = torch.eye(self.channels, dtype=cov.dtype, device=cov.device)
        cov = 0.99 * cov + 0.01 * mu * eye + 1e-6 * eye
        self.mean, self.precision = mean.float(), torch.linalg.inv(cov).float()
        return self

    @torch.no_grad()
    def score(self, model: PretextModel, images: Tensor) -> Tensor:
        """(M, 1, S, S) float anomaly maps of (M, 3, S, S) uint8 images."""
        maps = []
        for f in self._features(model, images):
            b, d, h, w = f.shape
            diff = f.flatten(2).permute(2, 0, 1) - self.mean[:, None, :]  # (L, b, D)
            dist = ((diff @ self.precision) * diff).sum(dim=2).clamp_min(0).sqrt()  # (L, b)
            maps.append(dist.T.reshape(b, 1, h, w))
        maps = F.interpolate(torch.cat(maps), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return gaussian_blur(maps, self.sigma)
