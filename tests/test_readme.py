"""The examples of the README and of docs/ run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: Where the marked examples live: the README and the pages of docs/.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _example(name: str) -> str:
    """The code of the example marked ``<!-- example: name -->``, from whichever page holds it."""
    for page in PAGES:
        match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", page.read_text(), re.S)
        if match:
            return match.group(1)
    raise AssertionError(f"no page of {[p.name for p in PAGES]} has an example marked {name!r}")


def test_training_loop_example_runs():
    scope: dict = {}
    exec(compile(_example("training-loop"), "README training-loop", "exec"), scope)
    out = scope["out"]
    assert out.images.shape == (16, 3, 128, 128) and out.labels.shape == (16,)
    assert scope["loss"].isfinite()


def test_detector_example_runs(tmp_path):
    from ssad.config import ScoreConfig
    from ssad.detector import fit_detector
    from ssad.model import create_model

    torch.manual_seed(0)
    model, _ = create_model("scratch")
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8)
    detector = fit_detector(model, train, ScoreConfig(patch_scorer="knn", patch_memory=200), moves=True)
    detector.save(tmp_path / "detector.pt")
    scope: dict = {"run_dir": tmp_path}
    exec(compile(_example("detector"), "README detector", "exec"), scope)
    out = scope["out"]
    assert out.scores.shape == (4,) and out.maps.shape == out.defect_masks.shape == (4, 1, 300, 200)
    assert scope["detector"].thresholds == "normal"


def test_families_example_runs():
    scope: dict = {}
    exec(compile(_example("families"), "README families", "exec"), scope)
    assert set(scope["out"].labels.tolist()) <= {0, 1, 2, 3, 4} and scope["out"].params["family"].shape == (16,)


def test_streams_example_runs():
    exec(compile(_example("streams"), "README streams", "exec"), {})  # it asserts what it shows


def test_kornia_example_runs():
    scope: dict = {}
    exec(compile(_example("kornia"), "README kornia", "exec"), scope)
    assert scope["out_masks"].shape == (8, 1, 128, 128) and scope["labels"].shape == (8,)
    torch.testing.assert_close(scope["replayed"], scope["out"])
