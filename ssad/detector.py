"""A trained detector in one module and one file: network, fitted scorers, image score, thresholds.

    detector = ssad.load_detector("runs/screw/20261201-2140/detector.pt", device="cuda")
    out = detector(images)          # (B, C, H, W) uint8, or float in [0, 1], any size
    out.scores, out.maps            # (B,) and (B, 1, H, W) float: higher = more anomalous
    out.anomalous, out.defect_masks # (B,) bool and (B, 1, H, W) bool: the thresholds' decisions

`python -m ssad.run` fits one (`ssad.selection.select_and_fit`, which also chooses its scoring
size, map source and image score on a synthetic validation set) and writes ``detector.pt`` into
the run folder; `python -m ssad.predict` scores new images with it, `python -m ssad.export`
traces it. `fit_detector` fits one with given settings.

The anomaly map comes from the patch memory, the network's segmentation head (where it was
trained with one), or their calibrated fusion (`ssad.anomaly_map`). Scoring keeps each source's
scores on its own coarse grid (`CoarseScores`) until a map is drawn at full size: a whole training
set's held-out scores fit in memory, and every map source and image score is computed from them.

Thresholds: ``"f1"`` are the image and pixel thresholds at F1-max on the run's labelled test split;
``"normal"`` come from normal training images alone (``score.normal_quantile`` of their held-out
image scores and of their maps' maxima, each fold scored by scorers fitted on the others), for
users without labelled defects: a new normal image is flagged with a probability of about
``1 - normal_quantile``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssad._version import __version__
from ssad.anomaly_map import AnomalyMap
from ssad.atomic import atomic_write
from ssad.config import ScoreConfig, ValidationConfig
from ssad.distributed import gather_rows, share_of
from ssad.image_score import STATISTICS, ImageScore, map_statistics
from ssad.model import MAP_LAYERS, PretextModel, normalise
from ssad.registry import DENSITIES, PATCH_SCORERS
from ssad.score import (
    GaussianDensity,
    KNNDensity,
    PatchKNN,
    PatchScorer,
    create_density,
    create_patch_scorer,
    stack_features,
)

__all__ = [
    "CoarseScores", "Detection", "Detector", "Embedding", "THRESHOLDS", "embed", "embed_batches", "fit_detector",
    "fit_scorers", "fold_indices", "held_out_scores", "score_coarse", "coarse_statistics", "calibrate_map", "map_for",
    "set_normal_thresholds",
    "load_detector",
    "find_detector", "DETECTOR_FORMAT", "SIGMA_SIDE", "scaled_sigma",
]

#: Bumped whenever a saved detector's layout changes; `load_detector` reads this one and those of
#: `_READABLE_FORMATS` (1: without the image-score module, its two scores needing no state;
#: 2: without the map source, always the memory's map).
DETECTOR_FORMAT = 3
_READABLE_FORMATS = (1, 2, DETECTOR_FORMAT)
THRESHOLDS = ("f1", "normal")
#: Images per forward pass when scoring a stack of images.
_BATCH = 32
#: `ScoreConfig.sigma` is in pixels of an image of this side: a detector at another side scales it
#: (`scaled_sigma`), so that the smoothing covers the same share of the image at every size.
SIGMA_SIDE = 256


def scaled_sigma(sigma: float, image_size: int) -> float:
    """The smoothing, in pixels at ``image_size``, of ``sigma`` pixels at `SIGMA_SIDE`."""
    return sigma * image_size / SIGMA_SIDE


class Detection(NamedTuple):
    """``scores`` (B,) float, ``maps`` (B, 1, H, W) float, ``anomalous`` (B,) bool, ``defect_masks``
    (B, 1, H, W) bool: image and pixel decisions at the detector's thresholds."""

    scores: Tensor
    maps: Tensor
    anomalous: Tensor
    defect_masks: Tensor


