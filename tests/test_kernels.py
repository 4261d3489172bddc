"""The fused Triton kernel (`ssad.kernels`) computes the same batches as the torch reference.

Without a GPU the kernel runs under Triton's interpreter, which must be switched on
(``TRITON_INTERPRET=1``) before the kernels are defined, i.e. before `ssad.kernels.fused` is first
imported. So the interpreted runs happen in one subprocess (this file run as a script), which
saves its outputs; the tests here compute the reference on the same inputs and compare. The
parent process never needs the interpreter and other test files may import Triton freely.

Equality (`assert_same_batch`). Bit-identical where it holds by construction: the masks (the
same elementwise operations in the same order, IEEE division, no fused multiply-add) and the
flat-colour fills (a copied constant); cut-paste picks the same source pixel by the same argument.
Everywhere else the values are sums (the colour map's bias plus C products; an average colour's
sum over the defect), whose rounding depends on the order of summation and on FMA contraction.
Those differ between Triton's interpreter (numpy), torch's CPU kernels (scalar, AVX2 and AVX-512
builds of the same op differ) and a GPU, so the images are compared within rounding:

- float: |difference| <= (8 + n) * eps of the work dtype, n the most pixels an average sums (0
  when no sample averages), plus one ulp of 1.0 of the output dtype where it is narrower than the
  work dtype (float16 rounds float32 results). Values lie in [0, 1], so ulps of 1.0 bound them.
- uint8: at most one level, on at most 0.1% of the values. A level moves only where the float
  value lands within a few ulp (about 1e-5 at 255) of a rounding boundary, which for spread-out
  values happens about once in 10^4.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from ssad.kernels import available
from ssad.synth import FILL_MODES, SynthConfig, apply, sample_params
from ssad.synth import functional
from ssad.synth.raster import compositing_box

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (the fused kernels need it)"
)


@dataclass(frozen=True)
class Case:
    """One comparison: a batch of ``batch`` images (channels, height, width) of ``dtype``."""

    channels: int = 3
    dtype: torch.dtype = torch.uint8
    fill_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    height: int = 64
    width: int = 64
    batch: int = 12
    separate_sources: bool = False
    #: Apply the params with a config of smaller defects than they were drawn with, so that the
    #: compositing box (sized by the config) clips them, as the reference does.
    replay_smaller_defects: bool = False

    def inputs(self, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None, dict, SynthConfig]:
        """Images, source images (or None), params and config; the same in every process."""
        g = torch.Generator().manual_seed(self.channels * 1000 + self.height + self.width)
        shape = (self.batch, self.channels, self.height, self.width)
        images = _to_dtype(torch.randint(0, 256, shape, generator=g, dtype=torch.uint8), self.dtype)
        sources = _to_dtype(torch.randint(0, 256, shape, generator=g, dtype=torch.uint8), self.dtype)
        config = SynthConfig(class_probs=(0.2, 0.4, 0.4), fill_probs=self.fill_probs, backend="fused")
        params = sample_params(shape, config, generator=torch.Generator().manual_seed(7))
        params = {k: v.to(device) for k, v in params.items()}
        if self.replay_smaller_defects:
            config = replace(config, polygon_area=(0.01, 0.02), scar_area=(0.005, 0.006), scar_aspect=((0.3, 0.5),))
        return images.to(device), sources.to(device) if self.separate_sources else None, params, config


def _to_dtype(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images if dtype == torch.uint8 else (images.double() / 255).to(dtype)


ONE_MODE = {"cut": (1.0, 0.0, 0.0), "average": (0.0, 1.0, 0.0), "flat": (0.0, 0.0, 1.0)}
CASES = {
    f"c{c}-{str(dtype).removeprefix('torch.')}-{mode}": Case(channels=c, dtype=dtype, fill_probs=probs)
    for c in (1, 3)
    for dtype in (torch.uint8, torch.float32)
    for mode, probs in ONE_MODE.items()
}
CASES |= {
    "c3-uint8-mixed-72x100-sources": Case(height=72, width=100, separate_sources=True, fill_probs=(0.4, 0.3, 0.3)),
    "c1-uint8-mixed-100x72-sources": Case(channels=1, height=100, width=72, separate_sources=True),
    "c3-float16-mixed": Case(dtype=torch.float16),
    "c3-float64-mixed": Case(dtype=torch.float64),
    "c3-uint8-clipped-by-box": Case(replay_smaller_defects=True),
    # The GPU's launch shapes: 8 x 256 tiles, and several row blocks per average-colour defect.
    "c3-uint8-256x256-mostly-average": Case(height=256, width=256, batch=6, fill_probs=(0.2, 0.6, 0.2)),
}


def assert_same_batch(out: torch.Tensor, masks: torch.Tensor, ref: torch.Tensor, ref_masks: torch.Tensor,
                      params: dict, config: SynthConfig) -> None:
    """The kernel's batch equals the reference's: see the module docstring for the tolerances."""
    assert out.dtype == ref.dtype and out.shape == ref.shape and masks.dtype == torch.bool
    assert torch.equal(masks, ref_masks)
    flat = masks & (params["fill_mode"] == FILL_MODES.index("flat_colour"))[:, None, None, None]
    assert torch.equal(out[flat.expand_as(out)], ref[flat.expand_as(ref)])

    diff = (out.double() - ref.double()).abs()
    if out.dtype == torch.uint8:
        assert diff.max() <= 1 and (diff > 0).double().mean() <= 1e-3, (diff.max(), (diff > 0).double().mean())
        return
    work = torch.float64 if out.dtype == torch.float64 else torch.float32
    averages = bool((params["fill_mode"] == FILL_MODES.index("average_colour")).any())
    summed = math.prod(compositing_box(config, *out.shape[-2:])) if averages else 0
    tolerance = (8 + summed) * torch.finfo(work).eps + (torch.finfo(out.dtype).eps if out.dtype != work else 0)
    assert diff.max() <= tolerance, (diff.max(), tolerance)


# --- interpreted runs (subprocess) ---------------------------------------------------------------


def _run_cases(path: Path) -> None:
    """Run every case through `apply` with backend="fused" (the kernel, interpreted); save them."""
    assert os.environ.get("TRITON_INTERPRET") == "1" and "ssad.kernels.fused" not in sys.modules
    results = {}
    for name, case in CASES.items():
        images, sources, params, config = case.inputs()
        results[name] = apply(images, params, config, sources)
    torch.save(results, path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    path = tmp_path_factory.mktemp("kernels") / "interpreted.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, __file__, str(path)], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"interpreted kernel run failed:\n{run.stdout}\n{run.stderr}"
    return torch.load(path)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_kernel_equals_reference(interpreted, name):
    case = CASES[name]
    images, sources, params, config = case.inputs()
    ref, ref_masks = apply(images, params, replace(config, backend="reference"), sources)
    assert set(params["labels"].tolist()) == {0, 1, 2}
    assert ref_masks.any() and not ref_masks.all()
    out, masks = interpreted[name]
    assert_same_batch(out, masks, ref, ref_masks, params, config)


@pytest.mark.parametrize("name", list(CASES))
def test_tolerance_admits_another_rounding_of_the_sums(interpreted, name, monkeypatch):
    """Emulates a CPU whose BLAS rounds the colour map differently (e.g. AVX-512 with fused
    multiply-adds): the reference with its colour map summed in float64 and rounded once still
    equals the kernel within `assert_same_batch`'s tolerances."""
    case = CASES[name]
    images, sources, params, config = case.inputs()

    def colour_in_float64(pixels, matrix, bias, out=None):
        result = torch.baddbmm(bias.double()[..., None], matrix.double(), pixels.double()).to(pixels.dtype)
        return result if out is None else out.copy_(result)

    monkeypatch.setattr(functional, "apply_colour", colour_in_float64)
    ref, ref_masks = apply(images, params, replace(config, backend="reference"), sources)
    assert_same_batch(*interpreted[name], ref, ref_masks, params, config)


