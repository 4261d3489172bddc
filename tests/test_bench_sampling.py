"""bench/sampling.py runs and counts operations: the unmasked path dispatches fewer (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "sampling.py"


def test_sampling_bench_counts_fewer_operations_without_masks(tmp_path):
    out = tmp_path / "sampling.json"
    subprocess.run([sys.executable, str(SCRIPT), "--size", "64", "--batches", "2", "8", "--calls", "1",
                    "--repeats", "1", "--out", str(out)], check=True, capture_output=True, timeout=300)
    rows = {(r["path"], r["batch"]): r for r in json.loads(out.read_text())["results"]}
    for batch in (2, 8):
        box, mask = rows["box", batch], rows["mask", batch]
        assert 0 < box["ops_compute"] < mask["ops_compute"] and box["ops_views"] < mask["ops_views"]
    # The same operations for every batch size (no per-sample work, no data-dependent shapes).
    assert rows["box", 2]["ops_compute"] == rows["box", 8]["ops_compute"]
