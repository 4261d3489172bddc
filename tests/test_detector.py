"""The saved detector: load, score, predict on files, export; and its answers to bad input."""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import replace
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssad.data import load_category
from ssad.detector import Detector, load_detector
from ssad.export import export_onnx
from ssad.export import main as export_main
from ssad.metrics import auroc, image_auroc
from ssad.predict import main as predict_main
from ssad.run import main as run_main
from ssad.image_score import map_statistics
from ssad.score import embed_images

# Validation at the training size only: the larger candidate sizes are tested in test_selection.py.
TINY = ["--demo", "--image-size", "64", "--set", "train.batch_size=16", "--set", "train.init='scratch'",
        "--set", "validation.sizes=[0]",
        "--no-progress", "--steps", "20"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished demo run (demo_moving: the kNN patch scorer) with its demo data in a private cache."""
    base = tmp_path_factory.mktemp("detector")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAD_CACHE_DIR", str(base / "cache"))
        assert run_main([*TINY, "--category", "demo_moving", "--out", str(base / "run")]) == 0
    return base / "run"


@pytest.fixture(scope="module")
def demo_data(run):
    root = run.parent / "cache" / "demo"
    return load_category(root, "demo_moving", image_size=64, progress=False, cache_dir=run.parent / "cache")


def test_saved_detector_reproduces_the_runs_metrics(run, demo_data):
    detector = load_detector(run / "detector.pt")
    assert detector.thresholds == "f1" and not detector.training
    scores, maps = detector.score_all(demo_data.test)
    metrics = json.loads((run / "metrics.json").read_text())
    assert image_auroc(scores, demo_data.test_labels) == pytest.approx(metrics["image_auroc"], abs=1e-9)
    # The same as fitting's own path (dense maps -> patch scorer; pooled embeddings -> density;
    # their statistics -> the image score the run chose).
    direct_maps = detector.patches.score(detector.model, demo_data.test)
    density = detector.density.score(embed_images(detector.model, demo_data.test)) \
        if detector.density is not None else torch.full((len(direct_maps),), float("nan"))
    direct_scores = detector.image_score(torch.cat([map_statistics(direct_maps), density[:, None]], dim=1))
    torch.testing.assert_close(scores, direct_scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(maps, direct_maps, rtol=1e-4, atol=1e-4)
    # Decisions follow the thresholds; both pairs are finite.
    out = detector(demo_data.test[:8])
    assert torch.equal(out.anomalous, out.scores >= detector.image_threshold_f1)
    assert torch.isfinite(torch.stack([detector.image_threshold_normal, detector.pixel_threshold_normal])).all()


def test_detector_takes_uint8_float_grayscale_and_any_size(run, demo_data):
    detector = load_detector(run / "detector.pt")
    images = demo_data.test[:4]
    as_uint8, as_float = detector(images), detector(images.float() / 255)
    torch.testing.assert_close(as_uint8.scores, as_float.scores)
    grey = images[:, :1]
    torch.testing.assert_close(detector(grey).scores, detector(grey.expand(-1, 3, -1, -1)).scores)
    big = detector(torch.rand(3, 3, 100, 150))
    assert big.scores.shape == (3,) and big.maps.shape == big.defect_masks.shape == (3, 1, 100, 150)
    assert big.anomalous.dtype == torch.bool
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        detector(torch.rand(3, 64, 64))


def test_predict_on_the_test_folder_reproduces_the_image_auroc(run, tmp_path):
    out = tmp_path / "pred"
    test_dir = run.parent / "cache" / "demo" / "demo_moving" / "test"
    assert predict_main(["--run", str(run), str(test_dir), "--out", str(out), "--maps", "--no-progress"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == len(list(test_dir.rglob("*.png")))
    scores = torch.tensor([float(r["score"]) for r in rows])
    labels = torch.tensor([Path(r["path"]).parent.name != "good" for r in rows])
    # The same decoding and network as the run; batches differ, so allow a tie to flip.
    metrics = json.loads((run / "metrics.json").read_text())
    assert auroc(scores, labels) == pytest.approx(metrics["image_auroc"], abs=0.01)
    assert {r["anomalous"] for r in rows} <= {"0", "1"}
    assert len(list((out / "maps").glob("*.png"))) == len(rows)
    # Never overwritten.
    assert predict_main(["--run", str(run), str(test_dir), "--out", str(out), "--no-progress"]) == 2


def test_predict_names_bad_inputs_and_scores_the_rest(run, tmp_path, capsys):
    good = next((run.parent / "cache" / "demo" / "demo_moving" / "test" / "good").glob("*.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    missing = tmp_path / "missing.png"
    out = tmp_path / "pred"
    code = predict_main(["--run", str(run), str(good), str(corrupt), str(missing), str(tmp_path / "*.jpg"),
                         "--out", str(out), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "missing.png: no such file" in err and "*.jpg: matches no file" in err
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [str(good)]


def test_detector_from_another_version_or_missing_is_refused(run, tmp_path, capsys):
    payload = torch.load(run / "detector.pt", weights_only=True)
    payload["format"] = 0
    other = tmp_path / "other"
    other.mkdir()
    torch.save(payload, other / "detector.pt")
    with pytest.raises(ValueError, match="format 0.*--resume"):
        load_detector(other / "detector.pt")
    assert predict_main(["--run", str(other), str(tmp_path), "--no-progress"]) == 2
    assert "format 0" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--resume"):
        load_detector(tmp_path / "nowhere" / "detector.pt")


@pytest.mark.parametrize("format_, loader", [
    ("pt2", lambda path: torch.export.load(path).module()),
    pytest.param("torchscript", torch.jit.load, marks=pytest.mark.filterwarnings("ignore:`torch.jit.load`")),
])
def test_export_equals_the_detector(run, tmp_path, format_, loader):
    path = tmp_path / "model"
    assert export_main(["--run", str(run), "--format", format_, "--out", str(path)]) == 0
    exported, detector = loader(str(path)), load_detector(run / "detector.pt")
    for shape in [(5, 3, 64, 64), (2, 3, 90, 70), (1, 3, 64, 80)]:  # exported at (2, 3, 64, 64)
        images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        for ours, theirs in zip(detector(images), exported(images)):
            torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_onnx_export_needs_its_extra_or_equals_the_detector(run, tmp_path, monkeypatch):
    detector = load_detector(run / "detector.pt")
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
        with pytest.raises(RuntimeError, match=r"\.\[onnx\]"):
            export_onnx(detector, tmp_path / "model.onnx")
        return
    import onnxruntime

    export_onnx(detector, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    images = torch.rand(3, 3, 80, 64, generator=torch.Generator().manual_seed(2))
    theirs = session.run(None, {"images": images.numpy()})
    for ours, other in zip(detector(images), theirs):
        torch.testing.assert_close(torch.from_numpy(other), ours, rtol=1e-3, atol=1e-3)


def test_resume_of_a_run_without_detector_writes_it(run, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAD_CACHE_DIR", str(run.parent / "cache"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((run / "config.json").read_bytes())
    # A run from before the defect families: its checkpoint's config lacks their settings.
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in [k for k in checkpoint["config"]["synth"] if k.startswith(("family", "perlin", "poisson", "pretext"))]:
        del checkpoint["config"]["synth"][key]
    torch.save(checkpoint, old / "checkpoint.pt")
    assert run_main([*TINY, "--category", "demo_moving", "--out", str(old), "--resume"]) == 0
    refit = load_detector(old / "detector.pt")
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads((old / "metrics.json").read_text())["image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert refit.image_threshold_f1 == pytest.approx(float(load_detector(run / "detector.pt").image_threshold_f1))


def test_the_detector_scores_at_score_image_size(run, tmp_path, monkeypatch):
    """A network trained at 64 px, fitted and scored at 96 (a finished run refits on --resume)."""
    monkeypatch.setenv("SSAD_CACHE_DIR", str(run.parent / "cache"))
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (bigger / name).write_bytes((run / name).read_bytes())
    assert run_main([*TINY, "--category", "demo_moving", "--out", str(bigger), "--resume",
                     "--set", "score.image_size=96"]) == 0
    detector, trained = load_detector(bigger / "detector.pt"), load_detector(run / "detector.pt")
    assert (detector.image_size, trained.image_size) == (96, 64)
    for key, value in trained.model.state_dict().items():
        assert torch.equal(detector.model.state_dict()[key], value), key
    data = load_category(run.parent / "cache" / "demo", "demo_moving", image_size=96, progress=False,
                         cache_dir=run.parent / "cache")
    scores, maps = detector.score_all(data.test)
    assert maps.shape[-2:] == (96, 96)
    metrics = json.loads((bigger / "metrics.json").read_text())
    assert image_auroc(scores, data.test_labels) == pytest.approx(metrics["image_auroc"], abs=1e-9)
    assert sorted(p.name for p in (bigger / "test_images").glob("*.png")) == \
        sorted(p.name for p in (run / "test_images").glob("*.png"))


def test_map_max_image_score_is_the_maps_maximum(tmp_path):
    from ssad.config import ScoreConfig
    from ssad.detector import fit_detector
    from ssad.model import create_model

    torch.manual_seed(0)
    model, _ = create_model("scratch")
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8)
    cfg = ScoreConfig(image_score="density", patch_scorer="knn", patch_memory=300)
    assert fit_detector(model, train, cfg, moves=False).image_score.kind == "density"
    detector = fit_detector(model, train, replace(cfg, image_score="map_max"), moves=True)
    out = detector(train[:4])
    torch.testing.assert_close(out.scores, out.maps.amax(dim=(1, 2, 3)))
    # The map's maximum needs no image density: none is fitted, saved or loaded.
    assert detector.density is None
    detector.save(tmp_path / "detector.pt")
    loaded = load_detector(tmp_path / "detector.pt")
    assert loaded.density is None
    torch.testing.assert_close(loaded(train[:4]).scores, out.scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a fitted density"):
        Detector(model, None, detector.patches, 64, image_score="density")
    with pytest.raises(ValueError, match="image_score"):
        ScoreConfig(image_score="mean")
    with pytest.raises(ValueError, match=r"score.image_size=32: use \"auto\" .*, 0 \(the training size\) or 64"):
        ScoreConfig(image_size=32)


def test_localization_bench_scores_a_run_at_other_sizes(run, tmp_path):
    """bench/localization.py --sizes: the run's own scorer at its training size reproduces the
    run's pixel AUROC; other sizes and channel counts come out as further rows."""
    out = tmp_path / "sizes.json"
    script = Path(__file__).resolve().parents[1] / "bench" / "localization.py"
    env = {**os.environ, "SSAD_CACHE_DIR": str(run.parent / "cache")}
    subprocess.run([sys.executable, str(script), "--run", str(run), "--data-root", str(run.parent / "cache" / "demo"),
                    "--no-variants", "--sizes", "64", "96", "--channels", "0", "16", "--out", str(out)],
                   check=True, capture_output=True, timeout=600, env=env)
    result = json.loads(out.read_text())["runs"][0]
    assert result["variants"] == [] and result["moves"]
    rows = result["scoring_sizes"]
    assert [(row["image_size"], row["channels"]) for row in rows] == [(64, 192), (64, 16), (96, 192), (96, 16)]
    same, bigger = rows[0], rows[2]
    assert same["pixel_auroc"] == pytest.approx(result["run_metrics"]["pixel_auroc"], abs=1e-6)
    assert 0 < bigger["aupro"] <= 1 and 0 <= bigger["image_auroc_of_map_max"] <= 1


def test_a_fused_image_score_exports_with_its_standardisation(tmp_path):
    """The fusion's standardisation (buffers) travels into the exported program."""
    from ssad.config import ScoreConfig
    from ssad.detector import fit_detector
    from ssad.export import export_program
    from ssad.model import create_model

    torch.manual_seed(0)
    model, _ = create_model("scratch")
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    detector = fit_detector(model, train, ScoreConfig(image_score="fusion", patch_memory=300), moves=False, folds=3)
    export_program(detector, tmp_path / "detector.pt2")
    exported = torch.export.load(str(tmp_path / "detector.pt2")).module()
    images = torch.rand(3, 3, 80, 72, generator=torch.Generator().manual_seed(1))
    for ours, theirs in zip(detector(images), exported(images)):
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image_score", ["map_max", "fusion"])
def test_exported_program_takes_any_batch_with_or_without_the_density(image_score, tmp_path):
    """Without a density the statistics' density column is NaN: it must follow the batch, not the
    example batch the program was exported with."""
    from ssad.config import ScoreConfig
    from ssad.detector import fit_detector
    from ssad.export import export_program
    from ssad.model import create_model

    torch.manual_seed(0)
    model, _ = create_model("scratch")
    train = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8)
    detector = fit_detector(model, train, ScoreConfig(patch_scorer="knn", patch_memory=200,
                                                      image_score=image_score), moves=True)
    export_program(detector, tmp_path / "detector.pt2")
    program = torch.export.load(tmp_path / "detector.pt2").module()
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for theirs, ours in zip(program(images), detector(images)):
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
