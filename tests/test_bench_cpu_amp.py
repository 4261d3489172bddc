"""bench/cpu_amp.py times float32 and bf16 steps side by side and writes its JSON (tiny sizes; no
timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ssad.cpu import native_bf16

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cpu_amp.py"


def test_cpu_amp_bench_writes_both_precisions(tmp_path):
    out = tmp_path / "cpu_amp.json"
    subprocess.run([sys.executable, str(SCRIPT), "--size", "32", "--batch", "2", "--steps", "1", "--repeats", "2",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert set(result["ms_per_step"]) == {"float32", "bf16"} and min(result["ms_per_step"].values()) > 0
    low, high = result["bf16_speedup_range"]
    assert low <= result["bf16_speedup"] <= high
    assert result["env"]["native_bf16"] is native_bf16()


def test_cpu_amp_bench_refuses_counts_below_one(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "0", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "at least 1" in run.stderr
