"""Datasets in MVTec AD layout, read once and kept on the device.

    root = resolve_data_root(args.data_root)               # --data-root > $SSAD_DATA_ROOT > ./datasets/MVTecAD
    data = load_category(root, "bottle", image_size=256, device="cuda")
    sampler = BatchSampler(len(data.train), 96, torch.Generator("cuda").manual_seed(0))
    images = data.train[next(sampler)]                    # (96, 3, 256, 256) uint8 on the GPU

Without the dataset: `download_category(root, "bottle")` fetches the official archive, or
`make_demo_dataset(root)` writes a procedural one (the categories of `DEMO_CATEGORIES`).

A category's kind (texture, still or moving object) comes from its `category.json`, else the
built-in MVTec AD table, else it is estimated from its training images (`estimate_kind`; the rule is
in `ssad.data.categories`). `data.kind_source` and `data.kind_reason` say which, and why.
"""

from ssad.data.cache import CACHE_DIR_ENV, default_cache_dir
from ssad.data.categories import (
    CATEGORY_FILE,
    MVTEC_CATEGORIES,
    CategoryInfo,
    CategoryKind,
    KindEstimate,
    KindSource,
    category_info,
)
from ssad.data.demo import DEMO_CATEGORIES, make_demo_dataset
from ssad.data.download import MVTEC_SHA256, MVTEC_URL, download_category
from ssad.data.errors import (
    BadDataError,
    ChecksumError,
    DataError,
    DataNotFoundError,
    DownloadError,
    UnsafeArchiveError,
)
from ssad.data.layout import DATA_ROOT_ENV, DEFAULT_DATA_ROOT, CategoryFiles, resolve_data_root, scan_category
from ssad.data.loader import CategoryData, load_category
from ssad.data.objects import estimate_kind
from ssad.data.sampler import BatchSampler
from ssad.data.sources import SourceKind, procedural_sources

__all__ = [
    "BadDataError",
    "BatchSampler",
    "CACHE_DIR_ENV",
    "CATEGORY_FILE",
    "CategoryData",
    "CategoryFiles",
    "CategoryInfo",
    "CategoryKind",
    "ChecksumError",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "DEMO_CATEGORIES",
    "DataError",
    "DataNotFoundError",
    "DownloadError",
    "KindEstimate",
    "KindSource",
    "MVTEC_CATEGORIES",
    "MVTEC_SHA256",
    "MVTEC_URL",
    "SourceKind",
    "UnsafeArchiveError",
    "category_info",
    "default_cache_dir",
    "download_category",
    "estimate_kind",
    "load_category",
    "make_demo_dataset",
    "procedural_sources",
    "resolve_data_root",
    "scan_category",
]
