"""bench/map_sources.py: each map source of a run with a segmentation head, overall and per defect type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssad.evaluate import measure
from ssad.image_score import IMAGE_SCORES
from ssad.registry import MAP_SOURCES

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "map_sources.py"


def test_bench_measures_every_source_and_defect_type_of_a_run_with_a_head(head_demo_run, tmp_path):
    run, data_root = head_demo_run
    chosen = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "sources.json"
    subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--data-root", str(data_root),
                    "--out", str(out)],
                   check=True, capture_output=True, timeout=600,
                   env={**os.environ, "SSAD_CACHE_DIR": str(data_root.parent)})
    result = json.loads(out.read_text())["runs"][0]
    assert result["segmentation"] and result["image_size"] == 64
    assert result["validation_choice"]["map_source"] == chosen["validation"]["map_source"]
    assert [(r["map_source"], r["image_score"]) for r in result["rows"]] == \
        [(source, kind) for source in MAP_SOURCES for kind in IMAGE_SCORES]
    for row in result["rows"]:
        assert 0 <= row["image_auroc"] <= 1 and 0 < row["aupro"] <= 1
        assert row["by_type"] and all(0 <= figures["pixel_auroc"] <= 1 for figures in row["by_type"].values())
    # The row of the run's own choice is the run's own figure: the same fit, the same folds.
    own = next(r for r in result["rows"] if (r["map_source"], r["image_score"])
               == (chosen["validation"]["map_source"], chosen["validation"]["image_score"]))
    assert own["pixel_auroc"] == pytest.approx(chosen["pixel_auroc"], abs=1e-4)
    assert own["image_auroc"] == pytest.approx(chosen["image_auroc"], abs=1e-4)
    assert out.with_suffix(".png").is_file()


def test_measure_gives_no_pixel_figures_without_masks():
    import torch

    labels = torch.tensor([0, 0, 1, 1])
    maps = torch.rand(4, 1, 8, 8)
    evaluation = measure(torch.tensor([0.1, 0.2, 0.3, 0.9]), maps, labels, torch.zeros(4, 1, 8, 8, dtype=torch.bool),
                         torch.tensor([True, True, False, False]))
    assert evaluation.metrics["image_auroc"] == 1.0 and evaluation.metrics["pixel_auroc"] is None
