"""Tests of the per-image CPU baseline (bench/cpu_baseline.py) and of the throughput benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import cpu_baseline  # noqa: E402

SIZE = 64


def random_images(n: int, size: int = SIZE) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def samples():
    """300 samples of one dataset: (images (N,3,H,W) float32, labels (N,), masks (N,1,H,W))."""
    dataset = cpu_baseline.PretextDataset(random_images(10), seed=1)
    images, labels, masks = zip(*(dataset[i % len(dataset)] for i in range(300)))
    return torch.stack(images), torch.stack(labels), torch.stack(masks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_loader_shapes_and_dtypes(dtype):
    loader = cpu_baseline.make_loader(random_images(4), batch_size=8, dtype=dtype,
                                      samples_per_epoch=16)
    batches = list(loader)
    assert len(batches) == 2
    images, labels, masks = batches[0]
    assert images.shape == (8, 3, SIZE, SIZE) and images.dtype == dtype
    assert labels.shape == (8,) and labels.dtype == torch.int64
    assert masks.shape == (8, 1, SIZE, SIZE) and masks.dtype == torch.bool
    if dtype == torch.float32:
        assert 0 <= images.min() and images.max() <= 1
    else:
        assert images.float().max() > 1  # raw 0..255 values, not divided by 255


def test_same_seed_same_batches():
    first, second = (next(iter(cpu_baseline.make_loader(random_images(4), batch_size=8, seed=3)))
                     for _ in range(2))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_labels_roughly_uniform(samples):
    _, labels, _ = samples
    assert set(labels.tolist()) <= {0, 1, 2}
    counts = torch.bincount(labels, minlength=3)
    assert counts.min() >= 70, counts  # expected 100 each; 70 is > 3.5 standard deviations away


def test_mask_empty_iff_label_zero_and_area_plausible(samples):
    _, labels, masks = samples
    area = masks.flatten(1).float().mean(1)  # fraction of the image
    assert (area[labels == 0] == 0).all()
    # Polygon: inside a rectangle of ratio [0.05, 0.1]; a convex polygon through points on each of
    # its four sides covers at least some of it and at most all of it (plus rounding).
    polygon = area[labels == 1]
    assert (polygon > 0.005).all() and (polygon <= 0.1 * 1.15).all()
    # Scar: the rotated rectangle keeps its area ratio [0.005, 0.01], up to pixel rounding (large
    # at 64 px, where a scar can be 1 px wide).
    scar = area[labels == 2]
    assert (scar > 0.005 * 0.4).all() and (scar < 0.01 * 1.6).all()


def test_defect_changes_nothing_outside_its_mask():
    images = random_images(4)
    dataset = cpu_baseline.PretextDataset(images, dtype=torch.uint8, seed=2)
    dataset._jitter = lambda image: image.copy()  # isolate the defect from the colour jitter
    for k in range(60):
        image, label, mask = dataset[k % 4]
        original = torch.from_numpy(np.array(images[k % 4])).permute(2, 0, 1)
        outside = ~mask.expand_as(image)
        assert torch.equal(image[outside], original[outside])
        if label == 0:
            assert torch.equal(image, original)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        cpu_baseline.PretextDataset([])
    with pytest.raises(ValueError):
        cpu_baseline.PretextDataset(random_images(1), dtype=torch.float16)
    with pytest.raises(ValueError):
        cpu_baseline.PretextDataset(random_images(1) + random_images(1, size=32))


def test_throughput_script_end_to_end(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ)
    # The script runs with bench/ as sys.path[0]; make ssad importable the way this test sees it.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    cmd = [sys.executable, str(BENCH / "synth_throughput.py"), "--size", "64", "--batch", "8",
           "--batches", "2", "--warmup", "1", "--repeats", "1", "--workers", "0", "1",
           "--num-images", "16", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {"config", "env", "results", "ratios"} <= data.keys()
    assert len(data["results"]) == 2 * 3 * 2  # (2 worker counts + ssad) x 2 dtypes x 2 allocators
    assert all(r["images_per_s"] > 0 for r in data["results"])
    assert set(data["ratios"]) == {f"ssad_vs_baseline_1workers_{a}_{d}"
                                   for a in ("default", "retain") for d in ("uint8", "float32")}
    assert "| impl |" in proc.stdout
    assert not list(tmp_path.glob("*.tmp"))
