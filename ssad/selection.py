"""Settings chosen per category on the synthetic validation set, under one stated rule.

    detector, selection = select_and_fit(model, load, config.score, config.validation, moves=data.moves)

The settings a user leaves at "auto" (``score.image_size``, ``score.map_source``,
``score.image_score``) are chosen among ``validation.sizes`` x ``validation.map_sources`` (those of
the segmentation head only where the network has one) x ``validation.image_scores``, with no
labelled defect:

1. The normal training images are split into ``validation.folds`` folds. At each candidate size,
   each fold is scored by scorers fitted on the other folds (cross-fitting: every image is held
   out once, and no image is scored by a memory that holds its own patches).
2. Up to ``validation.images`` held-out images also get a synthetic defect (`ssad.validation`:
   families the pretext never trained on), scored by the same held-out scorers.
3. Each candidate gets three validation figures: image AUROC (all held-out normal images against
   the defective copies), pixel AUROC and AUPRO (the defective copies and their normal originals,
   against the defects' masks). The fusions' standardisations come from the held-out normal images.
4. `RULE`: the candidate with the highest mean of its three figures wins; a tie (within
   `TIE`) goes to the smaller size (it costs less), then to the earlier map source of
   `ssad.anomaly_map.MAP_SOURCES` and the earlier image score of `ssad.image_score.IMAGE_SCORES`
   (the simpler ones).

The final detector is fitted at the chosen size on **all** normal training images; its "normal"
thresholds and its fusion's standardisation come from the chosen size's held-out scores, which the
detector needed anyway. A setting given in the config is not chosen: it is the only candidate of
its kind, and its validation figures are still reported.

The validation defects (Perlin fills, Poisson patches) are not the pretext's polygons and scars, on
which the head was trained: the head is measured on defects it has not seen, as on real ones
(unless ``synth.family_probs`` puts the validation's family into the pretext too: then validation
favours the head).

Cost: ``folds`` fits of the scorers per candidate size (the map sources and image scores share
them: the held-out scores are kept on their coarse grids, `ssad.detector.CoarseScores`) plus the final
fit; at one size (both settings given) that is what the "normal" thresholds always cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ssad.config import ScoreConfig, ValidationConfig
from ssad.data import CategoryData
from ssad.anomaly_map import MAP_SOURCES, AnomalyMap
from ssad.detector import (
    CoarseScores,
    Detector,
    coarse_statistics,
    embed,
    fit_scorers,
    fold_indices,
    held_out_scores,
    map_for,
    scaled_sigma,
    score_coarse,
    set_normal_thresholds,
)
from ssad.image_score import IMAGE_SCORES, ImageScore
from ssad.metrics import aupro, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.validation import SyntheticDefects, foreign_sources, synthetic_defects

__all__ = ["RULE", "TIE", "CandidateFigures", "Selection", "SizeValidation", "choose", "map_sources_for",
           "select_and_fit", "validate_size", "validate_sizes", "validation_plan", "validation_set"]

#: Two candidates whose objectives differ by less than this are tied: far below what the
#: validation set can resolve, it only keeps float noise from deciding.
TIE = 1e-3
#: Images whose full-size maps are drawn at once when measuring a candidate.
_BATCH = 32
RULE = ("highest mean of validation image AUROC, pixel AUROC and AUPRO; ties (within 0.001) to the smaller "
        "scoring size, then to the earlier map source of memory, head, fusion, then to the earlier image score "
        "of map_max, map_top, density, fusion")


@dataclass(frozen=True)
class CandidateFigures:
    """One candidate's validation figures: synthetic defects on held-out normal images."""

    image_size: int
    image_score: str
    image_auroc: float
    pixel_auroc: float
    aupro: float
    map_source: str = "memory"

    @property
    def objective(self) -> float:
        """What `RULE` maximises: the mean of the three figures."""
        return (self.image_auroc + self.pixel_auroc + self.aupro) / 3

    @property
    def setting(self) -> tuple[int, str, str]:
        """(image size, map source, image score): what the candidate sets."""
        return self.image_size, self.map_source, self.image_score


