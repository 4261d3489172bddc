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
from ssad.score import PATCH_SCORERS
from ssad.synth import SynthConfig

__all__ = ["DataConfig", "TrainConfig", "ScoreConfig", "RunConfig", "load_config", "parse_override"]


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
    #: The seed's two stages: train the head with the backbone frozen for this many steps first.
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
    """Fitting on normal images and scoring the test set (see `ssad.score`)."""

    #: Image scores: "gaussian" (Mahalanobis, Ledoit-Wolf; CutPaste) or "knn" (cosine, the seed's).
    density: str = "gaussian"
    knn_k: int = 3
    #: What an image's score is: "map_max" (the largest value of its anomaly map, as PatchCore)
    #: or "density" (the above, on pooled features; CutPaste's); "auto": map_max for objects that
    #: move. map_max measured better on bottle (0.992 vs 0.988) and screw (0.697 vs 0.464) at 128 px.
    image_score: str = "map_max"
    #: Anomaly maps: these layers' features on the first one's grid (layer2: 1/8 of the image
    #: side), all their channels (``patch_channels = 0``) or a random subset of that many, scored
    #: by ``patch_scorer`` and smoothed with ``sigma`` pixels at 256x256: "knn", the nearest-
    #: neighbour memory (``patch_memory`` features), led on bottle and screw (bench/localization.py);
    #: "per_location" (a Gaussian per grid place), "shared"; "auto": knn for objects that move,
    #: per_location otherwise.
    patch_scorer: str = "knn"
    patch_layers: tuple[str, ...] = ("layer2", "layer1")
    #: All 192 channels of layer2+1 beat PaDiM's random 100 at 320 px, on three trained models:
    #: screw image AUROC 0.858 -> 0.879 and 0.835 -> 0.872, bottle 0.993 -> 0.996 (README, results).
    patch_channels: int = 0
    patch_memory: int = 10_000
    sigma: float = 4.0
    #: The side, in pixels, the detector scores images at; 0: the training size (data.image_size).
    #: A network trained at 128 px scores finer at a larger size: screw, whose defects span a
    #: pixel or two at 128, went from 0.834 / 0.961 (image / pixel AUROC) to 0.858 / 0.983 at 320
    #: with 100 feature channels, 0.879 / 0.979 with all of them (configs/cpu.toml; README, results).
    image_size: int = 0
    #: The detector's threshold for users without labelled defects: this quantile of the normal
    #: training images' scores (image level) and of their maps' maxima (pixel level).
    normal_quantile: float = 0.99

    def __post_init__(self) -> None:
        if self.density not in ("gaussian", "knn"):
            raise ValueError(f"score.density={self.density!r}: choose 'gaussian' or 'knn'.")
        if self.image_score not in ("auto", "density", "map_max"):
            raise ValueError(f"score.image_score={self.image_score!r}: choose 'auto', 'density' or 'map_max'.")
        if self.knn_k < 1 or self.sigma < 0:
            raise ValueError("score.knn_k must be >= 1 and score.sigma >= 0.")
        if self.patch_scorer not in ("auto", *PATCH_SCORERS):
            raise ValueError(f"score.patch_scorer={self.patch_scorer!r}: choose 'auto' or one of {PATCH_SCORERS}.")
        if not 0 < self.normal_quantile < 1:
            raise ValueError(f"score.normal_quantile={self.normal_quantile}: must be in (0, 1).")
        if self.image_size != 0 and self.image_size < 64:
            raise ValueError(f"score.image_size={self.image_size}: use 0 (the training size) or 64 pixels or more.")
        if self.patch_channels < 0:
            raise ValueError(f"score.patch_channels={self.patch_channels}: use 0 (all channels) or a positive count.")
        if self.patch_memory < 1:
            raise ValueError(f"score.patch_memory={self.patch_memory}: must be >= 1.")

    def image_score_for(self, moves: bool) -> str:
        """The image score to use: ``image_score``, with "auto" resolved by whether the object moves."""
        if self.image_score != "auto":
            return self.image_score
        return "map_max" if moves else "density"

    def patch_scorer_for(self, moves: bool) -> str:
        """The patch scorer to use: ``patch_scorer``, with "auto" resolved by whether the object moves."""
        if self.patch_scorer != "auto":
            return self.patch_scorer
        return "knn" if moves else "per_location"


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

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
            kind = {"data": DataConfig, "train": TrainConfig, "synth": SynthConfig, "score": ScoreConfig}[name]
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
