"""CPU settings: the allocator for large per-step tensors, and whether bf16 is native.

glibc serves allocations above 32 MB with fresh ``mmap`` pages and returns them on free, so every
large CPU tensor made per step (a 64 x 3 x 256 x 256 float batch is 50 MB) pays page faults on
first touch; on virtual machines those dominate the synthesis step. `retain_freed_memory` asks
glibc to serve them from its heap and keep freed memory for reuse. It is process-wide: ssad's
CLI and benchmarks call it on the CPU; a library user may call it in their own program.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

__all__ = ["retain_freed_memory", "native_bf16"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory() -> bool:
    """Keep freed heap memory and serve large blocks from the heap (glibc ``mallopt``).

    Returns True when applied, False where the C library is not glibc (nothing changes there).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # mallopt returns 1 on success; both are needed: without the trim threshold freed blocks at
    # the top of the heap are handed back to the system anyway.
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX instructions), so that bf16
    autocast speeds training up. Elsewhere oneDNN emulates bf16 and it runs slower than float32
    (``bench/results/cpu_amp_emulated.json``: ``bench/cpu_amp.py`` with oneDNN held to plain AVX-512)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)
