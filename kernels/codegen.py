"""What the fused kernels compile to, without a GPU: ahead-of-time compilation and its facts.

`compile_launch` compiles a `fused.Launch` for a CUDA architecture with the specialisation Triton's
launcher would choose for the same arguments (pointer alignment, integers divisible by 16 or equal
to 1), so the code inspected is the code a GPU would run. It uses the ptxas and cuobjdump that ship
with Triton, and two of Triton's internal helpers (the launcher's binder and argument packing,
checked against Triton 3.8). `bench/kernel_codegen.py` reports these facts; the tests assert them.
"""

from __future__ import annotations

import collections
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from .fused import Launch

__all__ = ["compile_launch", "resource_usage", "global_accesses", "warps_per_sm"]

# A global access and its qualifiers, e.g. "ld.global.nc.v2.b32": kind, vector length, element bits.
_ACCESS = re.compile(r"\b(ld|st)\.global(\.\S*?)?\.[a-z](\d+)(?=\s)")
_VECTOR = re.compile(r"\.v(\d)\b")
#: Threads per warp, on every CUDA architecture.
_WARP_SIZE = 32
#: The sm_80 / sm_90 limits per SM: registers (allocated to a warp in units of `_REGISTER_UNIT`),
#: resident warps and resident blocks.
_SM_REGISTERS = 65_536
_REGISTER_UNIT = 256
_SM_WARPS = 64
_SM_BLOCKS = 32


def compile_launch(launch: Launch, arch: int = 90) -> triton.compiler.CompiledKernel:
    """Compile ``launch`` for CUDA compute capability ``arch`` (90: H100 / H200). Its tensors may
    live on the CPU: only their dtypes and alignment matter. ``.asm`` holds "ptx" and "cubin"."""
    kernel, backend = launch.kernel, make_backend(GPUTarget("cuda", arch, _WARP_SIZE))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, extra = binder(*launch.args, **launch.options)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.options, bound, specialization, extra)
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(source, target=backend.target, options=options.__dict__)


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Per-thread registers ("REG") and local memory ("LOCAL": spills), per-block shared memory
    ("SHARED") and stack ("STACK") of the cubin's kernel, read by Triton's cuobjdump."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-res-usage", str(path)],
                              check=True, capture_output=True, text=True).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    return {key: int(value) for key, value in re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", line)}


def global_accesses(ptx: str) -> dict[str, int]:
    """PTX global loads and stores counted by kind and bytes per thread and instruction, e.g.
    ``{"ld 1B": 24, "st 8B": 4}``: wide accesses stream the image; 1-byte loads are gathers."""
    counts: collections.Counter[str] = collections.Counter()
    for kind, qualifiers, bits in _ACCESS.findall(ptx):
        vector = _VECTOR.search(qualifiers or "")
        counts[f"{kind} {(int(vector.group(1)) if vector else 1) * int(bits) // 8}B"] += 1
    return dict(sorted(counts.items()))


def warps_per_sm(registers: int, num_warps: int) -> int:
    """Warps one SM can hold for blocks of ``num_warps`` at ``registers`` per thread, by the
    sm_80 / sm_90 limits: 65,536 registers allocated per warp in units of 256, 64 warps, 32 blocks."""
    per_warp = -(-registers * _WARP_SIZE // _REGISTER_UNIT) * _REGISTER_UNIT
    blocks = min(_SM_REGISTERS // (per_warp * num_warps), _SM_WARPS // num_warps, _SM_BLOCKS)
    return blocks * num_warps
