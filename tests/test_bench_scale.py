"""bench/scale.py: seconds and peak memory of fitting and scoring against the number of training images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import DEMO_SIZE

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from scale import PHASES, augmented, with_growth  # noqa: E402


def test_augmented_copies_are_symmetries_of_the_real_images_with_their_own_brightness():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 200, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = augmented(train, 30)
    assert out.shape == (30, 3, 8, 8) and out.dtype == torch.uint8
    # Image 3 + k is training image k turned a quarter once, its brightness within 10 %.
    turned = torch.rot90(train[1], 1, dims=(1, 2)).float()
    assert (out[4].float() - turned).abs().max() <= 0.1 * 200 + 1
    assert not torch.equal(out[0], out[3])  # no two copies alike
    assert len({tuple(img.flatten().tolist()) for img in out}) == 30


def test_growth_is_each_fit_over_the_fit_at_800_images_of_the_same_size():
    points = [{"images": n, "image_size": 64, "phases": {"fit": {"seconds": s}}} for n, s in ((800, 2.0), (3200, 6.0))]
    grown = with_growth(points)
    assert grown[1]["fit_seconds_over_reference"] == 3.0 and grown[1]["linear_growth"] == 4.0


def test_bench_measures_every_phase_of_a_point_in_its_own_process(demo_root, tmp_path):
    out = tmp_path / "scale.json"
    subprocess.run([sys.executable, str(BENCH / "scale.py"), "--data-root", str(demo_root), "--category",
                    "demo_object", "--images", "12", "--sizes", str(DEMO_SIZE), "--out", str(out)],
                   check=True, capture_output=True, timeout=600,
                   env={**os.environ, "SSAD_CACHE_DIR": str(tmp_path / "cache")})
    result = json.loads(out.read_text())
    assert [(p["images"], p["image_size"]) for p in result["points"]] == [(12, DEMO_SIZE)]
    for point in result["points"]:
        assert set(point["phases"]) == set(PHASES)
        for phase in point["phases"].values():
            assert phase["seconds"] > 0 and phase["peak_resident_gb"] >= phase["resident_at_start_gb"] > 0
        assert 0 < point["metrics_of_this_network"]["image_auroc"] <= 1
        # The memory over time covers every phase, and the phases start in order on its clock.
        trace, starts = point["resident_trace"], [point["phases"][name]["started_s"] for name in PHASES]
        assert len(trace["seconds"]) == len(trace["gb"]) >= 2 and min(trace["gb"]) > 0
        assert starts == sorted(starts) and trace["seconds"][0] <= starts[0] and trace["seconds"][-1] >= starts[-1]
    assert out.with_suffix(".png").is_file()
