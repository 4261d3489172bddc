"""Shared test fixtures: where the real MVTec AD data lies (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

MVTEC_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec"


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    if not (MVTEC_ROOT / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD data not found at {MVTEC_ROOT} (only present on the project's machines)")
    return MVTEC_ROOT
