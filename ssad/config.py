"""Run configuration: plain dataclasses, filled from TOML files and command-line overrides.

    config = load_config(["configs/default.toml"], overrides=["train.steps=200", "data.image_size=128"])

Later files and overrides win. Every key is checked: an unknown section or key is an error that
names it and lists the known ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ssad.cpu import native_bf16
from ssad.registry import DENSITIES, IMAGE_SCORES, MAP_SOURCES, PATCH_SCORERS
from ssad.synth import SynthConfig
from ssad.validation import VALIDATION_FAMILIES

__all__ = ["DataConfig", "TrainConfig", "ScoreConfig", "ValidationConfig", "RunConfig", "load_config",
           "parse_override"]


@dataclass(frozen=True)
class DataConfig:
    category: str = "bottle"
    image_size: int = 256

    def __post_init__(self) -> None:
        if self.image_size < 64:
            raise ValueError(f"data.image_size={self.image_size}: use 64 pixels or more.")


@dataclass(frozen=True)
class TrainConfig:
    """Pretext training; defaults after CutPaste (SGD, cosine decay, batch 96)."""

    steps: int = 16384
    batch_size: int = 96
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 3e-5
    #: Two stages: train the head with the backbone frozen for this many steps first (0: one stage).
    freeze_backbone_steps: int = 0
    #: "auto", "imagenet", "scratch" or a path to a state dict.
    init: str = "auto"
    #: Light geometric augmentation of the normal images before synthesis.
    max_shift: float = 0.03
    flip: bool = False
    #: Turn the normal images by a random angle: "none", "auto" (for objects that move, which lie
    #: at any angle) or "any" (always). "none" by measurement: on screw at 128 px, shifted-only
    #: normals gave image / pixel AUROC 0.834 / 0.961, rotated ones 0.697 / 0.931 (README, results).
    rotate: str = "none"
    amp: bool = True  # bf16 autocast on CUDA
    #: bf16 autocast on the CPU too, where it computes bf16 natively (`ssad.cpu.native_bf16`;
    #: elsewhere bf16 is emulated and slower: ignored there, with a note in meta.json).
    cpu_amp: bool = False
    channels_last: bool = True
    compile: bool = False
    #: Replay the data side of each step from a CUDA graph (`ssad.graphs.CudaGraphed`); same
    #: batches, one launch instead of a few hundred. CUDA only; ignored elsewhere.
    cuda_graph: bool = False
    #: Train a segmentation head (`ssad.model.SegmentationHead`) on the synthetic defects' masks in
    #: the same step; its loss (focal + Dice, `ssad.train.segmentation_loss`) is added to the
    #: classifier's with ``segmentation_weight``. Gives the detector a second anomaly-map source.
    segmentation: bool = False
    #: 1: both losses start near 1 (cross-entropy of 3 classes about 1.1; Dice about 1 and focal
    #: about 0.2 with untrained logits), so neither task swamps the other's gradient at the start.
    segmentation_weight: float = 1.0
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 1.")
        if self.steps < 0:
            raise ValueError(f"train.steps={self.steps}: must be >= 0 (0 scores the initial network).")
        if self.freeze_backbone_steps and not 0 < self.freeze_backbone_steps < self.steps:
            raise ValueError(f"train.freeze_backbone_steps={self.freeze_backbone_steps}: must be in [0, steps).")
        if not 0 <= self.max_shift < 0.5:
            raise ValueError(f"train.max_shift={self.max_shift}: a fraction of the image side in [0, 0.5).")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr}: must be > 0.")
        if self.segmentation_weight <= 0:
            raise ValueError(f"train.segmentation_weight={self.segmentation_weight}: must be > 0 "
                             "(turn the head off with train.segmentation=false).")
        if self.rotate not in ("auto", "any", "none"):
            raise ValueError(f"train.rotate={self.rotate!r}: choose 'auto', 'any' or 'none'.")

    def rotates(self, moves: bool) -> bool:
        """Whether to rotate the normal images: ``rotate``, with "auto" resolved by whether the object moves."""
        return self.rotate == "any" or (self.rotate == "auto" and moves)

    def uses_amp(self, device: torch.device) -> bool:
        """Whether training on ``device`` runs under bf16 autocast: ``amp`` on CUDA, ``cpu_amp`` on a
        CPU with native bf16."""
        if device.type == "cuda":
            return self.amp
        return device.type == "cpu" and self.cpu_amp and native_bf16()


@dataclass(frozen=True)
class ScoreConfig:
    """Fitting on normal images and scoring the test set (see `ssad.score`, `ssad.image_score`)."""

    #: Image density on pooled features, for the "density" image score: "gaussian" (Mahalanobis,
    #: Ledoit-Wolf; CutPaste) or "knn" (mean cosine distance to the nearest ``knn_k``).
    density: str = "gaussian"
    knn_k: int = 3
    #: What an image's score is (`ssad.registry.IMAGE_SCORES`): "map_max", "map_top",
    #: "density", "fusion"; "auto": the one the synthetic validation set ranks first
    #: (`ssad.selection`, among ``validation.image_scores``).
    image_score: str = "auto"
    #: Where the anomaly map comes from (`ssad.anomaly_map`): "memory" (the patch scorer below),
    #: "head" (the segmentation head of a network trained with ``train.segmentation``), "fusion"
    #: (both, calibrated); "auto": the one the synthetic validation set ranks first among
    #: ``validation.map_sources`` (the memory alone for a network without a head).
    map_source: str = "auto"
    #: Anomaly maps: these layers' features on the first one's grid (layer2: 1/8 of the image
    #: side), all their channels (``patch_channels = 0``) or a random subset of that many, scored
    #: by ``patch_scorer`` and smoothed with ``sigma`` pixels at 256x256: "knn", the nearest-
    #: neighbour memory (``patch_memory`` features), led on bottle and screw (bench/localization.py);
    #: "per_location" (a Gaussian per grid place), "shared"; "auto": knn for objects that move,
    #: per_location otherwise.
    patch_scorer: str = "knn"
    patch_layers: tuple[str, ...] = ("layer2", "layer1")
    #: 0: all channels of the patch layers (192 for layer2+1); n: a fixed random subset of n.
    #: All of them led PaDiM's random 100 at 320 px (bench/results/channels_320.json).
    patch_channels: int = 0
    patch_memory: int = 10_000
    #: The kNN memory's candidates: each training image's patches are cut to its share of this
    #: many before the coreset is chosen among them (`ssad.score.PatchKNN`), so fitting costs the
    #: same time and memory per image whatever the training set's size.
    patch_candidates: int = 200_000
    sigma: float = 4.0
    #: The side, in pixels, the detector scores images at: the network is convolutional, and one
    #: trained at 128 px sees defects of a pixel or two there better at a larger size. 0: the
    #: training size (data.image_size); "auto": the size the synthetic validation set ranks
    #: first among ``validation.sizes``.
    image_size: int | str = "auto"
    #: The detector's threshold for users without labelled defects: this quantile of the normal
    #: training images' held-out scores (image level) and of their maps' maxima (pixel level).
    normal_quantile: float = 0.99

    def __post_init__(self) -> None:
        if self.density not in DENSITIES:
            raise ValueError(f"score.density={self.density!r}: choose one of {DENSITIES.names}.")
        if self.image_score not in ("auto", *IMAGE_SCORES):
            raise ValueError(f"score.image_score={self.image_score!r}: choose 'auto' or one of {IMAGE_SCORES}.")
        if self.map_source not in ("auto", *MAP_SOURCES):
            raise ValueError(f"score.map_source={self.map_source!r}: choose 'auto' or one of {MAP_SOURCES}.")
        if self.knn_k < 1 or self.sigma < 0:
            raise ValueError("score.knn_k must be >= 1 and score.sigma >= 0.")
        if self.patch_scorer not in ("auto", *PATCH_SCORERS):
            raise ValueError(
                f"score.patch_scorer={self.patch_scorer!r}: choose 'auto' or one of {PATCH_SCORERS.names}.")
        if not 0 < self.normal_quantile < 1:
            raise ValueError(f"score.normal_quantile={self.normal_quantile}: must be in (0, 1).")
        if self.image_size != "auto" and not (_is_int(self.image_size) and (self.image_size == 0
                                                                             or self.image_size >= 64)):
            raise ValueError(f"score.image_size={self.image_size!r}: use \"auto\" (chosen by validation), "
                             "0 (the training size) or 64 pixels or more.")
        if self.patch_channels < 0:
            raise ValueError(f"score.patch_channels={self.patch_channels}: use 0 (all channels) or a positive count.")
        if self.patch_memory < 1:
            raise ValueError(f"score.patch_memory={self.patch_memory}: must be >= 1.")
        if self.patch_candidates < self.patch_memory:
            raise ValueError(f"score.patch_candidates={self.patch_candidates}: must be at least score.patch_memory "
                             f"({self.patch_memory}), the features the memory keeps among them.")

    def patch_scorer_for(self, moves: bool) -> str:
        """The patch scorer to use: ``patch_scorer``, with "auto" resolved by whether the object moves."""
        if self.patch_scorer != "auto":
            return self.patch_scorer
        return "knn" if moves else "per_location"


@dataclass(frozen=True)
class ValidationConfig:
    """The validation set the engine makes (`ssad.validation`) and the choices made from it
    (`ssad.selection`): candidates for the settings left at "auto", and how much it may cost."""

    #: Scoring sizes "auto" chooses among; 0 is the training size (duplicates are dropped).
    sizes: tuple[int, ...] = (0, 256, 320)
    #: Image scores "auto" chooses among (`ssad.registry.IMAGE_SCORES`).
    image_scores: tuple[str, ...] = IMAGE_SCORES
    #: Map sources "auto" chooses among (`ssad.registry.MAP_SOURCES`); those of the head only
    #: where the network has one.
    map_sources: tuple[str, ...] = MAP_SOURCES
    #: Normal training images are split into this many folds; each fold is scored by scorers
    #: fitted on the others (cross-fitting: every image is held out once). The same held-out
    #: scores set the "normal" thresholds and the fusion's standardisation.
    folds: int = 5
    #: At most this many held-out images get a synthetic defect: the selection's cost stays
    #: bounded on large categories.
    images: int = 160
    #: The defect families of the validation set, taking turns over its images: not the pretext's
    #: cut-paste polygons and scars, so that validation is not the training task (`ssad.validation`).
    #: Perlin alone: the Poisson patches' ranking of scoring sizes disagrees with real defects
    #: (docs/validation.md, bench/results/selection_mix_screw.json).
    families: tuple[str, ...] = ("perlin",)
    #: Seed of the folds and of the synthetic defects (each image's defect depends on it and on
    #: the image's position alone, so it is the same defect at every candidate size).
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or not all(_is_int(s) and (s == 0 or s >= 64) for s in self.sizes):
            raise ValueError(f"validation.sizes={self.sizes!r}: sides of 64 pixels or more, or 0 (the training size).")
        if not self.image_scores or set(self.image_scores) - set(IMAGE_SCORES):
            raise ValueError(f"validation.image_scores={self.image_scores!r}: choose among {IMAGE_SCORES}.")
        if not self.map_sources or set(self.map_sources) - set(MAP_SOURCES):
            raise ValueError(f"validation.map_sources={self.map_sources!r}: choose among {MAP_SOURCES}.")
        if self.folds < 2:
            raise ValueError(f"validation.folds={self.folds}: must be >= 2 (each fold is scored by the others).")
        if self.images < 1:
            raise ValueError(f"validation.images={self.images}: must be >= 1.")
        if not self.families or set(self.families) - set(VALIDATION_FAMILIES):
            raise ValueError(f"validation.families={self.families!r}: choose among {tuple(VALIDATION_FAMILIES)}.")

    def candidate_sizes(self, training_size: int) -> list[int]:
        """The candidate scoring sizes in pixels, 0 resolved to ``training_size``, ascending, once each."""
        return sorted({s or training_size for s in self.sizes})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        sections = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(sections))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
        built = {}
        for name, section in values.items():
            kind = {"data": DataConfig, "train": TrainConfig, "synth": SynthConfig, "score": ScoreConfig,
                    "validation": ValidationConfig}[name]
            built[name] = kind.from_dict(section) if kind is SynthConfig else _build(kind, name, section)
        return cls(**built)


def _build(kind: type, section: str, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {[f'{section}.{k}' for k in unknown]}; known: {sorted(known)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, value); the value is read as TOML, else as a string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ValueError(f"override {text!r}: write section.key=value, e.g. train.steps=200")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def load_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> RunConfig:
    """Merge TOML files (in order) and ``section.key=value`` overrides over the defaults."""
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file {path} is not valid TOML: {error}") from error
        for section, table in values.items():
            if not isinstance(table, dict):
                raise ValueError(f"{path}: top-level key {section!r} must be a [section]")
            merged.setdefault(section, {}).update(table)
    for text in overrides:
        section, key, value = parse_override(text)
        merged.setdefault(section, {})[key] = value
    return RunConfig.from_dict(merged)
