"""bench/selection.py: the settings grid on a run, validation beside test, and its rank agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssad.run import main as run_main

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "selection.py"
sys.path.insert(0, str(SCRIPT.parent))

import selection  # noqa: E402


def test_spearman_ranks_with_ties_and_says_when_there_is_no_ranking():
    assert selection.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert selection.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    # Ties share their average rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4].
    assert selection.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert selection.spearman([1, 1, 1], [1, 2, 3]) is None


def test_bench_scores_the_grid_on_a_run_and_reports_agreement(tmp_path):
    cache = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAD_CACHE_DIR", str(cache))
        run = tmp_path / "run"
        assert run_main(["--demo", "--category", "demo_object", "--image-size", "64", "--steps", "4",
                         "--set", "train.batch_size=16", "--set", "train.init='scratch'", "--set",
                         "validation.sizes=[0]", "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "selection.json"
    subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--data-root", str(cache / "demo"),
                    "--sizes", "0", "96", "--images", "12", "--families", "perlin", "poisson", "--quiet",
                    "--out", str(out)],
                   check=True, capture_output=True, timeout=600, env={**os.environ, "SSAD_CACHE_DIR": str(cache)})
    result = json.loads(out.read_text())["runs"][0]
    assert result["category"] == "demo_object" and result["validation_images"] == 12
    assert [(r["image_size"], r["image_score"]) for r in result["rows"]] == \
        [(size, kind) for size in (64, 96) for kind in ("map_max", "map_top", "density", "fusion")]
    for row in result["rows"]:
        for side in ("validation", "test"):
            assert 0 <= row[side]["image_auroc"] <= 1 and 0 < row[side]["aupro"] <= 1
        assert set(row["validation_by_family"]) == {"perlin", "poisson"}
    agreement = result["agreement"]
    assert agreement["spearman_objective"] is None or -1 <= agreement["spearman_objective"] <= 1
    picked = tuple(agreement["picked"])
    row = next(r for r in result["rows"] if (r["image_size"], r["image_score"]) == picked)
    assert agreement["picked_test"]["objective"] == pytest.approx(row["test"]["objective"])
    assert agreement["best_test_objective"] >= agreement["picked_test"]["objective"]
    assert set(result["agreement_by_family"]) == {"perlin", "poisson"}
    assert out.with_suffix(".png").is_file()
