"""bench/gpu_check.py's families part runs on the CPU (its dry run), checks each family against
the CPU and the per-sample streams, and its verdict reaches the summary. (No timing asserted.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check  # noqa: E402


def test_families_part_checks_every_family_on_the_cpu():
    args = argparse.Namespace(device="cpu", size=64, equality_batch=6, batches=[2, 4], warmup=0, repeats=1, iters=1)
    records = gpu_check.families(args)
    assert [r["family"] for r in records] == list(gpu_check.FAMILY_CONFIGS)
    for record in records:
        assert record["passed"], record
        assert record["sync_free"] == "not checked on the CPU"
        # One device: the same params give the same batch, the streams the same params.
        assert record["max_level_diff"] == 0 and record["mask_fraction_differing"] == 0
        assert record["streams_integer_params_equal"] and record["streams_max_param_diff"] == 0
        assert set(record["images_per_s"]) == {2, 4} and min(record["images_per_s"].values()) > 0
    assert "streams_perlin_mask_fraction_differing" in records[0]  # Perlin's masks are params

    report = {"parts": {"families": {"result": records}}}
    gpu_check.summarise(report)
    assert report["summary"]["families_passed"] is True
    records[1]["passed"] = False
    gpu_check.summarise(report)
    assert report["summary"]["families_passed"] is False
