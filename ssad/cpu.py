"""CPU settings: the allocator for large per-step tensors, and whether bf16 is native.

glibc serves allocations above 32 MB with fresh ``mmap`` pages and returns them on free, so every
large CPU tensor made per step (a 64 x 3 x 256 x 256 float batch is 50 MB) pays page faults on
first touch; on virtual machines those dominate the synthesis step. `retain_freed_memory` asks
glibc to serve them from its heap and keep freed memory for reuse. It is process-wide: ssad's
CLI and benchmarks call it on the CPU; a library user may call it in their own program.

Kept memory is never given back: after training, fitting and scoring allocate tensors of many
sizes, and a heap that keeps every freed block grows to their sum. `python -m ssad.run` keeps freed
memory while it trains only (`freed_memory_kept`), then restores glibc's defaults and hands the
heap's free pages back (`release_freed_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["retain_freed_memory", "release_freed_memory", "freed_memory_kept", "native_bf16"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's default for both thresholds (128 KiB).
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def _set_thresholds(mmap: int, trim: int) -> bool:
    libc = _libc()
    # mallopt returns 1 on success; both are needed: without the trim threshold freed blocks at
    # the top of the heap are handed back to the system anyway.
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))


def retain_freed_memory() -> bool:
    """Keep freed heap memory and serve large blocks from the heap (glibc ``mallopt``).

    Returns True when applied, False where the C library is not glibc (nothing changes there).
    """
    return _set_thresholds(1 << 30, (1 << 31) - 1)


def release_freed_memory() -> bool:
    """Undo `retain_freed_memory` (glibc's default thresholds) and give the heap's free pages
    back to the system (``malloc_trim``). Returns False where the C library is not glibc."""
    libc = _libc()
    if libc is None or not _set_thresholds(_GLIBC_DEFAULT_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD):
        return False
    libc.malloc_trim(0)
    return True


@contextmanager
def freed_memory_kept(keep: bool = True) -> Iterator[None]:
    """`retain_freed_memory` inside the block (where ``keep``), `release_freed_memory` after it:
    for a phase that allocates the same large tensors again and again (a training loop)."""
    if not keep:
        yield
        return
    retain_freed_memory()
    try:
        yield
    finally:
        release_freed_memory()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX instructions), so that bf16
    autocast speeds training up. Elsewhere oneDNN emulates bf16 and it runs slower than float32
    (``bench/results/cpu_amp_emulated.json``: ``bench/cpu_amp.py`` with oneDNN held to plain AVX-512)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)
