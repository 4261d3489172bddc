"""bench/coreset.py: the kNN memory's test figures and fit time per candidates budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "coreset.py"


def test_bench_fits_and_scores_a_run_at_each_budget(head_demo_run, tmp_path):
    run, data_root = head_demo_run
    out = tmp_path / "coreset.json"
    subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--data-root", str(data_root),
                    "--candidates", "0", "20000", "--out", str(out)],
                   check=True, capture_output=True, timeout=600,
                   env={**os.environ, "SSAD_CACHE_DIR": str(data_root.parent)})
    result = json.loads(out.read_text())["runs"][0]
    assert result["image_size"] == 64 and result["memory"] == 10_000
    assert [r["candidates"] for r in result["rows"]] == [0, 20_000]
    assert result["rows"][0]["all_patches"] == result["training_images"] * 64
    for row in result["rows"]:
        assert row["fit_seconds"] > 0 and 0 <= row["pixel_auroc"] <= 1 and 0 <= row["aupro"] <= 1
