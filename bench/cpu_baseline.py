"""Per-image CPU baseline of the 3-class pretext task (the way users synthesise defects today).

Public CutPaste re-implementations augment one PIL image at a time inside a torch ``Dataset`` and
let ``DataLoader`` worker processes run it in parallel. This module does the same for the spec in
``DESIGN.md`` so that ``bench/synth_throughput.py`` can compare it with the batched engine
``ssad.synth.DefectSynthesizer``. It is a benchmark baseline, not part of the package.

Per sample: label Y uniform in {0, 1, 2}; colour jitter for all (brightness, contrast, hue, each
at most 0.1); Y=1 replaces a convex polygon inside a rectangle of area ratio [0.05, 0.1]; Y=2
pastes a thin rectangle of area ratio [0.005, 0.01], rotated by [-45, 45] degrees. The fill is a
cut of another region of the same image (p=0.7), that region's average colour (p=0.15) or a flat
random colour (p=0.15). The defect lies entirely inside the image.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, RandomSampler

JITTER = 0.1  # max relative change of brightness and contrast, max hue shift (fraction of a turn)
POLYGON_AREA, POLYGON_ASPECTS = (0.05, 0.1), ((0.3, 1.0), (1.0, 3.3))
SCAR_AREA, SCAR_ASPECTS = (0.005, 0.01), ((0.05, 0.5), (2.5, 3.3))
SCAR_MAX_ANGLE = 45.0
FILL_PROBS = {"cut": 0.7, "mean": 0.15, "random": 0.15}


class PretextDataset(Dataset):
    """Applies the pretext augmentation to one image per ``__getitem__``.

    Args:
        images: decoded RGB PIL images, all of the same size (decoding is not part of the timing).
        dtype: ``torch.float32`` (values in [0, 1]) or ``torch.uint8`` (values in [0, 255]).
        seed: seed of the Python RNG that draws every random choice; ``worker_init`` reseeds it
            per DataLoader worker.
    """

    def __init__(self, images: list[Image.Image], dtype: torch.dtype = torch.float32, seed: int = 0):
        if not images:
            raise ValueError("PretextDataset needs at least one image")
        if dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {dtype}")
        if len({im.size for im in images}) != 1 or any(im.mode != "RGB" for im in images):
            raise ValueError("all images must be RGB and of the same size")
        self.images, self.dtype, self.rng = images, dtype, random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(image (3,H,W) float32 in [0,1] or uint8, label () int64, mask (1,H,W) bool)``."""
        image = self._jitter(self.images[i])
        label = self.rng.randrange(3)
        mask = Image.new("L", image.size, 0)
        if label == 1:
            self._paste_polygon(image, mask)
        elif label == 2:
            self._paste_scar(image, mask)
        if self.dtype == torch.uint8:
            tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()
        else:
            tensor = TF.to_tensor(image)
        mask_tensor = torch.from_numpy(np.asarray(mask) > 0).unsqueeze(0)
        return tensor, torch.tensor(label, dtype=torch.int64), mask_tensor

    def _jitter(self, image: Image.Image) -> Image.Image:
        """Brightness, contrast and hue, each by a random factor; returns a new image."""
        image = TF.adjust_brightness(image, self.rng.uniform(1 - JITTER, 1 + JITTER))
        image = TF.adjust_contrast(image, self.rng.uniform(1 - JITTER, 1 + JITTER))
        return TF.adjust_hue(image, self.rng.uniform(-JITTER, JITTER))

    def _rect_size(self, image_size: tuple[int, int], area_range, aspect_ranges) -> tuple[int, int]:
        """Width and height (>= 1 px) of a rectangle with the given area ratio and aspect w/h.

        The aspect is uniform over the union of the (half-open) intervals in ``aspect_ranges``.
        """
        area = self.rng.uniform(*area_range) * image_size[0] * image_size[1]
        lengths = [hi - lo for lo, hi in aspect_ranges]
        lo, hi = self.rng.choices(aspect_ranges, weights=lengths)[0]
        aspect = self.rng.uniform(lo, hi)
        w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        return max(1, min(round(w), image_size[0])), max(1, min(round(h), image_size[1]))

    def _fill(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """An RGB patch of ``size``: a cut of a random region of ``image``, its mean, or a colour."""
        x = self.rng.randint(0, image.width - size[0])
        y = self.rng.randint(0, image.height - size[1])
        kind = self.rng.choices(list(FILL_PROBS), weights=list(FILL_PROBS.values()))[0]
        if kind == "cut":
            return image.crop((x, y, x + size[0], y + size[1]))
        if kind == "mean":
            region = np.asarray(image.crop((x, y, x + size[0], y + size[1])), dtype=np.float32)
            colour = tuple(int(c) for c in region.reshape(-1, 3).mean(axis=0).round())
        else:
            colour = tuple(self.rng.randrange(256) for _ in range(3))
        return Image.new("RGB", size, colour)

    def _paste(self, image: Image.Image, mask: Image.Image, patch: Image.Image, shape: Image.Image):
        """Pastes ``patch`` where ``shape`` (L, same size) is non-zero, at a random place that keeps
        it inside the image; marks the same pixels in ``mask``. Both images change in place."""
        x = self.rng.randint(0, image.width - shape.width)
        y = self.rng.randint(0, image.height - shape.height)
        image.paste(patch, (x, y), shape)
        mask.paste(255, (x, y, x + shape.width, y + shape.height), shape)

    def _paste_polygon(self, image: Image.Image, mask: Image.Image) -> None:
        """Y=1: a convex polygon with 1 or 2 vertices on each side of a random rectangle."""
        w, h = self._rect_size(image.size, POLYGON_AREA, POLYGON_ASPECTS)
        # Walk the rectangle's sides clockwise; points on the boundary of a convex shape, taken in
        # boundary order, always form a convex polygon.
        sides = [((0, 0), (w, 0)), ((w, 0), (w, h)), ((w, h), (0, h)), ((0, h), (0, 0))]
        vertices = []
        for (x0, y0), (x1, y1) in sides:
            for t in sorted(self.rng.random() for _ in range(self.rng.randint(1, 2))):
                vertices.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
        shape = Image.new("L", (w, h), 0)
        ImageDraw.Draw(shape).polygon(vertices, fill=255)
        self._paste(image, mask, self._fill(image, (w, h)), shape)

    def _paste_scar(self, image: Image.Image, mask: Image.Image) -> None:
        """Y=2: a thin filled rectangle rotated by a random angle (nearest neighbour)."""
        size = self._rect_size(image.size, SCAR_AREA, SCAR_ASPECTS)
        angle = self.rng.uniform(-SCAR_MAX_ANGLE, SCAR_MAX_ANGLE)
        patch = self._fill(image, size).rotate(angle, Image.Resampling.NEAREST, expand=True)
        shape = Image.new("L", size, 255).rotate(angle, Image.Resampling.NEAREST, expand=True)
        if shape.width > image.width or shape.height > image.height:  # only for tiny images
            box = (0, 0, min(shape.width, image.width), min(shape.height, image.height))
            patch, shape = patch.crop(box), shape.crop(box)
        self._paste(image, mask, patch, shape)


def worker_init(worker_id: int) -> None:
    """Gives each DataLoader worker its own RNG stream, derived from the loader's seed."""
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = random.Random(info.seed)


def make_loader(
    images: list[Image.Image],
    batch_size: int = 64,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    samples_per_epoch: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``PretextDataset`` yielding ``(images (B,3,H,W), labels (B,), masks (B,1,H,W))``.

    Sampling is random with replacement; ``samples_per_epoch`` (default ``len(images)``) sets the
    epoch length, so a benchmark can run long epochs without restarting the worker pipeline.
    Workers persist across epochs. With the same ``seed`` and ``num_workers`` the batches repeat.
    """
    dataset = PretextDataset(images, dtype=dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=samples_per_epoch or len(images), generator=generator
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=worker_init if num_workers > 0 else None,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
