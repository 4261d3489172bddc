"""`python -m ssad.run`: the whole job end to end on demo data, and its answers to bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ssad.data import DEMO_CATEGORIES, make_demo_dataset
from ssad.run import METRICS, main

# Validation at the training size only: the larger candidate sizes are tested in test_selection.py.
TINY = ["--demo", "--image-size", "64", "--set", "train.batch_size=16", "--set", "train.init='scratch'",
        "--set", "validation.sizes=[0]",
        "--no-progress"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSAD_CACHE_DIR", str(tmp_path / "cache"))  # demo data and decoded tensors
    monkeypatch.chdir(tmp_path)


def test_demo_run_writes_every_output_and_beats_chance(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--steps", "40", "--out", str(out)]) == 0
    for name in ("config.json", "meta.json", "metrics.json", "train_log.jsonl", "checkpoint.pt",
                 "synthetic_samples.png", "roc.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["init"] == "scratch" and meta["steps"] == 40 and meta["seed"] == 0
    assert {"torch", "torchvision", "kornia", "python"} <= set(meta["versions"])
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 40
    panels = sorted(p.name for p in (out / "test_images").glob("*.png"))
    assert len(panels) == 32 and any(p.startswith("good_") for p in panels)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_auroc"] > 0.5 and metrics["pixel_auroc"] > 0.5 and 0 < metrics["aupro"] <= 1
    printed = capsys.readouterr().out
    assert all(m in printed for m in METRICS) and f"{metrics['image_auroc']:.3f}" in printed


def test_steps_zero_scores_the_initial_network_in_the_same_format(tmp_path, monkeypatch):
    out = tmp_path / "untrained"
    # Asked for bf16 on a CPU without native bf16: float32, and meta.json says why.
    monkeypatch.setattr("ssad.config.native_bf16", lambda: False)
    assert main([*TINY, "--steps", "0", "--out", str(out), "--set", "train.cpu_amp=true"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["steps"] == 0 and any("no native bf16" in note for note in meta["notes"])
    assert set(METRICS) <= set(json.loads((out / "metrics.json").read_text()))


def test_category_all_prints_a_summary(tmp_path, capsys):
    assert main([*TINY, "--steps", "2", "--category", "all", "--out", str(tmp_path / "all")]) == 0
    printed = capsys.readouterr().out
    assert "summary" in printed and "mean" in printed
    assert {p.name for p in (tmp_path / "all").iterdir()} == set(DEMO_CATEGORIES)
    # Each category's meta.json holds the run's notes and its own, not another category's.
    notes = json.loads((tmp_path / "all" / "demo_object" / "meta.json").read_text())["notes"]
    assert not any("demo_strip" in note for note in notes)
    strip = json.loads((tmp_path / "all" / "demo_strip" / "meta.json").read_text())["notes"]
    assert any("demo_strip" in note for note in strip)


def test_bad_input_gets_clear_errors(tmp_path, capsys):
    assert main([*TINY, "--steps", "1", "--category", "screw"]) == 2
    err = capsys.readouterr().err  # --demo was given: name the demo categories, do not suggest --demo
    assert "'screw'" in err and "demo_moving, demo_object, demo_texture, demo_dark" in err and "with --demo" not in err

    assert main([*TINY, "--steps", "1", "--set", "train.stesp=3"]) == 2
    assert "train.stesp" in capsys.readouterr().err

    out = tmp_path / "run"
    assert main([*TINY, "--steps", "1", "--out", str(out)]) == 0
    before = (out / "metrics.json").read_bytes()
    assert main([*TINY, "--steps", "1", "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before

    assert main([*TINY, "--steps", "1", "--set", "train.lr=0.5", "--out", str(out), "--resume"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_a_run_with_every_family_and_one_class_per_family(tmp_path):
    from ssad.detector import load_detector

    out = tmp_path / "families"
    families = ["--set", "synth.family_probs=[0.4, 0.3, 0.3]", "--set", "synth.pretext='families'"]
    assert main([*TINY, *families, "--steps", "4", "--out", str(out)]) == 0
    assert load_detector(out / "detector.pt").model.classifier.out_features == 5
    assert set(METRICS) <= set(json.loads((out / "metrics.json").read_text()))


def meta_map_source(run: Path) -> str:
    return json.loads((run / "meta.json").read_text())["scoring"]["map_source"]


def test_a_run_records_what_validation_chose_and_what_the_data_layer_decided(tmp_path, capsys):
    out = tmp_path / "chosen"
    assert main([*TINY, "--steps", "4", "--category", "demo_moving", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    validation = metrics["validation"]
    chosen = (validation["image_size"], validation["image_score"])
    assert chosen in {(row["image_size"], row["image_score"]) for row in validation["figures"]}
    assert validation["decided_by"] == {"image_size": "validation", "map_source": "validation",
                                        "image_score": "validation"}
    assert validation["map_source"] == meta_map_source(out) == "memory"  # no head: the memory alone
    assert validation["rule"].startswith("highest mean")
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["scoring"]["image_size"], meta["scoring"]["image_score"]) == chosen
    assert meta["data"]["kind"] == "object" and meta["data"]["moves"] and meta["data"]["decided_by"] == "category.json"
    assert 0 <= meta["pretext_accuracy"] <= 1
    for name in ("validation.png", "validation_samples.png", "detector.pt"):
        assert (out / name).is_file(), name
    assert "<- chosen" in capsys.readouterr().out


def test_a_category_with_image_labels_only_finishes_with_pixel_metrics_na(tmp_path, capsys):
    """Defective test images without masks: image metrics, pixel metrics null with a note, and the
    detector and pictures written as usual."""
    root = tmp_path / "data"
    make_demo_dataset(root, image_size=64, n_train=16, n_test=3, categories=["demo_object"])
    shutil.rmtree(root / "demo_object" / "ground_truth")
    out = tmp_path / "labels_only"
    args = [a for a in TINY if a != "--demo"]
    assert main([*args, "--steps", "2", "--data-root", str(root), "--category", "demo_object", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["image_auroc"] <= 1 and 0 < metrics["image_f1_max"] <= 1
    assert metrics["pixel_auroc"] is None and metrics["aupro"] is None and metrics["pixel_f1_max"] is None
    assert any("ground-truth mask" in note for note in metrics["notes"])
    for name in ("detector.pt", "roc.png", "meta.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "test_images").glob("*.png"))) == 12
    printed = capsys.readouterr().out
    assert "n/a" in printed
    from ssad.detector import load_detector

    detector = load_detector(out / "detector.pt")  # f1 image threshold; the pixel one from normal images
    assert detector.thresholds == "f1" and detector.pixel_threshold_f1 == detector.pixel_threshold_normal


def test_a_surface_without_category_file_is_read_as_a_texture(tmp_path):
    """demo_strip fills the frame and has no category.json: the run says what the data layer
    decided, and the pretext trains on texture defects."""
    out = tmp_path / "strip"
    # Validated at a second size too: the kind is decided once, at the training size, and said once.
    assert main([*TINY, "--steps", "2", "--category", "demo_strip", "--set", "validation.sizes=[0, 80]",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["kind"] == "texture" and meta["data"]["decided_by"] == "estimated"
    assert "category.json" in meta["data"]["reason"]
    assert [note for note in meta["notes"] if "no category.json" in note] == [meta["data"]["reason"]]