# --- dispatch --------------------------------------------------------------------------------------


def test_available_follows_device_and_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert available("cuda") and not available("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert available("cpu")


def test_fused_backend_where_it_cannot_run_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    images, _, params, config = Case(batch=2).inputs()
    with pytest.raises(ValueError, match="backend='fused' cannot run"):
        apply(images, params, config)


def test_cpu_path_never_imports_triton():
    """backend="auto" on CPU tensors takes the reference without loading Triton."""
    code = (
        "import sys, torch; from ssad.synth import DefectSynthesizer; "
        "DefectSynthesizer()(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)); "
        "assert 'triton' not in sys.modules, 'triton was imported'"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


# --- compiled -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_kernels_compile_for_hopper(dtype):
    """The launches of 256 x 256 RGB batches compile to sm_90 code (no GPU needed), specialised as
    the launcher would: IEEE division without contraction (so masks match the reference), no
    register spills, and the image and mask written in wide stores only."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 in this process: the kernels are interpreted, not compiled")
    from ssad.kernels import codegen, fused

    images, _, params, config = Case(dtype=dtype, height=256, width=256, batch=2).inputs()
    _, _, launches = fused.plan(images, params, config)
    for launch in launches:
        compiled = codegen.compile_launch(launch, arch=90)
        ptx, name = compiled.asm["ptx"], launch.kernel.fn.__name__
        assert "div.rn.f32" in ptx and "fma.rn.f32" not in ptx, name
        assert codegen.resource_usage(compiled.asm["cubin"])["LOCAL"] == 0, f"{name} spills registers"
        if launch.kernel is fused._composite_kernel:
            stores = {access: n for access, n in codegen.global_accesses(ptx).items() if access.startswith("st")}
            assert stores and all(int(access[3:-1]) >= 8 for access in stores), stores


def test_plan_sizes_both_kernels_tiles_by_tile_pixels():
    """``tile_pixels`` is the tile of the average kernel too (its rows span the compositing box),
    and only the composite kernel takes ``num_warps``."""
    from ssad.kernels import fused

    images, _, params, config = Case(height=256, width=256, batch=2).inputs()
    for tile_pixels in (512, fused.TILE_PIXELS):
        _, _, launches = fused.plan(images, params, config, tile_pixels=tile_pixels, num_warps=2)
        assert [launch.options["BLOCK_H"] * launch.options["BLOCK_W"] for launch in launches] == [tile_pixels] * 2
        assert [launch.options["num_warps"] for launch in launches] == [fused.AVERAGE_NUM_WARPS, 2]


def test_global_accesses_reads_widths():
    from ssad.kernels.codegen import global_accesses

    ptx = ("ld.global.L1::evict_last.v4.b32 {a, b, c, d}, [x];\n st.global.b8 [x], r;\n"
           " ld.global.nc.v2.b16 {a, b}, [x];\n")
    assert global_accesses(ptx) == {"ld 16B": 1, "ld 4B": 1, "st 1B": 1}


def test_warps_per_sm_follows_the_occupancy_limits():
    from ssad.kernels.codegen import warps_per_sm

    assert warps_per_sm(96, 8) == 16  # registers bound: 2 blocks of 8 warps
    assert warps_per_sm(32, 4) == 64  # the SM's 64 warps bound
    assert warps_per_sm(16, 1) == 32  # the SM's 32 blocks bound


def test_codegen_bench_writes_json(tmp_path):
    out = tmp_path / "codegen.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "kernel_codegen.py"), "--size", "64", "--dtypes", "uint8",
                    "--channels", "1", "--out", str(out)], env=env, cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    report = json.loads(out.read_text())
    assert report["target"] == "sm_90"
    assert {r["kernel"] for r in report["results"]} == {"_average_kernel", "_composite_kernel"}
    assert all(r["registers"] > 0 and 0 < r["warps_per_sm"] <= 64 for r in report["results"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_fused_kernel_equals_reference_on_cuda(dtype, channels):
    case = Case(channels=channels, dtype=dtype, height=256, width=256, batch=64, fill_probs=(0.4, 0.3, 0.3))
    images, sources, params, config = case.inputs("cuda")
    out, masks = apply(images, params, config, sources)
    reference = apply(images, params, replace(config, backend="reference"), sources)
    assert_same_batch(out, masks, *reference, params, config)


if __name__ == "__main__":
    _run_cases(Path(sys.argv[1]))
