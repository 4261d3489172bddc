"""bench/timing.py, the benchmarks' one timer: what it measures on the CPU and how it reports."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import timing  # noqa: E402


def test_seconds_per_call_divides_a_run_by_its_calls():
    calls = []
    seconds = timing.seconds_per_call(lambda: (calls.append(1), time.sleep(0.01)), calls=3)
    assert len(calls) == 3 and 0.01 <= seconds < 0.5


def test_median_seconds_warms_up_untimed_then_takes_the_median_run():
    durations = iter([0.2, 0.0, 0.03, 0.01])  # the warm-up is slow; then three runs of one call
    seconds = timing.median_seconds(lambda: time.sleep(next(durations)), repeats=3, warmup=1)
    assert 0.01 <= seconds < 0.03 + 0.02


def test_taking_turns_and_round_ratios():
    order = []
    seconds = timing.taking_turns({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, calls=2, rounds=3)
    assert order == ["a", "a", "b", "b"] * 3 and [len(s) for s in seconds.values()] == [3, 3]
    assert timing.round_ratios([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == (2.0, [1.0, 3.0])


def test_stopwatch_times_a_block():
    with timing.Stopwatch() as watch:
        time.sleep(0.01)
    assert watch.seconds == pytest.approx(0.01, abs=0.2) and watch.seconds >= 0.01