@dataclass
class Selection:
    """What validation chose and why: the chosen ``image_size``, ``map_source`` and
    ``image_score``, how each was decided (``"validation"``, ``"config"``, or ``"default"`` where
    there were too few images to validate), every candidate's figures, and what the validation
    set was."""

    image_size: int
    image_score: str
    map_source: str
    decided_by: dict[str, str]
    figures: list[CandidateFigures]
    folds: int
    normal_images: int
    defective_images: int
    families: tuple[str, ...]
    seconds: float
    rule: str = RULE
    notes: list[str] = field(default_factory=list)

    @property
    def setting(self) -> tuple[int, str, str]:
        """(image size, map source, image score): the chosen candidate's `CandidateFigures.setting`."""
        return self.image_size, self.map_source, self.image_score

    def to_dict(self) -> dict[str, Any]:
        """Plain data for metrics.json: the choice, the rule and each candidate's figures."""
        out = asdict(self)
        out["figures"] = [{**asdict(f), "objective": f.objective} for f in self.figures]
        out["families"] = list(self.families)
        return out


def choose(figures: list[CandidateFigures]) -> CandidateFigures:
    """The candidate `RULE` picks."""
    best = max(f.objective for f in figures)
    tied = [f for f in figures if f.objective >= best - TIE]
    return min(tied, key=lambda f: (f.image_size, MAP_SOURCES.index(f.map_source), IMAGE_SCORES.index(f.image_score)))


def map_sources_for(model: PretextModel, score: ScoreConfig, validation: ValidationConfig) -> list[str]:
    """The candidate map sources: ``score.map_source``, or for "auto" those of
    ``validation.map_sources`` the network can draw (the head's only where it has one)."""
    has_head = model.segmentation is not None
    if score.map_source != "auto":
        if AnomalyMap(score.map_source).needs_head and not has_head:
            raise ValueError(f'score.map_source="{score.map_source}" needs a network with a segmentation head: '
                             'train with train.segmentation=true, or use score.map_source="memory" or "auto".')
        return [score.map_source]
    sources = [s for s in validation.map_sources if has_head or not AnomalyMap(s).needs_head]
    return sorted(sources or ["memory"], key=MAP_SOURCES.index)


def validation_plan(count: int, validation: ValidationConfig,
                    device: torch.device | str = "cpu") -> tuple[list[Tensor], Tensor]:
    """The folds of ``count`` training images (`ssad.detector.fold_indices`; none when too few) and
    the (V,) int64 positions of the V = min(count, ``validation.images``) images that get a
    synthetic defect, a seeded random choice, in ascending order."""
    folds = fold_indices(count, validation.folds, validation.seed, device)
    positions = torch.randperm(count, generator=torch.Generator().manual_seed(validation.seed))
    return folds, positions[: validation.images].sort().values.to(device)


def validation_set(data: CategoryData, positions: Tensor, families: tuple[str, ...], seed: int,
                   drawn_on: Tensor | None = None) -> SyntheticDefects:
    """Synthetic defects on the training images of ``data`` at ``positions`` (V,) int64: on their
    object masks, Poisson patches from the next training image, Perlin fills from
    `foreign_sources`; drawn on ``drawn_on``, the object masks of those images at another size
    (the largest candidate size's, `validate_sizes`), and replayed at ``data``'s size, so that every
    size gets the same defects."""
    others = data.train[(positions + 1) % len(data.train)]
    return synthetic_defects(data.train[positions], positions, data.object_masks_at(positions), others,
                             foreign_sources(data), families, seed, drawn_on=drawn_on)