@dataclass(frozen=True)
class Embedding:
    """What the network makes of a stack of images at one side, computed once for every fit and
    score on them: ``features`` (N, C, h, w) float, all channels of the patch layers
    (`ssad.score.stack_features`), or None where no memory needs them; ``pooled`` (N, 512) float,
    or None where no density needs it; ``head`` (N, 1, S/4, S/4) float segmentation-head logits,
    or None where no map uses them."""

    features: Tensor | None
    pooled: Tensor | None
    head: Tensor | None
    image_size: int

    def __getitem__(self, index: Tensor | slice) -> Embedding:
        """The embedding of the images at ``index`` (N,) int64 or bool, or a slice."""
        return Embedding(*(None if t is None else t[index] for t in (self.features, self.pooled, self.head)),
                         self.image_size)

    def without_features(self) -> Embedding:
        """The same embedding without its patch features (what is kept of a streamed batch)."""
        return Embedding(None, self.pooled, self.head, self.image_size)

    @staticmethod
    def cat(parts: list[Embedding], image_size: int) -> Embedding:
        """One embedding of ``parts`` in order (of images at ``image_size``; none: all None)."""
        return Embedding(*(None if not parts or getattr(parts[0], name) is None
                           else torch.cat([getattr(p, name) for p in parts])
                           for name in ("features", "pooled", "head")), image_size)


@dataclass(frozen=True)
class CoarseScores:
    """Each part's scores of a stack of images, before a map is drawn at full size: ``memory``
    (N, 1, h, w) float patch scores on the features' grid, ``head`` (N, 1, h', w') float head
    logits, ``density`` (N,) float image densities; each None where not computed. A few
    kilobytes per image, where a full-size map is hundreds."""

    memory: Tensor | None
    head: Tensor | None
    density: Tensor | None
    image_size: int

    def __getitem__(self, index: Tensor | slice) -> CoarseScores:
        return CoarseScores(*(None if t is None else t[index] for t in (self.memory, self.head, self.density)),
                            self.image_size)

    def __len__(self) -> int:
        return len(next(t for t in (self.memory, self.head, self.density) if t is not None))

    def batches(self, batch_size: int = _BATCH) -> list[CoarseScores]:
        return [self[i : i + batch_size] for i in range(0, len(self), batch_size)]

    @staticmethod
    def gather(parts: list[tuple[Tensor, CoarseScores]]) -> CoarseScores:
        """One stack from ``(rows, scores)`` parts whose (n_i,) int64 rows together cover
        ``range(N)`` once: row r of the result is the part's score given for r."""
        order = torch.cat([rows for rows, _ in parts]).argsort()
        first = parts[0][1]
        return CoarseScores(*(None if getattr(first, name) is None
                              else torch.cat([getattr(c, name) for _, c in parts])[order]
                              for name in ("memory", "head", "density")), first.image_size)


