"""`object_mask`: foreground estimation on synthetic scenes and on real MVTec AD images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.synth import DefectSynthesizer, SynthConfig, object_mask
from ssad.synth.object_mask import masks_at

SIZE = 128
BENCH = Path(__file__).resolve().parents[1] / "bench" / "object_mask.py"


def _disk_scene(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark disks with a bright hole, on a light backdrop, at different places: (images, disks)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images, disks = [], []
    for i in range(batch):
        cx, cy = 40 + 12 * i, 70 - 8 * i
        r = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
        disk = r < 30
        image = torch.full((3, SIZE, SIZE), 220, dtype=torch.uint8)
        image[:, disk] = 40
        image[:, r < 8] = 225  # a hole the colour of the backdrop: must still count as object
        images.append(image)
        disks.append(disk)
    return torch.stack(images), torch.stack(disks)[:, None]


def test_disk_on_plain_backdrop_is_found_with_its_hole_filled():
    images, disks = _disk_scene(4)
    masks, info = object_mask(images, return_info=True)
    assert masks.shape == (4, 1, SIZE, SIZE) and masks.dtype == torch.bool
    assert not info["fallback"].any()
    assert (masks & disks).sum() == disks.sum()  # every object pixel, the hole included
    extra = (masks & ~disks).flatten(1).sum(1).float() / disks.flatten(1).sum(1)
    assert (extra < 0.5).all()  # a margin, not the whole image
    assert torch.allclose(info["background"], torch.full((4, 3), 220 / 255), atol=0.02)


def test_float_input_gives_the_same_masks():
    images, _ = _disk_scene(2)
    assert torch.equal(object_mask(images), object_mask(images.float() / 255))


def test_blank_image_falls_back_to_the_whole_image_and_says_so():
    images, _ = _disk_scene(2)
    images[1] = 128
    masks, info = object_mask(images, return_info=True)
    assert info["fallback"].tolist() == [False, True]
    assert masks[1].all() and not masks[0].all()


def test_the_mask_goes_straight_into_the_synthesizer():
    """As the README shows: ``synth(images, object_masks=object_mask(images))``."""
    images, disks = _disk_scene(4)
    masks = object_mask(images)
    assert isinstance(masks, torch.Tensor) and masks.shape == (4, 1, SIZE, SIZE) and masks.dtype == torch.bool
    config = SynthConfig(class_probs=(0, 0.5, 0.5))
    out = DefectSynthesizer(config)(images, object_masks=masks, generator=torch.Generator().manual_seed(0))
    col, row = (out.params["centre"] - 0.5).long().unbind(-1)
    assert masks[torch.arange(4), 0, row, col].all()  # every defect centred on the object


def _dark_textured_scene(batch: int, grain: float = 0.035) -> tuple[torch.Tensor, torch.Tensor]:
    """Grainy dark-grey squares (mean 0.11) on a near-black backdrop (0.07) with a small bright
    highlight: the colour distance singles out the highlight, the texture the square."""
    g = torch.Generator().manual_seed(1)
    squares = torch.zeros(batch, 1, SIZE, SIZE, dtype=torch.bool)
    images = 0.07 + 0.01 * torch.randn(batch, 1, SIZE, SIZE, generator=g)
    for i in range(batch):
        top, left = 20 + 6 * i, 30 - 4 * i
        squares[i, :, top:top + 60, left:left + 60] = True
        images[i, :, top + 5:top + 9, left + 10:left + 40] = 0.8  # the highlight
    rubber = 0.11 + grain * torch.randn(batch, 1, SIZE, SIZE, generator=g)
    images = torch.where(squares & (images < 0.5), rubber, images)
    return (images.clamp(0, 1).expand(-1, 3, -1, -1) * 255).round().to(torch.uint8), squares


def test_texture_finds_a_dark_grainy_object_that_colour_misses():
    images, squares = _dark_textured_scene(3)
    covered = {}
    for name, options in {"colour": dict(cues=("colour",)), "both": {}}.items():
        masks = object_mask(images, **options)
        covered[name] = ((masks & squares).flatten(1).sum(1) / squares.flatten(1).sum(1)).min()
        share = masks.flatten(1).float().mean(1)
        assert (share < 0.8).all(), (name, share)  # the backdrop is left out
    assert covered["colour"] < 0.5 and covered["both"] == 1.0, covered


def test_a_grainy_backdrop_is_not_taken_for_texture():
    """Texture counts only above what the border shows: a smooth disk on grainy cloth."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disk = ((xx - 64) ** 2 + (yy - 60) ** 2) < 30**2
    cloth = 0.55 + 0.04 * torch.randn(4, 1, SIZE, SIZE, generator=g)
    images = (torch.where(disk, 0.25, cloth).clamp(0, 1).expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    masks = object_mask(images)
    assert masks[:, 0, disk].all()
    assert masks.flatten(1).float().mean(1).max() < 0.6  # the disk and its margin are 0.27 of the image


def test_a_thin_tip_grows_back_after_the_speck_removal():
    """A 2-pixel needle sticking out of a disk (a screw's tip) survives the opening: it regrows
    ``regrow`` x 128 = 6 pixels out of the disk."""
    images, disks = _disk_scene(1)
    needle = torch.zeros_like(disks)
    needle[..., 69:71, 66:76] = True  # from inside the disk (radius 30 around x = 40) to x = 75
    images[:, :, needle[0, 0]] = 40
    tip = needle.clone()
    tip[..., :73] = False
    options = dict(cues=("colour",), speck=0.03, margin=0.0)  # an opening 3 pixels wide
    assert object_mask(images, **options)[tip].all()
    assert not object_mask(images, regrow=0.0, **options)[tip].any()


def test_same_operations_for_any_batch_size_and_no_host_sync(ops_by_batch, reads_back):
    def call(batch: int) -> None:
        object_mask(torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator()))

    counts = ops_by_batch(call, (2, 8))
    assert counts[0] == counts[1] and not reads_back(counts[0])


