"""Fitting a detector under torchrun: each rank embeds its share of the images, the memory is gathered once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch

from ssad.config import ScoreConfig
from ssad.data import load_category
from ssad.detector import fit_detector
from ssad.model import create_model

WORKER = Path(__file__).with_name("fit_worker.py")


def _fit_on_two_ranks(folder: Path, *memories: int) -> dict[int, tuple[dict, dict]]:
    """Each memory size's fitted detector on rank 0 and rank 1 (bank, thresholds, test scores)."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(port), str(WORKER), str(folder), *map(str, memories)],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, capture_output=True)
    return {m: tuple(torch.load(folder / f"rank{r}_{m}.pt") for r in (0, 1)) for m in memories}


def test_two_gloo_ranks_fit_the_detector_one_process_fits(demo_root, tmp_path):
    shutil.copytree(demo_root / "demo_object", tmp_path / "demo" / "demo_object")
    data = load_category(tmp_path / "demo", "demo_object", image_size=64, cache_dir=tmp_path / "cache", progress=False)
    fitted = _fit_on_two_ranks(tmp_path, 2000, 300)
    # A memory that keeps every candidate: the same features as one process's, up to float noise.
    rank0, rank1 = fitted[2000]
    torch.manual_seed(0)
    model = create_model("scratch")[0]
    alone = fit_detector(model, data.train, ScoreConfig(patch_memory=2000, patch_candidates=2000,
                                                        image_score="fusion"), moves=True)
    assert rank0["bank"].shape == alone.patches.bank.shape == (2000, 192)
    torch.testing.assert_close(rank0["bank"], alone.patches.bank, atol=1e-4, rtol=1e-4)
    for key in ("pixel", "image", "scores"):
        torch.testing.assert_close(rank0[key], rank1[key], atol=0, rtol=0)  # every rank holds the same detector
        torch.testing.assert_close(rank0[key], getattr(alone, f"{key}_threshold_normal") if key != "scores"
                                   else alone.score_all(data.test)[0], atol=1e-3, rtol=1e-3)
    # A memory smaller than its candidates: a choice, the same one on every rank.
    rank0, rank1 = fitted[300]
    assert rank0["bank"].shape == (300, 192) and torch.equal(rank0["bank"], rank1["bank"])
