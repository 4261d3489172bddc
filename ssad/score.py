"""Scoring: densities fitted on normal features, image scores and anomaly maps, all in torch.

Image level: pooled 512-d features of the trained network, L2-normalised, scored by
- `GaussianDensity` (default, as in CutPaste): Mahalanobis distance to the mean under a
  Ledoit-Wolf shrunk covariance;
- `KNNDensity`: mean cosine distance to the k nearest training features.

Pixel level (`PatchScorer`): dense features of intermediate layers (by default layer2 and layer1,
resampled to layer2's grid, i.e. one feature per 8x8 pixels), all their channels or a fixed random
subset, scored per location and upsampled to the image, Gaussian-smoothed. `PatchGaussian`
fits one Gaussian per grid location (objects that sit still) or one shared by all; `PatchKNN`
measures the distance to the nearest normal patch of a coreset memory (objects that move).
bench/localization.py compares them.

Every scorer is an `nn.Module` whose fitted state (means, precisions, memory banks, kept channels)
is registered as buffers by ``fit``: a `ssad.detector.Detector` saves and moves them with its network.

Nothing here builds a matrix that grows with the square of the training set: the covariance is
accumulated from feature sums, `PatchKNN` scores features against its memory bank in blocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssad.distributed import gather_rows, share_of
from ssad.model import PretextModel, normalise
from ssad.registry import DENSITIES, PATCH_SCORERS

__all__ = [
    "GaussianDensity",
    "KNNDensity",
    "PatchScorer",
    "PatchGaussian",
    "PatchKNN",
    "PATCH_SCORERS",
    "create_patch_scorer",
    "stack_features",
    "greedy_coreset",
    "create_density",
    "embed_images",
    "ledoit_wolf",
    "gaussian_blur",
    "smooth_map",
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


def _set_buffers(module: nn.Module, **tensors: Tensor) -> None:
    """Register fitted tensors as buffers: saved in the state dict, moved by ``.to(device)``."""
    for name, value in tensors.items():
        module.register_buffer(name, value)


@DENSITIES.register("gaussian")
class GaussianDensity(nn.Module):
    """Mahalanobis distance to the training features under a shrunk Gaussian (CutPaste's scorer)."""

    def fit(self, features: Tensor) -> GaussianDensity:
        """features: (N, D) float, normal samples."""
        features = F.normalize(features.float(), dim=1)
        mean, cov, self.shrinkage = ledoit_wolf(features)
        _set_buffers(self, mean=mean.float(), precision=torch.linalg.inv(cov).float())
        return self

    def score(self, features: Tensor) -> Tensor:
        """(M,) float distances of (M, D) features; higher = more anomalous."""
        diff = F.normalize(features.float(), dim=1) - self.mean
        return ((diff @ self.precision) * diff).sum(dim=1).clamp_min(0).sqrt()


@DENSITIES.register("knn")
class KNNDensity(nn.Module):
    """Mean cosine distance to the k nearest training features: no distribution assumed."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k

    def fit(self, features: Tensor) -> KNNDensity:
        """features: (N, D) float, normal samples; needs N >= k."""
        if len(features) < self.k:
            raise ValueError(f"kNN with k={self.k} needs at least {self.k} training features; got {len(features)}.")
        _set_buffers(self, bank=F.normalize(features.float(), dim=1))
        return self

    def score(self, features: Tensor) -> Tensor:
        """(M,) float scores of (M, D) features. The bank is one feature per training image, so an
        (M, N) similarity matrix stays small."""
        similarity = F.normalize(features.float(), dim=1) @ self.bank.T
        return 1 - similarity.topk(self.k, dim=1).values.mean(dim=1)


def create_density(name: str, k: int = 3) -> GaussianDensity | KNNDensity:
    """A `DENSITIES` part: ``"gaussian"`` or ``"knn"`` (with ``k`` neighbours, its one option)."""
    return DENSITIES.create(name, **({"k": k} if name == "knn" else {}))


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(images), batch_size):
        yield normalise(images[start : start + batch_size])


@torch.no_grad()
def embed_images(model: PretextModel, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N, 512) pooled features of (N, 3, S, S) uint8 images, in eval mode, in batches."""
    model.eval()
    return torch.cat([model.embed(x).float() for x in _batches(images, batch_size)])


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of (M, 1, H, W) maps (reflect padding), sigma in pixels, the kernel 3
    sigma to each side. kornia's filter: the same result as a hand-written separable one, and as
    fast or faster (bench/results/kornia_choice.json)."""
    if sigma <= 0:
        return maps
    size = 2 * max(1, math.ceil(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(maps, (size, size), (sigma, sigma), border_type="reflect")


def smooth_map(scores: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """(b, 1, *size) float anomaly maps from (b, 1, h, w) scores on a coarser grid: upsampled
    (bilinear) to the image and smoothed (`gaussian_blur`, ``sigma`` pixels at that size). The one
    way every map source (the memory's patch scores, the segmentation head's logits) becomes a map."""
    return gaussian_blur(F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False), sigma)


def _channels_of(layers: tuple[str, ...]) -> int:
    """Channels of ``layers``' maps stacked (`stack_features`)."""
    channels = PretextModel.map_channels()
    return sum(channels[name] for name in layers)


def stack_features(feature_maps: dict[str, Tensor], layers: tuple[str, ...]) -> Tensor:
    """(b, C, h, w) float: every channel of ``layers``' maps (from `PretextModel.feature_maps`),
    resampled to the grid of the first one and concatenated."""
    grid = feature_maps[layers[0]].shape[-2:]
    return torch.cat([F.interpolate(feature_maps[name].float(), size=grid, mode="bilinear", align_corners=False)
                      for name in layers], dim=1)


class PatchScorer(nn.Module):
    """Anomaly maps from dense intermediate features; subclasses say how a feature is scored.

    Features of ``layers`` are upsampled to the grid of the first one and concatenated; all of
    them are kept (``channels=0``) or a fixed random subset of ``channels``. Maps are the
    per-location scores, upsampled to the image and smoothed with a Gaussian of ``sigma`` pixels.
    """

    #: Constructor options a saved scorer is rebuilt from (`ssad.detector`).
    options = ("channels", "sigma", "layers", "seed", "batch_size")

    def __init__(
        self,
        channels: int = 0,
        sigma: float = 4.0,
        layers: tuple[str, ...] = ("layer2", "layer1"),
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        unknown = set(layers) - set(PretextModel.map_channels())
        if not layers or unknown:
            raise ValueError(f"layers={layers!r}: choose among {sorted(PretextModel.map_channels())}.")
        available = _channels_of(layers)
        if not 0 <= channels <= available:
            raise ValueError(f"channels={channels}: {layers} have {available}; keep between 1 and {available}, "
                             "or 0 for all.")
        super().__init__()
        self.channels = channels or available
        self.sigma, self.layers = sigma, layers
        self.seed, self.batch_size = seed, batch_size

    def stack(self, feature_maps: dict[str, Tensor]) -> Tensor:
        """`stack_features` of the scorer's layers: what `fit_stacked` fits and `maps_of_stacked`
        scores (a stack computed once serves every fit on the same images)."""
        return stack_features(feature_maps, self.layers)

    def anomaly_maps(self, feature_maps: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """(b, 1, *size) float smoothed anomaly maps from the network's feature maps of images of
        that ``size``; needs ``fit`` first."""
        return self.maps_of_stacked(self.stack(feature_maps), size)

    def maps_of_stacked(self, stacked: Tensor, size: tuple[int, int]) -> Tensor:
        """(b, 1, *size) float smoothed anomaly maps from (b, C, h, w) `stack` features."""
        return smooth_map(self.grid_scores(stacked), size, self.sigma)

    def grid_scores(self, stacked: Tensor) -> Tensor:
        """(b, 1, h, w) float scores on the features' grid of (b, C, h, w) `stack` features, before
        upsampling and smoothing (`smooth_map`): small enough to keep for a whole training set."""
        return self._score(stacked[:, self.keep])

    @torch.no_grad()
    def _features(self, model: PretextModel, images: Tensor) -> Iterator[dict[str, Tensor]]:
        """The network's feature maps of (N, 3, S, S) uint8 images, per batch, in eval mode."""
        model.eval()
        for x in _batches(images, self.batch_size):
            yield model.feature_maps(x, self.layers)

    @torch.no_grad()
    def fit(self, model: PretextModel, images: Tensor) -> PatchScorer:
        """Fit on (N, 3, S, S) uint8 normal images."""
        return self.fit_stacked((self.stack(maps) for maps in self._features(model, images)), len(images))

    @torch.no_grad()
    def fit_stacked(self, stacked: Iterable[Tensor], images: int | None = None) -> PatchScorer:
        """Fit on batches of (b, C, h, w) `stack` features of normal images, consumed one at a time
        (a generator that embeds them keeps only one batch in memory); ``images``: how many there
        are in all, where known (`PatchKNN` bounds its memory's candidates by it)."""
        self._fit(self._kept(stacked), images)
        return self

    def _kept(self, stacked: Iterable[Tensor]) -> Iterator[Tensor]:
        """The batches with the scorer's channels only (the fixed random subset drawn here)."""
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(_channels_of(self.layers), generator=generator)[: self.channels].sort().values
        batches = iter(stacked)
        first = next(batches)
        _set_buffers(self, keep=keep.to(first.device))
        return (part[:, self.keep] for part in itertools.chain([first], batches))

    @torch.no_grad()
    def score(self, model: PretextModel, images: Tensor) -> Tensor:
        """(M, 1, S, S) float anomaly maps of (M, 3, S, S) uint8 images."""
        size = tuple(images.shape[-2:])
        return torch.cat([self.anomaly_maps(maps, size) for maps in self._features(model, images)])

    def _fit(self, features: Iterator[Tensor], images: int | None) -> None:
        """Fit on batches of (b, D, h, w) normal features of ``images`` images (None: unknown)."""
        raise NotImplementedError

    def _score(self, features: Tensor) -> Tensor:
        """(b, 1, h, w) scores of (b, D, h, w) features; higher = more anomalous."""
        raise NotImplementedError


@PATCH_SCORERS.register("per_location", shared=False)
@PATCH_SCORERS.register("shared", shared=True)
class PatchGaussian(PatchScorer):
    """Mahalanobis distance under one Gaussian per grid location (``shared=False``: objects that
    sit still look alike at each place) or one Gaussian for all locations (``shared=True``)."""

    options = (*PatchScorer.options, "shared")
    #: Share of each covariance moved toward its mean variance times the identity: a fixed
    #: shrinkage keeps every per-location covariance invertible with a few hundred training images.
    SHRINKAGE = 0.01
    #: Added to the covariance's diagonal, so that channels that never vary still leave it invertible.
    RIDGE = 1e-6

    def __init__(self, *args, shared: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared

    def _fit(self, features: Iterator[Tensor], images: int | None) -> None:
        count, total, outer = 0, 0.0, 0.0
        for f in features:
            f = f.double().flatten(2).permute(2, 0, 1)  # (L, b, D)
            if self.shared:
                f = f.reshape(1, -1, f.shape[-1])  # every location is a sample of one Gaussian
            count += f.shape[1]
            total = total + f.sum(dim=1)
            outer = outer + f.transpose(1, 2) @ f
        mean = total / count  # (L or 1, D)
        cov = outer / count - mean[:, :, None] * mean[:, None, :]
        mu = cov.diagonal(dim1=1, dim2=2).mean(dim=1)[:, None, None]
        eye = torch.eye(self.channels, dtype=cov.dtype, device=cov.device)
        cov = (1 - self.SHRINKAGE) * cov + self.SHRINKAGE * mu * eye + self.RIDGE * eye
        _set_buffers(self, mean=mean.float(), precision=torch.linalg.inv(cov).float())

    def _score(self, features: Tensor) -> Tensor:
        b, _, h, w = features.shape
        diff = features.flatten(2).permute(2, 0, 1) - self.mean[:, None, :]  # (L, b, D)
        dist = ((diff @ self.precision) * diff).sum(dim=2).clamp_min(0).sqrt()  # (L, b)
        return dist.T.reshape(b, 1, h, w)


@PATCH_SCORERS.register("knn")
class PatchKNN(PatchScorer):
    """Distance to the nearest normal patch feature of any image at any place (a memory bank, as
    in PatchCore): no alignment assumed, so it suits objects that move.

    The bank keeps at most ``memory`` features, chosen in two stages whose cost is bounded
    whatever the number of training images N: each image's h x w patch features are first cut to
    its share of ``candidates`` (``candidates / N`` per image, by `greedy_coreset` within the
    image, so each image's rare patches survive), then a greedy k-centre coreset of ``memory``
    is chosen among those candidates (on a random 32-d projection). The features are consumed
    batch by batch: only the candidates are ever held, never every patch of the training set.

    `fit_folds` fits one memory per fold of the training images at once; `held_out` gives the
    memory without one fold's part, fitted without that fold's images: held-out scores without
    a refit.
    """

    def __init__(self, *args, memory: int = 10_000, candidates: int = 200_000, block: int = 1024,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if memory < 1 or candidates < memory:
            raise ValueError(f"memory={memory}, candidates={candidates}: keep at least one feature, and at least "
                             "as many candidates as the memory holds.")
        self.memory, self.candidates, self.block = memory, candidates, block
        #: (M,) int64: the fold of the image each bank feature came from (`fit_folds`; zeros
        #: after a plain fit). Not saved: only the fitting needs it.
        self.bank_fold: Tensor | None = None

    def _fit(self, features: Iterator[Tensor], images: int | None) -> None:
        self._fit_parts(features, images, fold_of=None)

    @torch.no_grad()
    def fit_folds(self, stacked: Iterable[Tensor], fold_of: Tensor) -> PatchKNN:
        """Fit on batches of (b, C, h, w) `stack` features of N normal images, in order, the
        fold of each given by ``fold_of`` (N,) int64 in [0, F): the bank is the union of one
        coreset per fold, ``memory / F`` features each, so that `held_out` (f) is a memory of
        images outside fold f only."""
        self._fit_parts(self._kept(stacked), len(fold_of), fold_of)
        return self

    def held_out(self, fold: int) -> PatchKNN:
        """A copy whose bank holds the features of every fold but ``fold`` (after `fit_folds`)."""
        if self.bank_fold is None:
            raise ValueError("held_out needs a memory fitted by fit_folds.")
        out = PatchKNN(**{name: getattr(self, name) for name in self.options}, memory=self.memory,
                       candidates=self.candidates, block=self.block)
        others = self.bank_fold != fold
        _set_buffers(out, keep=self.keep, bank=self.bank[others])
        out.bank_fold = self.bank_fold[others]
        return out

    def _fit_parts(self, features: Iterator[Tensor], images: int | None, fold_of: Tensor | None) -> None:
        """Stage 1 on each (b, D, h, w) batch, stage 2 in each fold of ``fold_of`` (None: one)
        (see the class). Under torchrun the batches are this rank's share of the ``images``
        (`ssad.distributed.share_of`): the candidates are gathered once, in the images' order, and
        every rank chooses the same memory among the same candidates."""
        candidates, positions, seen = [], [], 0
        for part in features:
            b, d = part.shape[:2]
            points = part.flatten(2).transpose(1, 2)  # (b, h*w, D)
            per_image = points.shape[1] if images is None else max(1, -(-self.candidates // images))
            if per_image < points.shape[1]:
                chosen = greedy_coreset(points, per_image, seed=self.seed)  # (b, per_image)
                points = points.gather(1, chosen[..., None].expand(-1, -1, d))
            candidates.append(points.reshape(-1, d))
            positions.append(torch.arange(seen, seen + b, device=part.device).repeat_interleave(points.shape[1]))
            seen += b
        positions = torch.cat(positions)
        # Each candidate's image: the stream's k-th image is this rank's k-th (all of them alone).
        rows = positions if images is None else share_of(images, positions.device)[positions]
        rows, (candidates,) = gather_rows(rows, torch.cat(candidates))
        tags = torch.zeros(len(rows), dtype=torch.int64, device=rows.device) if fold_of is None \
            else fold_of.to(rows.device)[rows]
        folds = int(tags.max()) + 1
        bank, bank_fold = [], []
        for f in range(folds):  # the memory's share of each fold: memory // folds, the rest to the first ones
            members = (tags == f).nonzero().squeeze(1)
            size = self.memory // folds + (f < self.memory % folds)
            chosen = members[greedy_coreset(candidates[members], size, seed=self.seed)]
            bank.append(candidates[chosen])
            bank_fold.append(tags[chosen])
        _set_buffers(self, bank=torch.cat(bank))
        self.bank_fold = torch.cat(bank_fold)

    def _score(self, features: Tensor) -> Tensor:
        b, d, h, w = features.shape
        queries = features.flatten(2).transpose(1, 2).reshape(-1, d)
        # Blocks of the bank, not of the queries: the bank's size is fixed once fitted, so a traced
        # detector (`ssad.export`) runs the same loop for any batch.
        first, *rest = self.bank.split(self.block)
        nearest = torch.cdist(queries, first).amin(dim=1)
        for chunk in rest:
            nearest = torch.minimum(nearest, torch.cdist(queries, chunk).amin(dim=1))
        return nearest.reshape(b, 1, h, w)


def greedy_coreset(points: Tensor, size: int, seed: int = 0, projection: int = 32) -> Tensor:
    """(..., min(size, N)) int64 indices of (..., N, D) ``points`` chosen by greedy k-centre
    selection, in each leading batch position independently: the first is the point farthest
    from their mean, each next one the point farthest from those chosen, measured on a random
    projection to ``projection`` dimensions (drawn from ``seed``). Covers the feature space
    evenly, rare features included; a set's choice depends on its points alone, not on what else
    is in the batch."""
    n, dim = points.shape[-2:]
    if size >= n:
        return torch.arange(n, device=points.device).expand(*points.shape[:-2], n)
    flat = points.reshape(-1, n, dim)
    if dim > projection:
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(dim, projection, generator=generator).to(flat) / math.sqrt(projection)
        flat = flat @ matrix
    batch = len(flat)
    rows = torch.arange(batch, device=flat.device)
    chosen = torch.empty(batch, size, dtype=torch.int64, device=flat.device)
    chosen[:, 0] = (flat - flat.mean(dim=1, keepdim=True)).square().sum(dim=2).argmax(dim=1)
    squares = flat.square().sum(dim=2)  # (batch, n)
    distance = torch.full((batch, n), math.inf, device=flat.device, dtype=flat.dtype)
    for i in range(1, size):  # fitting, not the hot path: one product with the points per centre
        last = chosen[:, i - 1]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, without a (batch, n, p) temporary
        to_centre = squares - 2 * torch.bmm(flat, flat[rows, last][:, :, None])[:, :, 0] + squares[rows, last, None]
        torch.minimum(distance, to_centre, out=distance)
        chosen[:, i] = distance.argmax(dim=1)
    return chosen.reshape(*points.shape[:-2], size)


def create_patch_scorer(name: str, **options: Any) -> PatchScorer:
    """A `PATCH_SCORERS` part: ``"per_location"`` or ``"shared"`` (`PatchGaussian`), ``"knn"``
    (`PatchKNN`); ``options`` go to the scorer (channels, sigma, layers, memory, ...)."""
    return PATCH_SCORERS.create(name, **options)