def test_unknown_cues_are_refused():
    with pytest.raises(ValueError, match="cues"):
        object_mask(torch.zeros(1, 3, SIZE, SIZE), cues=("shape",))


def test_bench_meets_the_targets_on_every_demo_category(tmp_path):
    """bench/object_mask.py on the demo categories: the new masks hold >= 99% of the defect pixels on
    average and >= 90% on every image, and leave a backdrop out; the old ones fail on demo_dark."""
    out = tmp_path / "object_mask.json"
    run = subprocess.run([sys.executable, str(BENCH), "--categories", "demo_object", "demo_moving", "demo_dark",
                          "demo_texture", "--image-size", "128", "--out", str(out), "--pictures", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())["results"]
    for category, row in results.items():
        new = row["new (colour+texture)"]
        assert new["coverage_mean"] >= 0.99 and new["coverage_min"] >= 0.90, (category, new)
        if category != "demo_texture":  # a texture is all product: no backdrop
            assert new["share_mean"] <= 0.8, (category, new)
    assert results["demo_dark"]["old (colour)"]["coverage_min"] < 0.5
    assert len(list(tmp_path.glob("demo_dark_*.png"))) == 2


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="B, C, H, W"):
        object_mask(torch.zeros(3, SIZE, SIZE))


def test_masks_at_picks_each_images_mask_or_the_shared_one():
    per_image = torch.rand(5, 1, 8, 8) > 0.5
    index = torch.tensor([4, 0, 4])
    assert torch.equal(masks_at(per_image, index), per_image[index])
    shared = per_image[:1]
    assert masks_at(shared, index) is shared  # the synthesizer broadcasts it


def test_real_bottle_masks_cover_the_ground_truth_defects(mvtec_root):
    """On every defective bottle test image the mask holds >= 95% of the defect's pixels."""
    size = 256
    images, truths = [], []
    for path in sorted((mvtec_root / "bottle" / "test").glob("*/*.png")):
        if path.parent.name == "good":
            continue
        truth_path = mvtec_root / "bottle" / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        images.append(np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)))
        truths.append(np.asarray(Image.open(truth_path).convert("L").resize((size, size), Image.NEAREST)) > 127)
    assert len(images) == 63
    masks, info = object_mask(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), return_info=True)
    truth = torch.from_numpy(np.stack(truths))[:, None]
    coverage = (masks & truth).flatten(1).sum(1) / truth.flatten(1).sum(1)
    assert coverage.min() >= 0.95, sorted(coverage.tolist())[:5]
    assert not info["fallback"].any()
    assert (masks.flatten(1).float().mean(1) < 0.9).all()  # not all ones: the backdrop is left out