def select_and_fit(
    model: PretextModel,
    load: Callable[[int], CategoryData],
    score: ScoreConfig,
    validation: ValidationConfig,
    training_size: int,
    progress: bool = True,
) -> tuple[Detector, Selection]:
    """Choose the "auto" settings of ``score`` on the synthetic validation set and fit the detector.

    Args:
        load: the category at a given side (`ssad.data.load_category`, cached): called once per
            candidate size.
        training_size: the side the network was trained at (what a size of 0 means).

    Returns the detector, fitted at the chosen size on all training images, with its "normal"
    thresholds set, and the `Selection`.
    """
    start = time.perf_counter()
    sizes = validation.candidate_sizes(training_size) if score.image_size == "auto" \
        else [score.image_size or training_size]
    kinds = list(validation.image_scores) if score.image_score == "auto" else [score.image_score]
    kinds = sorted(set(kinds), key=IMAGE_SCORES.index)
    sources = map_sources_for(model, score, validation)
    decided = {name: "validation" if getattr(score, name) == "auto" else "config"
               for name in ("image_size", "map_source", "image_score")}

    count = len(load(sizes[0]).train)
    if not validation_plan(count, validation)[0]:  # too few to hold out folds: the first candidates
        return _without_validation(model, load(sizes[0]), score, sources[0], kinds[0], decided, start,
                                   training_size, f"{count} training images are too few to hold out "
                                   f"{validation.folds} folds (at least {2 * validation.folds} needed)")
    density = any(ImageScore(k).needs_density for k in kinds)
    # The head sees every image at the side it was trained at (`ssad.detector.embed`).
    head = training_size if any(AnomalyMap(s).needs_head for s in sources) else 0
    figures: list[CandidateFigures] = []
    normal: dict[int, CoarseScores] = {}  # held-out scores at each size: the chosen one's set the thresholds
    bar = tqdm(total=len(sizes) * validation.folds, desc="validation", unit="fit", disable=not progress)
    for scored in validate_sizes(model, load, score, validation, sizes, density, head, bar.update):
        figures += scored.figures(kinds, sources)
        normal[scored.image_size] = scored.normal
        defective_images = len(scored.defective)
    bar.close()

    chosen = choose(figures)
    data = load(chosen.image_size)
    detector = fit_scorers(model, data.train, score, data.moves, chosen.image_score, map_source=chosen.map_source,
                           head_size=training_size)
    set_normal_thresholds(detector, normal[chosen.image_size], score.normal_quantile)
    selection = Selection(
        image_size=chosen.image_size, image_score=chosen.image_score, map_source=chosen.map_source,
        decided_by=decided, figures=figures, folds=validation.folds, normal_images=count,
        defective_images=defective_images, families=tuple(validation.families), seconds=time.perf_counter() - start,
    )
    return detector, selection


@dataclass
class SizeValidation:
    """The validation set scored at one size by held-out scorers, kept as `CoarseScores`.

    ``normal``: every training image's held-out scores; ``defective``: each defective copy's, by
    the same held-out scorers; ``positions`` (V,) int64: the training images the copies were made
    from; ``masks`` (V, 1, S, S) bool and ``family`` (V,) int64: each copy's defect and its family
    (index into ``validation.families``); ``sigma``: the maps' smoothing at this size.
    """

    image_size: int
    sigma: float
    normal: CoarseScores
    defective: CoarseScores
    positions: Tensor
    masks: Tensor
    family: Tensor

    def anomaly_map(self, source: str) -> AnomalyMap:
        """The ``source`` map at this size; a fusion calibrated on the held-out normal images."""
        return map_for(source, self.sigma, self.normal)

    def figures(self, kinds: list[str], sources: tuple[str, ...] | list[str] = ("memory",),
                rows: Tensor | None = None) -> list[CandidateFigures]:
        """Each (map source, image score)'s `CandidateFigures` here, on the validation images
        ``rows`` (V,) bool (all by default: a subset, e.g. one family, is for benchmarks). The
        fusions are standardised on every held-out normal image, as the detector will be."""
        rows = torch.ones(len(self.defective), dtype=torch.bool, device=self.masks.device) if rows is None else rows
        truth = torch.cat([torch.zeros_like(self.masks[rows]), self.masks[rows]])
        labels = torch.cat([torch.zeros(len(self.normal)), torch.ones(int(rows.sum()))])
        figures = []
        for source in sources:
            anomaly_map = self.anomaly_map(source)
            normal = coarse_statistics(anomaly_map, self.normal)
            original_maps = score_coarse(anomaly_map, self.normal[self.positions[rows]], _BATCH)[0]
            defective_maps, defective = score_coarse(anomaly_map, self.defective[rows], _BATCH)
            maps = torch.cat([original_maps, defective_maps])
            pixel, region = pixel_auroc(maps, truth), aupro(maps, truth)
            del maps, original_maps, defective_maps
            for kind in kinds:
                scorer = ImageScore(kind)
                if kind == "fusion":
                    scorer.calibrate(normal)
                scores = torch.cat([scorer(normal), scorer(defective)])
                figures.append(CandidateFigures(self.image_size, kind, image_auroc(scores, labels), pixel, region,
                                                source))
        return figures


