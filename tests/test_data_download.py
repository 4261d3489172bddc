"""download_category against a local HTTP server with Range support, serving tar.xz archives made here."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssad.data import ChecksumError, DownloadError, UnsafeArchiveError, download_category, load_category


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves `payload` at any path; honours `Range: bytes=N-`; can cut the next response short."""

    payload: bytes = b""
    cut_after: int | None = None  # send only this many body bytes once, then close
    ranges: list[str | None]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def do_GET(self) -> None:
        data = self.server.payload
        requested = self.headers.get("Range")
        self.server.ranges.append(requested)
        start = int(requested.removeprefix("bytes=").split("-")[0]) if requested else 0
        if start >= len(data) and requested:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[RangeServer]:
    httpd = RangeServer(("127.0.0.1", 0), RangeHandler)
    httpd.ranges = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(server: RangeServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/files/mvtec_anomaly_detection.tar.xz"


def png_bytes(value: int, mode: str = "RGB") -> bytes:
    """A 16 px PNG: a `value` square on a light backdrop (RGB), or all `value` (mode "L", a mask)."""
    if mode == "RGB":
        array = np.full((16, 16, 3), 220, dtype=np.uint8)
        array[4:12, 4:12] = value
    else:
        array = np.full((16, 16), value, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_archive(extra: dict[str, bytes] | None = None, links: dict[str, str] | None = None) -> bytes:
    """A tar.xz shaped like MVTec AD's (category folders at the top) with `bottle` and `cable`."""
    members = {
        "bottle/train/good/000.png": png_bytes(120),
        "bottle/train/good/001.png": png_bytes(130),
        "bottle/test/good/000.png": png_bytes(125),
        "bottle/test/broken/000.png": png_bytes(30),
        "bottle/ground_truth/broken/000_mask.png": png_bytes(255, "L"),
        "cable/train/good/000.png": png_bytes(60),
        "license.txt": b"CC BY-NC-SA 4.0\n",
        **(extra or {}),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[str]:
    """Everything in `root` but what the test put there itself."""
    return sorted(p.name for p in root.iterdir() if p.name != "mine")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root that already holds something of the user's."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    return tmp_path


def test_download_extracts_only_the_requested_category(server: RangeServer, root: Path) -> None:
    server.payload = make_archive()
    target = download_category(root, "bottle", url=url_of(server), sha256=sha256(server.payload))
    assert target == root / "bottle"
    assert leftovers(root) == ["bottle", "mvtec_anomaly_detection.tar.xz"]  # no cable, no .part, no staging
    assert (root / "mine" / "notes.txt").read_text() == "keep me"
    data = load_category(root, "bottle", image_size=16, cache_dir=root / ".cache")
    assert data.train.shape == (2, 3, 16, 16) and data.test_labels.tolist() == [1, 0]
    assert bool(data.test_masks[0].all())

    assert download_category(root, "bottle", url=url_of(server), sha256=sha256(server.payload)) == target
    assert len(server.ranges) == 1  # already there: no second request
    download_category(root, "cable", url=url_of(server), sha256=sha256(server.payload))
    assert len(server.ranges) == 1 and (root / "cable" / "train" / "good" / "000.png").is_file()  # archive reused


def test_bad_checksum_deletes_the_download_and_extracts_nothing(server: RangeServer, root: Path) -> None:
    server.payload = make_archive()
    with pytest.raises(ChecksumError, match=r"sha256 .* expected 0+; it was deleted and nothing was extracted"):
        download_category(root, "bottle", url=url_of(server), sha256="0" * 64)
    assert leftovers(root) == []
    assert (root / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_checksum_of_the_users_archive_leaves_it_alone(server: RangeServer, root: Path) -> None:
    archive = root / "mvtec_anomaly_detection.tar.xz"
    archive.write_bytes(b"something the user downloaded")
    with pytest.raises(ChecksumError, match="left untouched"):
        download_category(root, "bottle", url=url_of(server), sha256=sha256(make_archive()))
    assert archive.read_bytes() == b"something the user downloaded"
    assert leftovers(root) == ["mvtec_anomaly_detection.tar.xz"] and server.ranges == []


def test_interrupted_download_resumes_with_a_range_request(server: RangeServer, root: Path) -> None:
    server.payload = make_archive()
    half = len(server.payload) // 2
    server.cut_after = half
    with pytest.raises(DownloadError, match="run again to resume"):
        download_category(root, "bottle", url=url_of(server), sha256=sha256(server.payload))
    part = root / "mvtec_anomaly_detection.tar.xz.part"
    assert part.stat().st_size == half and leftovers(root) == [part.name]

    download_category(root, "bottle", url=url_of(server), sha256=sha256(server.payload))
    assert server.ranges == [None, f"bytes={half}-"]
    assert (root / "mvtec_anomaly_detection.tar.xz").read_bytes() == server.payload
    assert leftovers(root) == ["bottle", "mvtec_anomaly_detection.tar.xz"]


@pytest.mark.parametrize(
    "extra, links",
    [
        ({"bottle/../../evil.txt": b"escaped"}, None),
        ({"../evil.txt": b"escaped"}, None),
        ({"/tmp/evil.txt": b"escaped"}, None),
        (None, {"bottle/train/good/002.png": "../../../evil.txt"}),
    ],
    ids=["dotdot-in-category", "dotdot-at-top", "absolute", "symlink-out"],
)
def test_unsafe_members_are_refused_and_nothing_is_extracted(
    server: RangeServer, root: Path, extra: dict[str, bytes] | None, links: dict[str, str] | None
) -> None:
    server.payload = make_archive(extra, links)
    with pytest.raises(UnsafeArchiveError, match="nothing was extracted"):
        download_category(root, "bottle", url=url_of(server), sha256=sha256(server.payload))
    assert leftovers(root) == ["mvtec_anomaly_detection.tar.xz"]  # verified archive kept, no bottle, no staging
    assert not (root.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_unreachable_server_is_a_download_error(root: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach"):
        download_category(root, "bottle", url=f"http://127.0.0.1:{port}/a.tar.xz", sha256="0" * 64)
    assert leftovers(root) == []
