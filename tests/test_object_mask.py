"""`object_mask`: foreground estimation on synthetic scenes and on the real bottle images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssad.synth import object_mask

SIZE = 128


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
    masks, info = object_mask(images)
    assert masks.shape == (4, 1, SIZE, SIZE) and masks.dtype == torch.bool
    assert not info["fallback"].any()
    assert (masks & disks).sum() == disks.sum()  # every object pixel, the hole included
    extra = (masks & ~disks).flatten(1).sum(1).float() / disks.flatten(1).sum(1)
    assert (extra < 0.5).all()  # a margin, not the whole image
    assert torch.allclose(info["background"], torch.full((4, 3), 220 / 255), atol=0.02)


def test_float_input_gives_the_same_masks():
    images, _ = _disk_scene(2)
    assert torch.equal(object_mask(images)[0], object_mask(images.float() / 255)[0])


def test_blank_image_falls_back_to_the_whole_image_and_says_so():
    images, _ = _disk_scene(2)
    images[1] = 128
    masks, info = object_mask(images)
    assert info["fallback"].tolist() == [False, True]
    assert masks[1].all() and not masks[0].all()


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="B, C, H, W"):
        object_mask(torch.zeros(3, SIZE, SIZE))


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
    masks, info = object_mask(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
    truth = torch.from_numpy(np.stack(truths))[:, None]
    coverage = (masks & truth).flatten(1).sum(1) / truth.flatten(1).sum(1)
    assert coverage.min() >= 0.95, sorted(coverage.tolist())[:5]
    assert not info["fallback"].any()
    assert (masks.flatten(1).float().mean(1) < 0.9).all()  # not all ones: the backdrop is left out