def score_coarse(anomaly_map: AnomalyMap, coarse: CoarseScores, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Anomaly maps (N, 1, S, S) float and image statistics (N, 3) float (`STATISTICS`; the
    density's column is NaN where there is none) of ``coarse`` scores, under ``anomaly_map``: in
    one pass (traceable: what a detector's forward does), or ``batch_size`` images at a time."""
    if batch_size is not None:
        parts = [score_coarse(anomaly_map, part) for part in coarse.batches(batch_size)]
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])
    size = (coarse.image_size, coarse.image_size)
    maps = anomaly_map(coarse.memory, coarse.head, size)
    if coarse.density is not None:
        density = coarse.density
    else:
        # full_like keeps the batch size symbolic: an exported detector takes any batch.
        density = torch.full_like(maps[:, 0, 0, 0], float("nan"))
    return maps, torch.cat([map_statistics(maps), density[:, None].float()], dim=1)


def coarse_statistics(anomaly_map: AnomalyMap, coarse: CoarseScores, batch_size: int = _BATCH) -> Tensor:
    """(N, 3) float image statistics of ``coarse`` scores under ``anomaly_map`` (`score_coarse`'s),
    ``batch_size`` images at a time: one batch's full-size maps are held, never the whole set's
    (thousands of training images at 320 px make gigabytes of maps)."""
    return torch.cat([score_coarse(anomaly_map, part)[1] for part in coarse.batches(batch_size)])


class Detector(nn.Module):
    """Scores images: the pretext network, the patch scorer on its feature maps (None where the
    map comes from the head alone), the map source (`ssad.anomaly_map.AnomalyMap`), the image
    score (`ssad.image_score.ImageScore`) and, where that needs it, the image density on the
    pooled features, at ``image_size`` (chosen by the run's validation or given by the config).

    ``forward`` resizes any input to ``image_size`` (bilinear, antialiased), scores it, and brings
    the maps back to the input's size. Thresholds are buffers (``image_threshold_f1``, ...);
    ``use_thresholds`` picks which pair the decisions use ("f1" when the run had labelled test
    images, else "normal").
    """

    def __init__(self, model: PretextModel, density: GaussianDensity | KNNDensity | None,
                 patches: PatchScorer | None, image_size: int, image_score: str | ImageScore = "map_max",
                 anomaly_map: AnomalyMap | None = None, head_size: int = 0) -> None:
        super().__init__()
        score = image_score if isinstance(image_score, ImageScore) else ImageScore(image_score)
        if score.needs_density and density is None:
            raise ValueError(f'image_score="{score.kind}" needs a fitted density.')
        anomaly_map = anomaly_map if anomaly_map is not None else AnomalyMap("memory", _given(patches).sigma)
        if anomaly_map.needs_memory and patches is None:
            raise ValueError(f'the "{anomaly_map.kind}" map needs a fitted patch scorer.')
        if anomaly_map.needs_head and model.segmentation is None:
            raise ValueError(f'the "{anomaly_map.kind}" map needs a network with a segmentation head: train with '
                             "train.segmentation=true, or use score.map_source=\"memory\".")
        self.model, self.density, self.patches, self.image_size = model, density, patches, image_size
        self.image_score, self.anomaly_map = score, anomaly_map
        #: The side the segmentation head sees the images at (its training size; 0: none used).
        self.head_size = (head_size or image_size) if anomaly_map.needs_head else 0
        for kind in THRESHOLDS:
            for level in ("image", "pixel"):
                self.register_buffer(f"{level}_threshold_{kind}", torch.tensor(float("inf")))
        self.thresholds = "normal"
        self.eval()

    def use_thresholds(self, kind: str) -> Detector:
        if kind not in THRESHOLDS:
            raise ValueError(f"thresholds {kind!r}: choose one of {THRESHOLDS}.")
        self.thresholds = kind
        return self

    def set_thresholds(self, kind: str, image: float, pixel: float) -> None:
        getattr(self, f"image_threshold_{kind}").fill_(image)
        getattr(self, f"pixel_threshold_{kind}").fill_(pixel)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Detection:
        """``images``: (B, 1 or 3, H, W) uint8, or float in [0, 1]."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images of shape {tuple(images.shape)}: expected (B, 1 or 3, H, W).")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = x.expand(-1, 3, -1, -1)  # grayscale as RGB, as the data layer reads it
        # Always resampled (an identity at the scoring size), so a traced detector takes any size.
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                          align_corners=False)
        maps, statistics = self.maps_and_statistics(x)
        scores = self.image_score(statistics)
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        image_threshold = getattr(self, f"image_threshold_{self.thresholds}")
        pixel_threshold = getattr(self, f"pixel_threshold_{self.thresholds}")
        return Detection(scores, maps, scores >= image_threshold, maps >= pixel_threshold)

    @property
    def patch_layers(self) -> tuple[str, ...]:
        """The layers the patch scorer reads (none without one)."""
        return () if self.patches is None else self.patches.layers

    def maps_and_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Anomaly maps (B, 1, S, S) float and image statistics (B, 3) float (`STATISTICS`; the
        density's column is NaN where no density is fitted) of (B, 3, S, S) float images in
        [0, 1] at the scoring size. The network runs only as deep as what is fitted needs."""
        embedding = _embed_batch(self.model, normalise(x), self.patch_layers, self.density is not None,
                                 self.head_size)
        return self.score_embedding(embedding)

    def coarse_scores(self, embedding: Embedding) -> CoarseScores:
        """Every part's `CoarseScores` of images already embedded at the scoring size: the
        memory's where there is a patch scorer and the embedding has features, the head's where
        the embedding has them, the density's where one is fitted."""
        memory = None if self.patches is None or embedding.features is None \
            else self.patches.grid_scores(embedding.features)
        density = None if self.density is None else self.density.score(embedding.pooled)
        return CoarseScores(memory, embedding.head, density, embedding.image_size)

    def embed(self, images: Tensor, batch_size: int = _BATCH) -> Embedding:
        """`embed` (N, 3, S, S) uint8 images as this detector needs them."""
        return embed(self.model, images, self.patch_layers, self.density is not None, self.head_size, batch_size)

    def coarse_scores_of(self, images: Tensor, batch_size: int = _BATCH) -> CoarseScores:
        """`coarse_scores` of (N, 3, S, S) uint8 images at the scoring size, embedded batch by batch."""
        parts = [self.coarse_scores(part) for part in embed_batches(
            self.model, images, self.patch_layers, self.density is not None, self.head_size, batch_size)]
        return CoarseScores(*(None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])
                              for name in ("memory", "head", "density")), images.shape[-1])

    def score_embedding(self, embedding: Embedding) -> tuple[Tensor, Tensor]:
        """`maps_and_statistics` of images already embedded (`embed`, at the scoring size)."""
        return score_coarse(self.anomaly_map, self.coarse_scores(embedding))

    def statistics_of(self, coarse: CoarseScores) -> Tensor:
        """(N, 3) float statistics of ``coarse`` scores under this detector's map, in batches."""
        return coarse_statistics(self.anomaly_map, coarse)

    def score_all(self, images: Tensor, batch_size: int = _BATCH) -> tuple[Tensor, Tensor]:
        """Image scores (N,) and maps (N, 1, S, S) of (N, C, S, S) images, in batches."""
        outs = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.cat([o.scores for o in outs]), torch.cat([o.maps for o in outs])

    def spec(self) -> dict[str, Any]:
        """What `load_detector` rebuilds the modules from (the tensors are in the state dict)."""
        patches = None if self.patches is None else \
            [type(self.patches).__name__, {name: getattr(self.patches, name) for name in self.patches.options}]
        density = {"k": self.density.k} if isinstance(self.density, KNNDensity) else {}
        density = None if self.density is None else [type(self.density).__name__, density]
        return {
            "image_size": self.image_size,
            "image_score": self.image_score.kind,
            "map_source": [self.anomaly_map.kind, self.anomaly_map.sigma],
            "num_classes": self.model.classifier.out_features,
            "segmentation": self.model.segmentation is not None,
            "head_size": self.head_size,
            "thresholds": self.thresholds,
            "density": density,
            "patches": patches,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` atomically: format, ssad version, spec and state dict (on the CPU)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {"format": DETECTOR_FORMAT, "ssad": __version__, "spec": self.spec(), "state": state}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _given(patches: PatchScorer | None) -> PatchScorer:
    if patches is None:
        raise ValueError("a detector without a patch scorer needs its map source given (anomaly_map=...).")
    return patches


def _embed_batch(model: PretextModel, x: Tensor, layers: tuple[str, ...], pooled: bool, head: int) -> Embedding:
    """The `Embedding` of normalised (B, 3, S, S) images ``x``: the patch ``layers``' stacked
    features (none for no layers), with ``pooled`` the pooled features, with ``head`` > 0 the
    segmentation head's logits of the images seen at ``head`` pixels. The head sees them at the
    side it was trained at: a head trained at 128 px met its defects at that scale, while the
    memory is fitted at whatever size it scores."""
    side = x.shape[-1]
    at_side = head == side
    if pooled:
        vectors, maps = model.embed_and_maps(x)
        vectors = vectors.float()
    else:
        vectors = None
        maps = model.feature_maps(x, MAP_LAYERS if at_side else layers) if layers or at_side else {}
    features = stack_features(maps, layers) if layers else None
    logits = None
    if at_side:
        logits = model.segment_maps(maps).float()
    elif head:
        small = F.interpolate(x, size=(head, head), mode="bilinear", antialias=True, align_corners=False)
        logits = model.segment(small).float()
    return Embedding(features, vectors, logits, side)


@torch.no_grad()
def embed_batches(model: PretextModel, images: Tensor, layers: tuple[str, ...], pooled: bool, head: int = 0,
                  batch_size: int = _BATCH, rows: Tensor | None = None) -> Iterator[Embedding]:
    """The `Embedding` of (N, 3, S, S) uint8 images (of those at ``rows`` (n,) int64 only, where
    given), one batch of ``batch_size`` at a time (eval mode): a training set's patch features need
    never be held all at once, nor a copy of its chosen images. ``head``: the side the
    segmentation head sees them at (0: no head logits)."""
    model.eval()
    count = len(images) if rows is None else len(rows)
    for i in range(0, count, batch_size):
        batch = images[i : i + batch_size] if rows is None else images[rows[i : i + batch_size]]
        yield _embed_batch(model, normalise(batch), layers, pooled, head)


def embed(model: PretextModel, images: Tensor, layers: tuple[str, ...], pooled: bool, head: int = 0,
          batch_size: int = _BATCH) -> Embedding:
    """`embed_batches`, all of them in one `Embedding`."""
    return Embedding.cat(list(embed_batches(model, images, layers, pooled, head, batch_size)), images.shape[-1])


def _new_patch_scorer(cfg: ScoreConfig, moves: bool, sigma: float) -> PatchScorer:
    """The patch scorer ``cfg`` names ("auto" resolved by ``moves``), not fitted yet."""
    name = cfg.patch_scorer_for(moves)
    options = dict(channels=cfg.patch_channels, sigma=sigma, layers=cfg.patch_layers)
    if name == "knn":
        options.update(memory=cfg.patch_memory, candidates=cfg.patch_candidates)
    return create_patch_scorer(name, **options)


def _mine(count: int, device: torch.device, shared_out: bool) -> Tensor:
    """(n,) int64: the images this process embeds: its rank's share under torchrun where the
    work is ``shared_out`` (`ssad.distributed.share_of`), else all ``count``."""
    return share_of(count, device) if shared_out else torch.arange(count, device=device)


def _kept_while_streaming(batches: Iterator[Embedding], kept: list[Embedding]) -> Iterator[Tensor]:
    """The patch features of ``batches``, one batch at a time; the rest of each (pooled features,
    head logits: small) is appended to ``kept``."""
    for part in batches:
        kept.append(part.without_features())
        yield part.features


def _all_rows(rows: Tensor, embedded: Embedding, shared_out: bool) -> Embedding:
    """``embedded`` (pooled features and head logits of the images at ``rows``) for every image,
    gathered from the ranks where the work was ``shared_out``."""
    if not shared_out:
        return embedded
    _, (pooled, head) = gather_rows(rows, embedded.pooled, embedded.head)
    return Embedding(None, pooled, head, embedded.image_size)


def fit_scorers(model: PretextModel, train: Tensor, cfg: ScoreConfig, moves: bool, image_score: str,
                density: bool = False, map_source: str = "memory", head_size: int = 0) -> Detector:
    """A `Detector` scoring at the side of (N, 3, S, S) uint8 normal ``train`` images with
    ``map_source``: its patch scorer (``cfg``, "auto" resolved by ``moves``) fitted on them where
    the map needs one, its image density where ``image_score`` needs it or ``density`` asks for
    it, its head, where the map uses it, seeing images at ``head_size`` (0: the scoring size); no
    thresholds yet.

    The images are embedded and fed to the patch scorer batch by batch: the patch features of the
    whole set are never held at once. Under torchrun with the kNN memory each rank embeds its
    share of the images and the memory's candidates are gathered once (`ssad.score.PatchKNN`).
    """
    side = train.shape[-1]
    anomaly_map = AnomalyMap(map_source, scaled_sigma(cfg.sigma, side))
    needs = density or ImageScore(image_score).needs_density
    patches = _new_patch_scorer(cfg, moves, anomaly_map.sigma) if anomaly_map.needs_memory else None
    shared_out = patches is None or isinstance(patches, PatchKNN)
    rows = _mine(len(train), train.device, shared_out)
    batches = embed_batches(model, train, patches.layers if patches is not None else (), needs,
                            _head_side(anomaly_map, head_size, side), rows=rows)
    kept: list[Embedding] = []
    if patches is not None:
        patches.fit_stacked(_kept_while_streaming(batches, kept), len(train))
    else:
        kept = list(batches)
    embedded = _all_rows(rows, Embedding.cat(kept, side), shared_out)
    fitted = create_density(cfg.density, cfg.knn_k).fit(embedded.pooled) if needs else None
    return Detector(model, fitted, patches, side, image_score, anomaly_map, head_size).to(train.device)


def _head_side(source: AnomalyMap, head_size: int, side: int) -> int:
    """The side `embed` shows the head the images at: ``head_size`` (0: their own ``side``), or 0
    where ``source`` draws no head map."""
    return (head_size or side) if source.needs_head else 0


def fold_indices(count: int, folds: int, seed: int, device: torch.device | str = "cpu") -> list[Tensor]:
    """``folds`` disjoint (n_i,) int64 index sets covering ``range(count)``, in a seeded random
    order; an empty list when ``count < 2 * folds`` (too few images to hold a fold out)."""
    if count < 2 * folds:
        return []
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [part.to(device) for part in order.chunk(folds)]


def held_out_scores(model: PretextModel, train: Tensor, cfg: ScoreConfig, moves: bool, folds: list[Tensor],
                    density: bool, on_fold: Callable[[Detector, Tensor], None] | None = None,
                    memory: bool = True, head: int = 0) -> CoarseScores:
    """`CoarseScores` of every (N, 3, S, S) uint8 normal ``train`` image, its memory (where
    ``memory``) and its density (where ``density``) fitted on the other ``folds`` (held-out
    scores: in-sample ones run low, a kNN memory holding the image's own patches most of all); the
    head's logits (of the images seen at ``head`` pixels, 0: none) are the image's own (the head
    holds no image). ``on_fold(fitted, held)`` sees each fold's scorers and its indices (to score
    more images with the same held-out scorers).

    The images are embedded batch by batch, never all their patch features at once. A kNN memory
    is fitted once for all folds (`ssad.score.PatchKNN.fit_folds`: one coreset per fold, each fold
    scored by the others'; under torchrun each rank embeds and scores its share of the images);
    other patch scorers are fitted again on each fold's complement.
    """
    side = train.shape[-1]
    sigma = scaled_sigma(cfg.sigma, side)
    scorer = _new_patch_scorer(cfg, moves, sigma) if memory else None
    layers = scorer.layers if scorer is not None else ()
    one_fit = isinstance(scorer, PatchKNN)
    shared_out = scorer is None or one_fit
    fold_of = torch.empty(len(train), dtype=torch.int64, device=train.device)
    for i, held in enumerate(folds):
        fold_of[held] = i
    rows = _mine(len(train), train.device, shared_out)
    kept: list[Embedding] = []
    if one_fit:
        scorer.fit_folds(_kept_while_streaming(embed_batches(model, train, layers, density, head, rows=rows), kept),
                         fold_of)
    else:
        kept = list(embed_batches(model, train, (), density, head, rows=rows))
    embedded = _all_rows(rows, Embedding.cat(kept, side), shared_out)
    mine = torch.zeros(len(train), dtype=torch.bool, device=train.device)
    mine[rows] = True
    parts: list[tuple[Tensor, CoarseScores]] = []
    for i, held in enumerate(folds):
        rest = (fold_of != i).nonzero().squeeze(1)
        patches = None
        if memory:
            patches = scorer.held_out(i) if one_fit else _new_patch_scorer(cfg, moves, sigma).fit_stacked(
                _kept_while_streaming(embed_batches(model, train, layers, False, rows=rest), []), len(rest))
        fitted = None if not density else create_density(cfg.density, cfg.knn_k).fit(embedded.pooled[rest])
        detector = Detector(model, fitted, patches, side, "map_max", AnomalyMap("memory" if memory else "head", sigma),
                            head).to(train.device)
        scored = held[mine[held]]  # this rank's images of the fold
        if len(scored):
            grid = None if not memory else torch.cat([patches.grid_scores(f) for f in _kept_while_streaming(
                embed_batches(model, train, layers, False, rows=scored), [])])
            own = embedded[scored]
            parts.append((scored, CoarseScores(grid, own.head, None if fitted is None else fitted.score(own.pooled),
                                               side)))
        if on_fold is not None:
            on_fold(detector, held)
    mine_scored = CoarseScores.gather(parts)
    if not shared_out:
        return mine_scored
    order = torch.cat([r for r, _ in parts]).sort().values
    _, (grid, logits, scores) = gather_rows(order, mine_scored.memory, mine_scored.head, mine_scored.density)
    return CoarseScores(grid, logits, scores, side)


def set_normal_thresholds(detector: Detector, normal: CoarseScores, quantile: float) -> Detector:
    """Calibrate ``detector``'s map (where it is the fusion) and image score (likewise) on the
    held-out `CoarseScores` of normal images ``normal``, and set its "normal" thresholds: the
    ``quantile`` of their image scores and of their maps' maxima."""
    if detector.anomaly_map.kind == "fusion":
        calibrate_map(detector.anomaly_map, normal)
    statistics = detector.statistics_of(normal)
    if detector.image_score.kind == "fusion":
        detector.image_score.calibrate(statistics)
    scores = detector.image_score(statistics)
    detector.set_thresholds("normal", float(scores.quantile(quantile)),
                            float(statistics[:, STATISTICS.index("map_max")].quantile(quantile)))
    return detector


def map_for(source: str, sigma: float, normal: CoarseScores) -> AnomalyMap:
    """The ``source`` map smoothed with ``sigma`` pixels; a fusion calibrated on held-out normal
    images' `CoarseScores` ``normal``."""
    anomaly_map = AnomalyMap(source, sigma)
    return calibrate_map(anomaly_map, normal) if anomaly_map.kind == "fusion" else anomaly_map


def calibrate_map(anomaly_map: AnomalyMap, normal: CoarseScores) -> AnomalyMap:
    """Calibrate a fusion ``anomaly_map`` on held-out normal images' `CoarseScores`: the maxima of
    each source's map."""
    size = (normal.image_size, normal.image_size)
    maxima = torch.cat([torch.stack([m.amax(dim=(1, 2, 3)) for m in anomaly_map.source_maps(p.memory, p.head, size)],
                                    dim=1) for p in normal.batches()])
    return anomaly_map.calibrate(maxima)


def fit_detector(model: PretextModel, train: Tensor, cfg: ScoreConfig, moves: bool,
                 folds: int = ValidationConfig.folds, seed: int = ValidationConfig.seed,
                 head_size: int = 0) -> Detector:
    """Fit a detector with the settings of ``cfg`` (an "auto" image score is "map_max", an "auto"
    map source "memory": nothing is chosen here; `ssad.selection.select_and_fit` chooses) on
    (N, 3, S, S) uint8 normal ``train`` images, scoring at their side; its "normal" thresholds
    (and the fusions' standardisation) come from held-out scores, ``folds``-fold, or in-sample
    where there are fewer than ``2 * folds`` images. ``folds`` and ``seed`` default to
    `ValidationConfig`'s: the folds a run holds out with default settings. ``head_size``: the
    side the segmentation head sees images at, its training size (0: the scoring size)."""
    image_score = "map_max" if cfg.image_score == "auto" else cfg.image_score
    map_source = "memory" if cfg.map_source == "auto" else cfg.map_source
    density = ImageScore(image_score).needs_density
    source = AnomalyMap(map_source)
    detector = fit_scorers(model, train, cfg, moves, image_score, map_source=map_source, head_size=head_size)
    parts = fold_indices(len(train), folds, seed, train.device)
    if parts:
        normal = held_out_scores(model, train, cfg, moves, parts, density, memory=source.needs_memory,
                                 head=_head_side(source, head_size, train.shape[-1]))
    else:  # too few images to hold some out: in-sample, and so somewhat low
        normal = detector.coarse_scores_of(train)
    return set_normal_thresholds(detector, normal, cfg.normal_quantile)


def find_detector(run: str | os.PathLike) -> Path:
    """``run/detector.pt``; for a folder of runs (``runs/<category>``), the newest run's (run
    folders are named by their start time). The path returned may not exist: `load_detector` says so."""
    run = Path(run)
    if not (run / "detector.pt").is_file():
        runs = sorted(p for p in run.glob("*/detector.pt")) if run.is_dir() else []
        if runs:
            return runs[-1]
    return run / "detector.pt"


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> Detector:
    """The `Detector` saved at ``path`` (by `python -m ssad.run`), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no detector at {path}; a finished `python -m ssad.run` writes RUN/detector.pt "
            f"(for an older run folder: `python -m ssad.run --resume --out RUN`)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable detector file ({error}).") from error
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE_FORMATS:
        written = f"format {payload.get('format')!r} by ssad {payload.get('ssad')}" \
            if isinstance(payload, dict) else "no format"
        raise ValueError(
            f"{path} is a detector of {written}; ssad {__version__} reads format {DETECTOR_FORMAT}. "
            f"Re-create it with `python -m ssad.run --resume --out RUN` (refits from the run's checkpoint)."
        )
    spec, state = payload["spec"], payload["state"]
    density = None if spec["density"] is None else DENSITIES.by_class_name(spec["density"][0])(**spec["density"][1])
    patches = None
    if spec["patches"] is not None:
        patch_kind, patch_options = spec["patches"]
        patch_options["layers"] = tuple(patch_options["layers"])
        patches = PATCH_SCORERS.by_class_name(patch_kind)(**patch_options)
    # Detectors of format 2 and older always drew the memory's map.
    source, sigma = spec.get("map_source", ["memory", None if patches is None else patches.sigma])
    detector = Detector(PretextModel(num_classes=spec["num_classes"], segmentation=spec.get("segmentation", False)),
                        density, patches, spec["image_size"],
                        spec.get("image_score", "density"),  # detectors saved before image_score
                        AnomalyMap(source, sigma), spec.get("head_size", 0))
    # The fitted buffers exist only once fitted: register them from the file, then load the rest.
    for key in [k for k in state if k.startswith(("density.", "patches.", "image_score.", "anomaly_map."))]:
        owner, name = key.split(".", 1)
        getattr(detector, owner).register_buffer(name, state[key])
    detector.load_state_dict(state)
    return detector.use_thresholds(spec["thresholds"]).to(device).eval()
