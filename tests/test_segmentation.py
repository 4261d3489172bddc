"""The segmentation head: the network's, its loss, training with it, and the map sources it gives
the detector (head, memory, calibrated fusion) through saving, exporting, predicting and validation."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ssad.anomaly_map import AnomalyMap
from ssad.config import ScoreConfig, ValidationConfig, load_config
from ssad.data import load_category
from ssad.detector import fit_detector, load_detector
from ssad.export import FORMATS
from ssad.image_score import IMAGE_SCORES
from ssad.metrics import pixel_auroc
from ssad.model import create_model, normalise
from ssad.predict import main as predict_main
from ssad.registry import MAP_SOURCES
from ssad.score import smooth_map
from ssad.selection import choose, select_and_fit
from ssad.synth import DefectSynthesizer
from ssad.train import checkpoint_path, segmentation_loss, train

SIZE = 64  # the side of the `demo` fixture (tests/conftest.py, DEMO_SIZE)
#: A small, fast scorer for tests: few memory features.
SCORE = ScoreConfig(patch_memory=200)


@pytest.fixture(scope="module")
def headed():
    """An untrained network with a head (its maps are arbitrary, but every path runs the same)."""
    torch.manual_seed(0)
    return create_model("scratch", segmentation=True)[0].eval()


@pytest.fixture(scope="module")
def train_images():
    return torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_the_head_draws_a_quarter_side_map_and_leaves_the_other_weights_as_they_were():
    torch.manual_seed(0)
    plain = create_model("scratch")[0].eval()
    torch.manual_seed(0)
    model = create_model("scratch", segmentation=True)[0].eval()
    headed_state = model.state_dict()
    for key, value in plain.state_dict().items():  # a run without the head draws the same initial network
        assert torch.equal(value, headed_state[key]), key
    x = normalise(torch.rand(2, 3, 96, 64))
    logits, masks = model(x, segment=True)
    assert logits.shape == (2, 3) and masks.shape == (2, 1, 24, 16)
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.segment(x), masks)
    with pytest.raises(ValueError, match="segmentation head"):
        plain.segment(x)
    with pytest.raises(ValueError, match="train.segmentation=true"):
        plain(x, segment=True)


def test_segmentation_loss_prefers_the_right_mask_and_stays_finite_without_defects():
    masks = torch.zeros(4, 1, SIZE, SIZE, dtype=torch.bool)
    masks[1, :, 10:30, 20:40] = True  # a patch
    masks[2, :, 40:42, 5:50] = True  # a scar two pixels wide
    quarter = F.interpolate(masks.float(), size=(SIZE // 4, SIZE // 4), mode="area")
    right = 16 * (quarter - 0.25)  # positive wherever a quarter of the cell is defect
    right.requires_grad_(True)
    loss = segmentation_loss(right, masks)
    assert loss < 0.5 * segmentation_loss(-right.detach(), masks)
    assert loss < segmentation_loss(torch.zeros_like(right), masks)
    loss.backward()
    assert torch.isfinite(right.grad).all() and right.grad.abs().sum() > 0
    # A batch without any defect: finite, lower the surer the head says "nothing here".
    nothing = torch.zeros_like(masks)
    losses = [segmentation_loss(torch.full_like(right, value), nothing) for value in (8.0, 0.0, -8.0, -16.0)]
    assert all(torch.isfinite(loss) for loss in losses)
    assert losses[0] > losses[1] > losses[2] > losses[3] and losses[3] < 0.01


def test_training_with_the_head_learns_where_the_synthetic_defects_are(demo, tmp_path):
    config = load_config([], [f"data.image_size={SIZE}", "train.steps=80", "train.init='scratch'",
                              "train.batch_size=32", "train.lr=0.01", "train.log_every=80",
                              "train.segmentation=true"])
    held_back = demo.test[demo.test_labels == 0]  # normal images training never saw
    synth = DefectSynthesizer(config.synth)
    batch = synth(held_back[torch.arange(32) % len(held_back)], demo.object_masks,
                  generator=torch.Generator().manual_seed(5))
    torch.manual_seed(config.train.seed)
    untrained = create_model("scratch", segmentation=True)[0].eval()

    def head_figures(model):
        with torch.no_grad():
            logits = model.segment(normalise(batch.images))
        return segmentation_loss(logits, batch.masks).item(), \
            pixel_auroc(F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear"), batch.masks)

    result = train(config, demo, tmp_path, progress=False)
    assert any(key.startswith("segmentation.") for key in torch.load(checkpoint_path(tmp_path),
                                                                     weights_only=True)["model"])
    loss_before, auroc_before = head_figures(untrained)
    loss_after, auroc_after = head_figures(result.model.eval())
    assert loss_after < loss_before
    assert auroc_after > max(auroc_before, 0.7), (auroc_before, auroc_after)


def test_a_fused_map_averages_the_sources_standardised_on_normal_maxima():
    generator = torch.Generator().manual_seed(0)
    memory = torch.rand(40, 1, 8, 8, generator=generator) * 5 + 3  # distances: large, positive
    head = torch.randn(40, 1, 16, 16, generator=generator) * 0.5 - 6  # logits: negative on normal images
    size = (32, 32)
    fusion = AnomalyMap("fusion", sigma=1.0)
    with pytest.raises(RuntimeError, match="calibrate"):
        fusion(memory, head, size)
    sources = [smooth_map(memory, size, 1.0), smooth_map(head, size, 1.0)]
    maxima = torch.stack([m.amax(dim=(1, 2, 3)) for m in sources], dim=1)
    fusion.calibrate(maxima)
    expected = sum((m - c) / s for m, c, s in zip(sources, fusion.centre, fusion.spread)) / 2
    torch.testing.assert_close(fusion(memory, head, size), expected)
    # Each source's normal maxima land at median 0: neither dominates because of its units.
    standard = (maxima - fusion.centre) / fusion.spread
    torch.testing.assert_close(standard.median(dim=0).values, torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(AnomalyMap("head", 1.0)(None, head, size), sources[1])
    with pytest.raises(ValueError, match="no head scores"):
        AnomalyMap("head", 1.0)(memory, None, size)
    with pytest.raises(ValueError, match="map source 'both'"):
        AnomalyMap("both")


def test_the_head_map_needs_a_network_with_a_head(train_images, demo_root, tmp_path):
    torch.manual_seed(0)
    plain = create_model("scratch")[0]
    with pytest.raises(ValueError, match="train.segmentation=true"):
        fit_detector(plain, train_images, ScoreConfig(map_source="head", patch_memory=200), moves=False, folds=3)
    load = lambda size: load_category(demo_root, "demo_object", image_size=size, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="train.segmentation=true"):
        select_and_fit(plain, load, ScoreConfig(map_source="fusion"), ValidationConfig(sizes=(0,)), SIZE, False)
    with pytest.raises(ValueError, match="score.map_source='both'"):
        ScoreConfig(map_source="both")


@pytest.mark.parametrize("source", ["head", "fusion"])
def test_a_head_detector_saves_loads_predicts_and_exports_with_its_map(source, headed, train_images, tmp_path):
    # The head sees the images at half the scoring side, as a head trained at 128 px does at 256 px.
    detector = fit_detector(headed, train_images, ScoreConfig(map_source=source, image_score="fusion",
                                                              patch_memory=200), moves=False, folds=3,
                            head_size=SIZE // 2)
    assert detector.anomaly_map.kind == source and detector.head_size == SIZE // 2
    assert detector.embed(train_images[:2]).head.shape[-2:] == (SIZE // 8, SIZE // 8)
    assert (detector.patches is None) == (source == "head")  # the head alone fits no memory
    assert detector.anomaly_map.calibrated == (source == "fusion") and detector.image_score.calibrated
    images = torch.rand(3, 3, 80, 72, generator=torch.Generator().manual_seed(1))
    ours = detector(images)
    detector.save(tmp_path / "detector.pt")
    loaded = load_detector(tmp_path / "detector.pt")
    assert loaded.anomaly_map.kind == source and loaded.model.segmentation is not None
    assert loaded.head_size == SIZE // 2
    for theirs, mine in zip(loaded(images), ours):
        torch.testing.assert_close(theirs, mine)
    for name, (file_name, write) in FORMATS.items():
        if name == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            continue  # the optional [onnx] extra: test_detector.py tests its error message without it
        write(detector, tmp_path / file_name)
    exported = [torch.export.load(str(tmp_path / FORMATS["pt2"][0])).module(),
                torch.jit.load(str(tmp_path / FORMATS["torchscript"][0]))]
    if (tmp_path / FORMATS["onnx"][0]).exists():
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / FORMATS["onnx"][0]))
        exported.append(lambda x: [torch.from_numpy(out) for out in session.run(None, {"images": x.numpy()})])
    for program in exported:
        for theirs, mine in zip(program(images), ours):
            torch.testing.assert_close(theirs, mine, rtol=1e-3, atol=1e-3)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    assert predict_main(["--run", str(tmp_path), str(folder), "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    assert len(list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))) == 3


def test_validation_chooses_among_the_three_sources_where_the_network_has_a_head(headed, demo_root, tmp_path):
    load = lambda size: load_category(demo_root, "demo_object", image_size=size, cache_dir=tmp_path, progress=False)
    detector, selection = select_and_fit(headed, load, SCORE, ValidationConfig(sizes=(0, 96), images=10), SIZE,
                                         False)
    assert [f.setting for f in selection.figures] == \
        [(size, source, kind) for size in (SIZE, 96) for source in MAP_SOURCES for kind in IMAGE_SCORES]
    chosen = choose(selection.figures)
    assert selection.setting == chosen.setting
    assert (detector.anomaly_map.kind, detector.image_score.kind) == (chosen.map_source, chosen.image_score)
    assert selection.decided_by["map_source"] == "validation"
    # At every scoring size the head sees the images at its training size.
    assert detector.head_size == (SIZE if detector.anomaly_map.needs_head else 0)
    # The head and the fusion see the same defects as the memory: one pixel figure per source.
    by_source = {f.map_source: f.pixel_auroc for f in selection.figures}
    assert all(0 <= value <= 1 for value in by_source.values())


def test_coarse_scores_gather_puts_every_row_back_in_its_place():
    from ssad.detector import CoarseScores

    memory = torch.arange(6.0).reshape(6, 1, 1, 1)
    density = torch.arange(6.0) * 10
    rows = [torch.tensor([4, 0, 2]), torch.tensor([5, 1, 3])]
    parts = [(r, CoarseScores(memory[r], None, density[r], 32)) for r in rows]
    gathered = CoarseScores.gather(parts)
    assert torch.equal(gathered.memory, memory) and torch.equal(gathered.density, density)
    assert gathered.head is None and gathered.image_size == 32 and len(gathered) == 6
    assert [len(b) for b in gathered.batches(4)] == [4, 2]