def validate_size(model: PretextModel, data: CategoryData, score: ScoreConfig, validation: ValidationConfig,
                  folds: list[Tensor], positions: Tensor, density: bool, drawn_on: Tensor | None = None,
                  on_fold: Callable[[], None] | None = None, head: int = 0) -> SizeValidation:
    """Score ``data``'s training images and the synthetic defects on those at ``positions`` (V,)
    int64 (drawn on the object masks ``drawn_on``, `validation_set`) with memories fitted on the other ``folds``
    (the image density too, where ``density``; the head's logits too, of the images seen at
    ``head`` pixels, where ``head`` > 0);
    ``on_fold()`` is called after each fold."""
    defects = validation_set(data, positions, validation.families, validation.seed, drawn_on)
    is_validation = torch.zeros(len(data.train), dtype=torch.bool, device=data.device)
    is_validation[positions] = True
    row_of = torch.full((len(data.train),), -1, dtype=torch.long, device=data.device)
    row_of[positions] = torch.arange(len(positions), device=data.device)
    defective: list[tuple[Tensor, CoarseScores]] = []

    def score_defects(fitted: Detector, held: Tensor) -> None:
        """The held-out fold's defective copies, by the same held-out scorers."""
        rows = row_of[held[is_validation[held]]]
        if len(rows):
            defective.append((rows, fitted.coarse_scores(embedded_defects[rows])))
        if on_fold is not None:
            on_fold()

    # The defective copies (at most validation.images) are embedded once for every fold; the
    # training images are streamed (`held_out_scores`).
    embedded_defects = embed(model, defects.images, score.patch_layers, density, head)
    normal = held_out_scores(model, data.train, score, data.moves, folds, density, score_defects, head=head)
    return SizeValidation(data.image_size, scaled_sigma(score.sigma, data.image_size), normal,
                          CoarseScores.gather(defective), positions, defects.masks, defects.family)


def validate_sizes(model: PretextModel, load: Callable[[int], CategoryData], score: ScoreConfig,
                   validation: ValidationConfig, sizes: list[int], density: bool, head: int = 0,
                   on_fold: Callable[[], None] | None = None) -> Iterator[SizeValidation]:
    """`validate_size` at each of ``sizes`` (ascending): the folds and the validation images are
    planned once, the defects drawn on the largest size and replayed at the others, so every size
    is measured on the same images and defects. Raises ValueError when there are too few training
    images to hold out ``validation.folds`` folds."""
    first = load(sizes[0])
    count, device = len(first.train), first.device
    del first  # a large category's images are held at one size at a time (the caller's `load` may drop them)
    folds, positions = validation_plan(count, validation, device)
    if not folds:
        raise ValueError(f"{count} training images are too few to hold out {validation.folds} folds.")
    drawn_on = load(sizes[-1]).object_masks_at(positions)  # the validation images' object masks, largest size
    for size in sizes:
        yield validate_size(model, load(size), score, validation, folds, positions, density, drawn_on, on_fold,
                            head)


def _without_validation(model: PretextModel, data: CategoryData, score: ScoreConfig, source: str, kind: str,
                        decided: dict[str, str], start: float, training_size: int,
                        why: str) -> tuple[Detector, Selection]:
    """The fallback for tiny categories: the first candidate size, map source and image score,
    thresholds in-sample."""
    detector = fit_scorers(model, data.train, score, data.moves, kind, map_source=source, head_size=training_size)
    set_normal_thresholds(detector, detector.coarse_scores_of(data.train), score.normal_quantile)
    decided = {k: "default" if v == "validation" else v for k, v in decided.items()}
    note = (f"no validation: {why}; scoring at {data.image_size} px with the {source} map and the {kind} image "
            "score, in-sample thresholds.")
    selection = Selection(image_size=data.image_size, image_score=kind, map_source=source, decided_by=decided,
                          figures=[], folds=0,
                          normal_images=len(data.train), defective_images=0, families=(), notes=[note],
                          seconds=time.perf_counter() - start)
    return detector, selection
