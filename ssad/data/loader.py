"""`load_category`: a category read once, decoded, cached on disk and kept on the device."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssad.data.cache import cache_key, cache_path, default_cache_dir, load_cache, save_cache
from ssad.data.categories import CATEGORY_FILE, CategoryInfo, CategoryKind, KindEstimate, KindSource, describe_kind
from ssad.data.decode import parallel_map, read_image, read_mask
from ssad.data.layout import GOOD, CategoryFiles, scan_category
from ssad.data.objects import category_object_masks, kind_and_object_masks
from ssad.data.sources import (
    DEFAULT_MAX_SOURCES,
    SourceKind,
    is_grayscale,
    procedural_sources,
    source_files,
    to_grayscale,
)
from ssad.synth.object_mask import masks_at

__all__ = ["CategoryData", "load_category"]


@dataclass(frozen=True)
class CategoryData:
    """One category, decoded and resized to `S x S`, every tensor on the same device.

    Attributes:
        category: the category's folder name.
        kind: "texture" or "object"; `moves` True for objects whose position/rotation varies.
        kind_source: who decided the kind: "category.json", "mvtec_table" or "estimated" (from the
            training images, `ssad.data.categories` states the rule).
        kind_reason: one sentence for the user: who decided the kind and, when estimated, what was
            measured; it also says when the source images were made grayscale.
        object_mask_share: the share of the image, in [0, 1], that `object_masks` cover (mean over
            the images for moving objects; 1.0 for textures and for a fallback to all ones).
        train: `(N, 3, S, S) uint8` normal training images.
        object_masks: `(N, 1, S, S) bool` for moving objects, else `(1, 1, S, S) bool` (all ones for
            textures): where synthetic defects may be centred.
        test: `(M, 3, S, S) uint8` test images; `test_labels` `(M,) int64`, 0 good, 1 defective;
            `test_defect_types` their folder names ("good", "broken_large", ...);
            `test_masks` `(M, 1, S, S) bool` ground truth (empty for good images and for defective
            images without a mask file); `test_mask_known` `(M,) bool`: True where `test_masks` is
            the ground truth (good images, defective images with a mask file), False for defective
            images without a mask file (pixel metrics leave them out);
            `test_paths` their files. M may be 0 for a category without a test split.
        source_images: `(K, 3, S, S) uint8` images that texture defects are cut from, None for
            objects; `source_kind` says where they came from ("other_categories" or "procedural").
        sources_greyed: True when the source images were made grayscale (luma) because every
            training image of the texture is grayscale (R = G = B); False otherwise.
        from_cache: True when the tensors came from the disk cache rather than from decoding.
        load_seconds: wall time of `load_category`, from scanning to tensors on the device.
    """

    category: str
    kind: CategoryKind
    moves: bool
    kind_source: KindSource
    kind_reason: str
    object_mask_share: float
    train: torch.Tensor
    object_masks: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    test_defect_types: list[str]
    test_masks: torch.Tensor
    test_mask_known: torch.Tensor
    test_paths: list[Path]
    train_paths: list[Path]
    source_images: torch.Tensor | None
    source_kind: SourceKind | None
    sources_greyed: bool
    from_cache: bool
    load_seconds: float

    @property
    def image_size(self) -> int:
        """S, the side of every image and mask."""
        return self.train.shape[-1]

    @property
    def device(self) -> torch.device:
        """The device that holds every tensor."""
        return self.train.device

    def object_masks_at(self, index: torch.Tensor) -> torch.Tensor:
        """The object masks of the training images at ``index`` (B,) int64, for the synthesizer:
        (B, 1, S, S) bool for a moving object, else the shared (1, 1, S, S) mask (`masks_at`)."""
        return masks_at(self.object_masks, index)


def load_category(
    root: str | os.PathLike[str],
    category: str,
    image_size: int = 256,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    max_sources: int = DEFAULT_MAX_SOURCES,
    progress: bool = True,
    kind_from: CategoryData | None = None,
) -> CategoryData:
    """Read `<root>/<category>` (MVTec AD layout) into tensors on `device`.

    The first call decodes every file on a thread pool and writes `cache_dir` (default
    `$SSAD_CACHE_DIR` or `~/.cache/ssad`); later calls read that cache as long as no file changed.
    The kind comes from `category.json`, else the MVTec AD table, else it is estimated from the
    decoded training images (`ssad.data.categories`; a warning then says what was measured and read).
    For textures, up to `max_sources` training images of the other categories under `root` become
    `source_images`, or procedural images (with a warning) when `root` holds no other category; when
    every training image is grayscale (R = G = B), the source images are made grayscale (luma).
    The other categories' images are decoded (and cached) with the category for textures and for
    categories whose kind is estimated, since the estimate needs the decoded images first.
    `progress` shows the decoding's progress bars. `kind_from`: the same category loaded at another
    size, whose kind (and the sentence that says why) is kept instead of being estimated again, so
    that every size of one run reads the category alike.

    Raises `DataNotFoundError` (missing root, category or training images) and `BadDataError`
    (unreadable image or mask, mask size differing from its image, bad `category.json`).
    """
    start = time.perf_counter()
    if image_size < 1 or max_sources < 1:
        raise ValueError(f"image_size and max_sources must be positive, got {image_size} and {max_sources}")
    device = torch.device(device)
    files = scan_category(root, category)
    may_be_texture = files.info.kind == "texture" or files.info.source == "estimated"
    sources = source_files(files.root, category, max_sources) if may_be_texture else []

    expected = {
        "train": ((len(files.train_paths), 3, image_size, image_size), torch.uint8),
        "test": ((len(files.test_paths), 3, image_size, image_size), torch.uint8),
        "test_masks": ((len(files.test_paths), 1, image_size, image_size), torch.bool),
        "sources": ((len(sources), 3, image_size, image_size), torch.uint8),
    }
    key = cache_key(files.root, _all_files(files, sources), image_size)
    path = cache_path(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
                      files.directory, image_size)
    tensors = load_cache(path, key, expected, device)
    from_cache = tensors is not None
    if tensors is None:
        decoded = _decode(files, sources, image_size, progress)
        save_cache(path, key, decoded)
        tensors = {name: t.to(device) for name, t in decoded.items()}

    info, object_masks, reason, estimate = _kind_and_masks(tensors["train"], files.info, kind_from)
    is_texture = info.kind == "texture"

    source_images: torch.Tensor | None = None
    source_kind: SourceKind | None = None
    sources_greyed = False
    if is_texture and sources:
        source_images, source_kind = tensors["sources"], "other_categories"
    elif is_texture:
        warnings.warn(
            f"no other category under {files.root.absolute()} to cut texture defects from; using "
            f"{max_sources} procedural source images instead (smooth noise, blobs, stripes). "
            "Put other MVTec AD categories next to it for fills like the paper's.",
            stacklevel=2,
        )
        source_images = procedural_sources(max_sources, image_size).to(device)
        source_kind = "procedural"
    if source_images is not None and is_grayscale(tensors["train"]):
        source_images, sources_greyed = to_grayscale(source_images), True
        if kind_from is None:  # else the sentence says it already
            reason += (" Its training images are all grayscale (R = G = B), so the source images that defects "
                       "are cut from are made grayscale too.")
    if estimate is not None:
        warnings.warn(reason, stacklevel=2)

    labels = [int(t != GOOD) for t in files.test_defect_types]
    known = [t == GOOD or m is not None for t, m in zip(files.test_defect_types, files.test_mask_paths)]
    return CategoryData(
        category=category,
        kind=info.kind,
        moves=info.moves,
        kind_source=info.source,
        kind_reason=reason,
        object_mask_share=float(object_masks.float().mean()),
        train=tensors["train"],
        object_masks=object_masks,
        test=tensors["test"],
        test_labels=torch.tensor(labels, dtype=torch.int64, device=device),
        test_defect_types=list(files.test_defect_types),
        test_masks=tensors["test_masks"],
        test_mask_known=torch.tensor(known, dtype=torch.bool, device=device),
        test_paths=list(files.test_paths),
        train_paths=list(files.train_paths),
        source_images=source_images,
        source_kind=source_kind,
        sources_greyed=sources_greyed,
        from_cache=from_cache,
        load_seconds=time.perf_counter() - start,
    )


def _kind_and_masks(
    train: torch.Tensor, stated: CategoryInfo, kind_from: CategoryData | None
) -> tuple[CategoryInfo, torch.Tensor, str, KindEstimate | None]:
    """The kind of the category, its object masks, the sentence that says who decided it, and the
    estimate where it was made here: kept from ``kind_from`` (the category at another size), else
    ``stated`` (category.json, the MVTec AD table) or estimated (`kind_and_object_masks`)."""
    if kind_from is not None:
        info = CategoryInfo(stated.name, kind_from.kind, kind_from.moves, source=kind_from.kind_source)
        return info, category_object_masks(train, info), kind_from.kind_reason, None
    info, masks, estimate = kind_and_object_masks(train, stated)
    if estimate is not None:
        reason = estimate.reason
    elif info.source == "mvtec_table":
        reason = f"{info.name} is a built-in MVTec AD category: {describe_kind(info)}."
    else:
        reason = f"{info.name}/{CATEGORY_FILE} says: {describe_kind(info)}."
    return info, masks, reason, estimate


def _all_files(files: CategoryFiles, sources: list[Path]) -> list[Path]:
    """Every file whose content ends up in the cache, in a fixed order."""
    masks = [m for m in files.test_mask_paths if m is not None]
    return [*files.train_paths, *files.test_paths, *masks, *sources]


def _decode(files: CategoryFiles, sources: list[Path], size: int, progress: bool) -> dict[str, torch.Tensor]:
    """Decode and resize every file of the category (CPU tensors, named as in the cache)."""
    image_paths = [*files.train_paths, *files.test_paths, *sources]
    decoded = parallel_map(lambda p: read_image(p, size), image_paths, f"{files.info.name}: images", progress)
    images = torch.from_numpy(np.stack([array for array, _ in decoded])).permute(0, 3, 1, 2).contiguous()
    n_train, n_test = len(files.train_paths), len(files.test_paths)

    test_wh = [wh for _, wh in decoded[n_train:n_train + n_test]]
    jobs = [(i, m, test_wh[i], files.test_paths[i]) for i, m in enumerate(files.test_mask_paths) if m is not None]
    masks = parallel_map(lambda job: read_mask(job[1], size, job[2], job[3]), jobs, f"{files.info.name}: masks",
                         progress)
    test_masks = np.zeros((n_test, 1, size, size), dtype=bool)
    for (i, *_), mask in zip(jobs, masks):
        test_masks[i, 0] = mask
    return {
        "train": images[:n_train],
        "test": images[n_train:n_train + n_test],
        "test_masks": torch.from_numpy(test_masks),
        "sources": images[n_train + n_test:],
    }
