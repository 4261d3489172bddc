"""bench/coreset.py: the kNN memory's test figures and fit time per candidates budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssad.run import main as run_main

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "coreset.py"


def test_bench_fits_and_scores_a_run_at_each_budget(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAD_CACHE_DIR", str(cache))
        assert run_main(["--demo", "--category", "demo_object", "--image-size", "64", "--steps", "2",
                         "--set", "train.batch_size=16", "--set", "train.init='scratch'", "--set",
                         "validation.sizes=[0]", "--set", "score.patch_memory=500", "--no-progress",
                         "--out", str(run)]) == 0
    out = tmp_path / "coreset.json"
    subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--data-root", str(cache / "demo"),
                    "--candidates", "0", "1000", "--out", str(out)],
                   check=True, capture_output=True, timeout=600, env={**os.environ, "SSAD_CACHE_DIR": str(cache)})
    result = json.loads(out.read_text())["runs"][0]
    assert result["image_size"] == 64 and result["memory"] == 500
    assert [r["candidates"] for r in result["rows"]] == [0, 1000]
    assert result["rows"][0]["all_patches"] == result["training_images"] * 64
    for row in result["rows"]:
        assert row["fit_seconds"] > 0 and 0 <= row["pixel_auroc"] <= 1 and 0 <= row["aupro"] <= 1
