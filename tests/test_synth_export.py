"""`python -m ssad.synth export`: synthetic anomalies on disk in MVTec AD layout, read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ssad.data import load_category, make_demo_dataset
from ssad.synth.__main__ import main


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, image_size=64, n_train=12, n_test=2, categories=("demo_object",))
    return root


def _export(root, out, *extra):
    return main(["export", "--category", "demo_object", "--data-root", str(root), "--out", str(out),
                 "--image-size", "64", "--no-progress", "--set", "synth.family_probs=[0.4, 0.3, 0.3]", *extra])


def test_export_writes_a_category_that_load_category_reads(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAD_CACHE_DIR", str(tmp_path / "cache"))
    assert _export(demo_root, tmp_path / "out", "--n", "40", "--batch-size", "16") == 0
    folder = tmp_path / "out" / "demo_object"
    lines = [json.loads(line) for line in (folder / "params.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(40))
    kinds = {line["kind"] for line in lines}
    assert {"good", "polygon", "scar"} <= kinds and kinds <= {"good", "polygon", "scar", "perlin", "poisson"}
    for line in lines:
        assert (folder / line["file"]).is_file()
        if line["kind"] != "good":
            mask = np.asarray(Image.open(folder / "ground_truth" / line["kind"] / f"{line['index']:06d}_mask.png"))
            assert mask.any()  # every defect is marked
    data = load_category(tmp_path / "out", "demo_object", image_size=64, progress=False)
    assert len(data.train) == sum(line["kind"] == "good" for line in lines)
    assert len(data.test) == 40 - len(data.train) and bool(data.test_labels.all())
    assert data.test_masks.flatten(1).any(dim=1).all()


def test_export_is_the_same_for_any_batch_size_and_never_overwrites(demo_root, tmp_path, capsys):
    assert _export(demo_root, tmp_path / "a", "--n", "10", "--batch-size", "10") == 0
    assert _export(demo_root, tmp_path / "b", "--n", "10", "--batch-size", "3") == 0
    a, b = (tmp_path / name / "demo_object" for name in ("a", "b"))
    assert [json.loads(x)["kind"] for x in (a / "params.jsonl").read_text().splitlines()] == \
        [json.loads(x)["kind"] for x in (b / "params.jsonl").read_text().splitlines()]
    for file in sorted(a.rglob("*.png")):
        first = np.asarray(Image.open(file), dtype=int)
        second = np.asarray(Image.open(b / file.relative_to(a)), dtype=int)
        assert np.abs(first - second).max() <= 1, file
    assert _export(demo_root, tmp_path / "a", "--n", "10") == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
