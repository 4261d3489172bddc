"""Peak memory of the post-training phase: statistics and pictures of millions of pixels, and the CPU allocator."""

from __future__ import annotations

import ctypes.util
import sys

import pytest
import torch
from PIL import Image

from ssad import cpu
from ssad.anomaly_map import AnomalyMap
from ssad.detector import CoarseScores, coarse_statistics, score_coarse
from ssad.report import _thinned, roc_picture


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_a_curve_is_thinned_to_evenly_spaced_points_keeping_both_ends():
    keep = _thinned(1_000_001, most=4000)
    assert len(keep) == 4000 and keep[0] == 0 and keep[-1] == 1_000_000
    assert bool((keep.diff() > 0).all())
    assert torch.equal(_thinned(10, most=4000), torch.arange(10))


def test_a_pixel_roc_of_millions_of_scores_draws_without_a_python_object_per_point(tmp_path):
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3_000_000, generator=generator)
    labels = torch.rand(3_000_000, generator=generator) < scores * 0.2
    before = _resident_bytes()
    roc_picture({"pixel": (scores, labels)}, tmp_path / "roc.png")
    # The curve itself (a few float64 tensors of 3M points) is ~100 MB; a Python object per point
    # was gigabytes.
    assert _resident_bytes() - before < 600e6
    assert Image.open(tmp_path / "roc.png").size == (480, 480)


def test_image_statistics_of_many_images_draw_one_batch_of_full_size_maps_at_a_time():
    generator = torch.Generator().manual_seed(0)
    coarse = CoarseScores(torch.rand(100, 1, 10, 10, generator=generator), None,
                          torch.rand(100, generator=generator), 160)
    memory_map = AnomalyMap("memory", 4.0)
    drawn = []

    def spy(memory, head, size):
        drawn.append(len(memory))
        return memory_map(memory, head, size)

    statistics = coarse_statistics(spy, coarse, batch_size=32)
    # Thresholds on thousands of training images at 320 px: all their maps at once are gigabytes.
    assert drawn == [32, 32, 32, 4]
    assert torch.allclose(statistics, score_coarse(memory_map, coarse)[1], atol=1e-5)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None
                           or cpu._libc() is None, reason="the allocator settings are glibc's")


@glibc
def test_memory_kept_while_training_is_given_back_after_it():
    with cpu.freed_memory_kept():
        block = torch.ones(400 * 2**20 // 4)  # 400 MB, from the heap while freed memory is kept
        del block
        kept = _resident_bytes()
    released = _resident_bytes()
    assert kept - released > 300e6


def test_nothing_is_changed_when_not_asked_to_keep_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "retain_freed_memory", lambda: calls.append("retain"))
    monkeypatch.setattr(cpu, "release_freed_memory", lambda: calls.append("release"))
    with cpu.freed_memory_kept(False):
        pass
    with cpu.freed_memory_kept(True):
        pass
    assert calls == ["retain", "release"]
