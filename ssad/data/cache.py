"""On-disk cache of a category's decoded tensors, so a second run does not decode again.

One file per (category folder, image size): `<cache_dir>/<category>-<S>px-<hash of the folder>.pt`,
a `torch.save`d dict `{"key": key, "tensors": {name: tensor}}`. The key lists every source file with
its size and mtime, plus the image size and the cache format. A cache is used only when its key
equals the current one and every tensor has the expected shape and dtype; a stale, unreadable or
truncated file is rebuilt with a warning, never trusted. Writes are atomic (`ssad.atomic`: a
temporary file in the same folder, then `os.replace`), so an interrupted run leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ssad.atomic import atomic_write

__all__ = ["CACHE_DIR_ENV", "CacheKey", "cache_key", "cache_path", "default_cache_dir", "load_cache", "save_cache"]

CACHE_DIR_ENV = "SSAD_CACHE_DIR"
_CACHE_FORMAT = 1  # bump when what is cached, or how it is decoded, changes

CacheKey = dict[str, Any]
"""`{"format": int, "image_size": int, "files": [[relative path, size in bytes, mtime in ns], ...]}`."""

ExpectedTensors = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def default_cache_dir() -> Path:
    """`$SSAD_CACHE_DIR` if set, else `~/.cache/ssad`."""
    value = os.environ.get(CACHE_DIR_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "ssad"


def cache_key(root: Path, files: Iterable[Path], image_size: int) -> CacheKey:
    """The key of a cache built from `files` (paths under `root`) at `image_size`."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return {"format": _CACHE_FORMAT, "image_size": image_size, "files": entries}


def cache_path(cache_dir: Path, category_dir: Path, image_size: int) -> Path:
    """The cache file of `category_dir` (any spelling of the same folder maps to the same file)."""
    digest = hashlib.sha256(str(category_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"{category_dir.name}-{image_size}px-{digest}.pt"


def load_cache(
    path: Path, key: CacheKey, expected: ExpectedTensors, device: torch.device
) -> dict[str, torch.Tensor] | None:
    """The cached tensors on `device`, or None (with a warning unless the file is simply absent).

    `expected` maps each tensor name to its `(shape, dtype)`; any difference marks the file corrupt.
    """
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location=device, weights_only=True)
        tensors = stored["tensors"]
        stored_key = stored["key"]
        valid = set(tensors) == set(expected) and all(
            isinstance(t := tensors[name], torch.Tensor) and tuple(t.shape) == shape and t.dtype == dtype
            for name, (shape, dtype) in expected.items()
        )
    except Exception as err:  # truncated zip, unpickling error, wrong structure: all mean corrupt
        warnings.warn(f"cache {path} is corrupt ({type(err).__name__}: {err}); decoding again", stacklevel=3)
        return None
    if stored_key != key:
        warnings.warn(f"cache {path} is stale ({_describe_change(stored_key, key)}); decoding again", stacklevel=3)
        return None
    if not valid:
        warnings.warn(f"cache {path} is corrupt (unexpected tensors); decoding again", stacklevel=3)
        return None
    return tensors


def save_cache(path: Path, key: CacheKey, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write the cache atomically. A folder that cannot be written costs a warning, not the run."""
    payload = {"key": key, "tensors": {name: t.cpu() for name, t in tensors.items()}}
    try:
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except OSError as err:
        warnings.warn(f"cannot write cache {path} ({err}); the next run decodes again. "
                      f"Set {CACHE_DIR_ENV} to a writable folder to cache.", stacklevel=3)


def _describe_change(old: Any, new: CacheKey) -> str:
    """A short account of how the cached key differs from the current one."""
    if not isinstance(old, dict) or old.get("format") != new["format"]:
        return "written by another version of ssad"
    differing = {tuple(f) for f in old.get("files", [])} ^ {tuple(f) for f in new["files"]}
    changed = len({entry[0] for entry in differing})
    return f"{changed} file(s) added, removed or modified" if changed else "built with other settings"
