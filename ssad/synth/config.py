"""`SynthConfig`: every number of the pretext-task spec, as plain data, checked at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SynthConfig", "Interval", "FILL_MODES", "BACKENDS", "FAMILIES", "PRETEXTS"]

Interval = tuple[float, float]

#: Fill modes, in the order of `SynthConfig.fill_probs` and of `params["fill_mode"]`.
FILL_MODES = ("cut_paste", "average_colour", "flat_colour")
#: Families of big defects, in the order of `SynthConfig.family_probs` and of ``params["family"]``.
FAMILIES = ("cutpaste", "perlin", "poisson")
#: "3way": the spec's labels, every big defect is 1; "families": Perlin blobs 3, Poisson patches 4.
PRETEXTS = ("3way", "families")
#: Compositing backends: "auto" takes the fused kernel where the device allows (kernels issue).
BACKENDS = ("auto", "reference", "fused")


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the 3-class pretext task (labels 0 normal, 1 big polygon, 2 small scar).

    Areas are fractions of the image area; aspect ratios are width / height of the defect's
    rectangle before rotation; a union of intervals is a tuple of ``(low, high)`` pairs, one picked
    with equal probability, then a value drawn log-uniformly inside it (scale-symmetric, as in
    CutPaste). Colour jitter factors are drawn uniformly in ``[1 - x, 1 + x]`` (brightness,
    contrast) and ``[-x, x]`` turns of the colour wheel (hue).
    """

    class_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    brightness: float = 0.1
    contrast: float = 0.1
    hue: float = 0.1
    polygon_area: Interval = (0.05, 0.1)
    polygon_aspect: tuple[Interval, ...] = ((0.3, 1.0), (1.0, 3.3))
    polygon_points_per_side: tuple[int, int] = (1, 2)
    scar_area: Interval = (0.005, 0.01)
    scar_aspect: tuple[Interval, ...] = ((0.05, 0.5), (2.5, 3.3))
    scar_angle: Interval = (-45.0, 45.0)
    fill_probs: tuple[float, float, float] = (0.7, 0.15, 0.15)
    #: Float inputs are checked to lie in [0, 1]: on CUDA by a device-side assert (no read-back;
    #: a batch out of range stops the process at the next sync), on the CPU at once; devices
    #: without an asynchronous assert (e.g. mps) read one boolean back. uint8 needs no check.
    check_values: bool = True
    backend: str = "auto"
    #: Which family makes each big (label 1) defect: the spec's polygon cut-paste, a Perlin-noise
    #: blob (`ssad.synth.perlin`) or a Poisson-blended patch (`ssad.synth.poisson`). The scar
    #: (label 2) is always cut-paste.
    family_probs: tuple[float, float, float] = (1.0, 0.0, 0.0)
    pretext: str = "3way"
    #: Perlin: 2^k lattice cells across the image, k drawn per field in [low, high]; threshold on
    #: the noise (about [-0.7, 0.7]); single field, union or intersection of two; fill opacity;
    #: fill from another image or the image's own shuffled tiles (a perlin_tiles^2 grid); a mask
    #: under perlin_min_area of the object takes that share of it with the highest noise.
    perlin_scale: tuple[int, int] = (1, 4)
    perlin_threshold: Interval = (0.1, 0.35)
    perlin_combine_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)
    perlin_beta: Interval = (0.3, 1.0)
    perlin_fill_probs: tuple[float, float] = (0.5, 0.5)
    perlin_tiles: int = 4
    perlin_min_area: float = 0.01
    #: Poisson: patch side (fraction of sqrt(H * W)), its width / height (log-uniform), and how
    #: much the source is magnified (log-uniform) when resampled into it.
    poisson_size: Interval = (0.1, 0.3)
    poisson_aspect: Interval = (0.5, 2.0)
    poisson_scale: Interval = (0.75, 1.33)

    def __post_init__(self) -> None:
        _check_probs("class_probs", self.class_probs, 3)
        _check_probs("fill_probs", self.fill_probs, len(FILL_MODES))
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"SynthConfig.{name}={value!r}: must be in [0, 1) (factor 1 ± {name}).")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"SynthConfig.hue={self.hue!r}: must be in [0, 0.5] turns of the colour wheel.")
        for name in ("polygon_area", "scar_area"):
            low, high = _check_interval(name, getattr(self, name))
            if low <= 0 or high >= 1:
                raise ValueError(
                    f"SynthConfig.{name}={getattr(self, name)!r}: areas are fractions of the image, in (0, 1)."
                )
        for name in ("polygon_aspect", "scar_aspect"):
            intervals = getattr(self, name)
            if not isinstance(intervals, tuple) or not intervals:
                raise ValueError(f"SynthConfig.{name}: give a non-empty tuple of (low, high) intervals.")
            for interval in intervals:
                low, _ = _check_interval(name, interval)
                if low <= 0:
                    raise ValueError(f"SynthConfig.{name}={intervals!r}: aspect ratios must be > 0.")
        low, high = _check_interval("scar_angle", self.scar_angle)
        if low < -180 or high > 180:
            raise ValueError(f"SynthConfig.scar_angle={self.scar_angle!r}: degrees within [-180, 180].")
        lo_pts, hi_pts = self.polygon_points_per_side
        if not (isinstance(lo_pts, int) and isinstance(hi_pts, int) and 1 <= lo_pts <= hi_pts <= 2):
            raise ValueError(
                f"SynthConfig.polygon_points_per_side={self.polygon_points_per_side!r}: "
                "use whole numbers with 1 <= low <= high <= 2 (4 to 8 vertices)."
            )
        _check_probs("family_probs", self.family_probs, len(FAMILIES))
        _check_probs("perlin_combine_probs", self.perlin_combine_probs, 3)
        _check_probs("perlin_fill_probs", self.perlin_fill_probs, 2)
        if self.pretext not in PRETEXTS:
            raise ValueError(f"SynthConfig.pretext={self.pretext!r}: choose one of {PRETEXTS}.")
        low_k, high_k = self.perlin_scale
        if not (isinstance(low_k, int) and isinstance(high_k, int) and 0 <= low_k <= high_k <= 8):
            raise ValueError(
                f"SynthConfig.perlin_scale={self.perlin_scale!r}: whole exponents with 0 <= low <= high <= 8.")
        _check_interval("perlin_threshold", self.perlin_threshold)
        low, high = _check_interval("perlin_beta", self.perlin_beta)
        if low < 0 or high > 1:
            raise ValueError(f"SynthConfig.perlin_beta={self.perlin_beta!r}: opacities within [0, 1].")
        if not (isinstance(self.perlin_tiles, int) and self.perlin_tiles >= 1):
            raise ValueError(f"SynthConfig.perlin_tiles={self.perlin_tiles!r}: a whole number >= 1.")
        if not 0 < self.perlin_min_area <= 1:
            raise ValueError(f"SynthConfig.perlin_min_area={self.perlin_min_area!r}: a share of the object in (0, 1].")
        for name in ("poisson_size", "poisson_aspect", "poisson_scale"):
            low, high = _check_interval(name, getattr(self, name))
            if low <= 0 or (name == "poisson_size" and high > 0.6):
                raise ValueError(f"SynthConfig.{name}={getattr(self, name)!r}: must be > 0"
                                 + (" and the patch at most 0.6 of the side." if name == "poisson_size" else "."))
        if self.backend not in BACKENDS:
            raise ValueError(f"SynthConfig.backend={self.backend!r}: choose one of {BACKENDS}.")

    @property
    def num_classes(self) -> int:
        """Classes of the pretext task: 3, or 5 with one class per family."""
        return 5 if self.pretext == "families" else 3

    @property
    def max_vertices(self) -> int:
        """Length of the padded vertex list: four sides times the most points per side."""
        return 4 * self.polygon_points_per_side[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Build from plain data (TOML, JSON); lists become tuples, unknown keys are named."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown synthesis setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{key: _tuplify(value) for key, value in values.items()})


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, list | tuple) else value


def _check_probs(name: str, probs: tuple[float, ...], n: int) -> None:
    if len(probs) != n or any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ValueError(f"SynthConfig.{name}={probs!r}: give {n} non-negative probabilities that sum to 1.")


def _check_interval(name: str, interval: Interval) -> Interval:
    if not (isinstance(interval, tuple) and len(interval) == 2):
        raise ValueError(f"SynthConfig.{name}: {interval!r} is not a (low, high) pair.")
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"SynthConfig.{name}: interval {interval!r} is empty; need finite low < high.")
    return low, high
