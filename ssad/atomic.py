"""Atomic file writes: readers see the old file or the new one, never half of one.

`atomic_write` for any writer; `write_json` and `save_png` for the run folder's JSON files and pictures.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["atomic_write", "write_json", "save_png"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file keeps ``path``'s suffix, so writers that infer a format from it still work.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a new file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, value: object) -> None:
    """Write ``value`` as indented JSON to ``path``, atomically (paths and the like as strings)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, default=str) + "\n"))


def save_png(picture: Image.Image, path: str | os.PathLike) -> None:
    """Write ``picture`` to ``path`` as PNG, atomically."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
