"""`SynthConfig`: every number of the pretext-task spec, as plain data, checked at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SynthConfig", "Interval", "FILL_MODES", "BACKENDS"]

Interval = tuple[float, float]

#: Fill modes, in the order of `SynthConfig.fill_probs` and of `params["fill_mode"]`.
FILL_MODES = ("cut_paste", "average_colour", "flat_colour")
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
    #: Float inputs are checked to lie in [0, 1]. The check reads one boolean back from the
    #: device; turn it off in a GPU hot loop once the pipeline is known good (uint8 needs none).
    check_values: bool = True
    backend: str = "auto"

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
        if self.backend not in BACKENDS:
            raise ValueError(f"SynthConfig.backend={self.backend!r}: choose one of {BACKENDS}.")

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
