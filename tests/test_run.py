"""`python -m ssad.run`: the whole job end to end on demo data, and its answers to bad input."""

from __future__ import annotations

import json

import pytest

from ssad.run import METRICS, main

TINY = ["--demo", "--image-size", "64", "--set", "train.batch_size=16", "--set", "train.init='scratch'",
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
    assert {p.name for p in (tmp_path / "all").iterdir()} == {"demo_object", "demo_moving", "demo_dark", "demo_texture"}


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
