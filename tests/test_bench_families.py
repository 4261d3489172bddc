"""bench/families.py and bench/poisson_solve.py run end to end and write their JSON (tiny sizes; no
timing asserted); the families' per-image Poisson reference solves as the engine does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ssad.synth.poisson import poisson_change

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "families.py"
sys.path.insert(0, str(SCRIPT.parent))

import families  # noqa: E402


def test_families_bench_writes_a_row_per_family_and_allocator(tmp_path):
    out = tmp_path / "families.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "64", "--batch", "4", "--batches", "1", "--repeats", "1",
         "--workers", "1", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    rows = json.loads(out.read_text())["rows"]
    allocators = {r["allocator"] for r in rows}  # "retain" needs glibc: skipped elsewhere
    assert "default" in allocators and allocators <= {"default", "retain"}
    assert sorted((r["family"], r["allocator"]) for r in rows) == sorted(
        (f, a) for f in ("perlin", "poisson") for a in allocators)
    for r in rows:
        assert r["per_image_images_per_s"] > 0 and r["batched_images_per_s"] > 0
        low, high = r["speedup_range"]
        assert low <= r["speedup"] <= high and r["batched_page_faults_per_call"] >= 0


def test_families_bench_refuses_counts_below_one(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--batch", "0", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "at least 1" in run.stderr


def test_the_reference_solves_as_the_engine():
    """The per-image reference's numpy solve against the engine's dense one: the comparison is
    between one algorithm run per image and run batched."""
    rng = np.random.default_rng(0)
    target, patch = rng.random((2, 3, 20, 27))
    top, bottom, left, right = 3, 12, 5, 20
    e = np.zeros_like(target)
    e[:, top:bottom + 1, left:right + 1] = (patch - target)[:, top:bottom + 1, left:right + 1]
    inside = torch.zeros(1, 1, 20, 27, dtype=torch.bool)
    inside[..., top:bottom + 1, left:right + 1] = True
    engine = poisson_change(torch.from_numpy(target)[None], torch.from_numpy(patch)[None], inside)[0]
    np.testing.assert_allclose(families.rectangle_change_np(e, top, bottom, left, right), engine.numpy(),
                               rtol=0, atol=1e-12)


def test_poisson_solve_bench_writes_json(tmp_path):
    out = tmp_path / "poisson_solve.json"
    subprocess.run([sys.executable, str(SCRIPT.parent / "poisson_solve.py"), "--sizes", "64", "--batch", "4",
                    "--batches", "1", "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["ms_per_call"]) == {"dense", "rectangle"} and row["speedup"] > 0
    assert row["mask_pixels"] > 0 and row["largest_difference"] <= 1  # the two solves agree to a level
