"""The benchmarks' one timer: seconds per call of a function, on the CPU or on a CUDA device.

`Stopwatch` times a ``with`` block: on a CUDA device with CUDA events on the device's current
stream, after the work queued before has finished (launch gaps count, no host sync inside the
interval), elsewhere with ``time.perf_counter``. `seconds_per_call` times one run of calls in a
row, `median_seconds` the median of repeated runs after warm-up calls. Scripts that compare
variants time them `taking_turns`, so that a noisy machine's spells hit all of them alike, and
report the `round_ratios` of two of them.

Imports torch alone (not ssad): `gpu_check.py` uses it before ssad is installed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from types import TracebackType

import torch

__all__ = ["Stopwatch", "seconds_per_call", "median_seconds", "taking_turns", "round_ratios"]


class Stopwatch:
    """``with Stopwatch(device) as watch: ...``, then ``watch.seconds``: how long the block took,
    the work it queued on ``device`` included."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = math.nan
        self._start: float | torch.cuda.Event = math.nan

    def __enter__(self) -> Stopwatch:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record(torch.cuda.current_stream(self.device))
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if isinstance(self._start, torch.cuda.Event):
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            end.synchronize()
            self.seconds = self._start.elapsed_time(end) / 1e3  # elapsed_time is in ms
        else:
            self.seconds = time.perf_counter() - self._start


def seconds_per_call(call: Callable[[], object], calls: int = 1, device: torch.device | str = "cpu") -> float:
    """Seconds per call of ``calls`` calls of ``call`` in a row (`Stopwatch` on ``device``)."""
    with Stopwatch(device) as watch:
        for _ in range(calls):
            call()
    return watch.seconds / calls


def median_seconds(call: Callable[[], object], calls: int = 1, repeats: int = 1, warmup: int = 1,
                   device: torch.device | str = "cpu") -> float:
    """The median over ``repeats`` runs of `seconds_per_call` (``calls`` calls each), after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    return statistics.median(seconds_per_call(call, calls, device) for _ in range(repeats))


def taking_turns(variants: dict[str, Callable[[], object]], calls: int = 1, rounds: int = 1,
                 device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each variant in each of ``rounds`` rounds (`seconds_per_call` of ``calls``
    calls), the variants taking turns within a round. No warm-up: call each variant first."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            seconds[name].append(seconds_per_call(call, calls, device))
    return seconds


def round_ratios(top: list[float], bottom: list[float]) -> tuple[float, list[float]]:
    """The median and the range [least, most] of the per-round ratios ``top / bottom`` of two
    variants measured in the same rounds (e.g. seconds of the slower over the faster: its speed-up)."""
    ratios = [t / b for t, b in zip(top, bottom)]
    return statistics.median(ratios), [min(ratios), max(ratios)]
