"""bench/train_step.py runs end to end and writes its JSON (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


def test_train_step_bench_writes_json(tmp_path):
    out = tmp_path / "train_step.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--size", "64", "--batch", "4", "--dataset", "8",
         "--steps", "1", "--warmup", "0", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    result = json.loads(out.read_text())
    assert set(result["median_seconds"]) == {"with_synthesis", "presynthesized", "synthesis_only", "with_segmentation"}
    assert result["segmentation_step_ratio"] > 0
    assert 0 < result["synthesis_fraction_of_step"] < 1
