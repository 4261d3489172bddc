"""Decode image and mask files into fixed-size arrays, in a thread pool with a progress bar.

Images of any mode PIL reads (grayscale, RGB, RGBA, palette, 16-bit) become RGB uint8; 16-bit
values are scaled (65535 -> 255). Every image is resized to a square `size x size` (non-square
images are stretched, as anomalib's resize does) with PIL's antialiased bilinear filter; masks with
nearest neighbour after binarising (any non-zero pixel is defect).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ssad.data.errors import BadDataError

__all__ = ["parallel_map", "read_image", "read_mask"]

T = TypeVar("T")
R = TypeVar("R")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image: `(size, size, 3) uint8` RGB, and the file's own `(width, height)`.

    Raises `BadDataError` naming the file when it cannot be decoded (corrupt, truncated, not an image).
    """
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            original = image.size
            resized = _to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
    except Exception as err:  # PIL raises many types for bad files; all mean "unreadable"
        raise BadDataError(
            f"cannot read image {path}: {err}. Replace the file (re-download or re-export it) or remove it."
        ) from err
    return np.asarray(resized, dtype=np.uint8), original


def read_mask(path: Path, size: int, image_wh: tuple[int, int], image_path: Path) -> np.ndarray:
    """Decode one ground-truth mask: `(size, size) bool`, True where the pixel is defective.

    `image_wh` is the `(width, height)` of its image file; a mask of another size raises
    `BadDataError` naming both files, as does an unreadable mask.
    """
    try:
        with Image.open(path) as opened:
            mask = ImageOps.exif_transpose(opened)
            binary = np.asarray(mask.convert("L")) > 0
    except Exception as err:  # see read_image
        raise BadDataError(f"cannot read mask {path}: {err}. Replace or remove the mask file.") from err
    if mask.size != image_wh:
        raise BadDataError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but its image {image_path} is "
            f"{image_wh[0]}x{image_wh[1]}; a mask must match its image pixel for pixel. Re-export the mask."
        )
    resized = Image.fromarray(binary).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=bool)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], desc: str, progress: bool = True) -> list[R]:
    """`[fn(x) for x in items]` on a thread pool (PIL releases the GIL while decoding), with a tqdm bar
    (when ``progress``).

    The first exception is re-raised after cancelling the work not yet started.
    """
    workers = min(32, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(items), desc=desc, unit="file", disable=not progress
    ) as bar:
        futures = [pool.submit(fn, item) for item in items]
        results = []
        try:
            for future in futures:
                results.append(future.result())
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB uint8 version of `image`; 16- and 32-bit integer grayscale scaled to 8 bits."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode != "I" or values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    return image.convert("RGB")
