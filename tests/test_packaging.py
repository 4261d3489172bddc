"""`kernels/` installs as `ssad.kernels`, never as a top-level module named `kernels`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import ssad.kernels

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_maps_kernels_into_ssad():
    assert Path(ssad.kernels.__file__).resolve().parent == ROOT / "kernels"


def test_wheel_holds_only_the_ssad_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ssad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ssad/kernels/__init__.py" in names and "ssad/synth/__init__.py" in names
    top_level = {name.split("/")[0] for name in names} - {"ssad"}
    assert len(top_level) == 1 and top_level.pop().endswith(".dist-info")
