"""Fetch one category of the official MVTec AD archive: resumable download, sha256 check, safe extraction.

`download_category(root, "bottle")` leaves `<root>/bottle/` in MVTec AD layout and the verified
archive at `<root>/mvtec_anomaly_detection.tar.xz` (4.9 GB; reused for the next category, delete it
when done). Guarantees:

- an interrupted download leaves `<archive>.part`; the next call resumes it with an HTTP Range request;
- nothing is extracted before the sha256 matches; a download with the wrong sha256 is deleted, an
  archive the user placed there is never deleted;
- only the requested category is extracted, into a temporary folder renamed into place at the end, so
  a failure leaves no half-extracted category; members with absolute paths, `..`, links leading out of
  the category or special files abort the extraction.

The MVTec AD dataset is licensed CC BY-NC-SA 4.0 by MVTec Software GmbH.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from ssad.data.errors import BadDataError, ChecksumError, DataNotFoundError, DownloadError, UnsafeArchiveError

__all__ = ["MVTEC_SHA256", "MVTEC_URL", "download_category"]

# The URL and sha256 of anomalib's MVTec AD datamodule (open-edge-platform/anomalib,
# src/anomalib/data/datamodules/image/mvtecad.py, DOWNLOAD_INFO). Older anomalib releases used
# .../3830184030e49fe74747669442f0f282/download/420938113-1629952094/... for the same archive.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/"
    "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def download_category(
    root: str | os.PathLike[str], category: str, url: str = MVTEC_URL, sha256: str = MVTEC_SHA256
) -> Path:
    """Make `<root>/<category>` from the archive at `url` (a tar, any compression) and return it.

    Does nothing when the category folder already exists. Raises `DownloadError` (network failure,
    interrupted transfer: run again to resume), `ChecksumError`, `UnsafeArchiveError`, or
    `DataNotFoundError` when the archive holds no such category.
    """
    root = Path(root).expanduser()
    target = root / category
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / (PurePosixPath(urlsplit(url).path).name or "archive.tar.xz")
    if archive.is_file():
        actual = _sha256(archive)
        if actual != sha256.lower():
            raise ChecksumError(
                f"{archive} has sha256 {actual}, expected {sha256}. It was left untouched and nothing was "
                "extracted; delete or replace it, then run again to download a fresh copy."
            )
    else:
        _download(url, archive, sha256.lower())
    _extract_category(archive, category, target)
    return target


def _download(url: str, archive: Path, sha256: str) -> None:
    """Download `url` to `<archive>.part` (resuming it), verify it, then rename it to `archive`."""
    part = archive.with_name(archive.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and offset):  # 416 with a partial file: it is already complete
            raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}") from err
        response = None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot reach {url}: {getattr(err, 'reason', err)}; check the connection") from err
    if response is not None:
        with response:
            if offset and response.status != 206:  # the server ignored the Range header: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with part.open("ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=f"downloading {archive.name}"
            ) as bar:
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as err:
                    raise DownloadError(
                        f"download of {url} was interrupted ({type(err).__name__}: {err}) after "
                        f"{out.tell()} bytes; run again to resume from {part}"
                    ) from err
        received = part.stat().st_size
        if total is not None and received < total:
            raise DownloadError(
                f"download of {url} stopped at {received} of {total} bytes; run again to resume from {part}"
            )
    actual = _sha256(part)
    if actual != sha256:
        part.unlink()
        raise ChecksumError(
            f"the file downloaded from {url} has sha256 {actual}, expected {sha256}; it was deleted and "
            "nothing was extracted. Run again to retry; if this repeats, the file at the URL is not the "
            "expected archive (pass the url and sha256 of a trusted copy)."
        )
    os.replace(part, archive)


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, with a progress bar (hashing the MVTec AD archive takes a while)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"verifying {path.name}") as bar:
        while block := f.read(_CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _extract_category(archive: Path, category: str, target: Path) -> None:
    """Extract the members under `<category>/` of `archive` to `target` (via a temporary folder)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{category}.", suffix=".extracting", dir=target.parent))
    tops: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = _safe_parts(member.name, archive)
                tops.update(parts[:1])
                if parts[:1] != (category,):
                    continue
                if member.issym() or member.islnk():
                    _check_link(member, category, archive)
                tar.extract(member, staging, filter="data")
        if not (staging / category).is_dir():
            raise DataNotFoundError(
                f"{archive} holds no category {category!r}; its top-level entries are: {', '.join(sorted(tops))}"
            )
        os.rename(staging / category, target)
    except tarfile.FilterError as err:
        raise UnsafeArchiveError(f"{archive}: refusing to extract {err}; nothing was extracted") from err
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise BadDataError(f"{archive} is not a readable tar archive ({err}); delete it and download again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path components of archive member `name` (none for `./`), refusing absolute paths and `..`."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside the destination; nothing was extracted. "
            "The archive is not the official one or was tampered with."
        )
    return path.parts


def _check_link(member: tarfile.TarInfo, category: str, archive: Path) -> None:
    """Refuse a symbolic or hard link whose target lies outside `<category>/`."""
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
    else:
        target = posixpath.normpath(member.linkname)
    if member.linkname.startswith("/") or not target.startswith(category + "/"):
        raise UnsafeArchiveError(
            f"{archive}: link {member.name!r} -> {member.linkname!r} points outside {category}/; "
            "nothing was extracted. The archive is not the official one or was tampered with."
        )
