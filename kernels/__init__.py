"""Fused GPU kernels of the synthesis hot path (installed as ``ssad.kernels``).

`fused_apply` has the contract of `ssad.synth.functional.apply` and computes the same batch in one
Triton kernel pass (see `ssad.kernels.fused`). Importing this package registers it as the engine's
"fused" backend (`ssad.synth.backends`, which imports the package when that backend is first asked
for). Triton is an optional dependency: importing this package never imports it; `available` says
whether the kernels can run for a device.

Triton's interpreter (``TRITON_INTERPRET=1`` set before `ssad.kernels.fused` is first imported)
runs the kernels on CPU tensors, slowly: that is how the tests compare them with the reference.
`ssad.kernels.codegen` compiles them for a GPU that is not there, to inspect the machine code.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from ssad.synth.backends import Backend, register
from ssad.synth.config import SynthConfig

__all__ = ["available", "fused_apply"]


def available(device: torch.device | str) -> bool:
    """True when the fused kernels can run on tensors of ``device``: Triton is importable and the
    device is CUDA, or the device is the CPU and Triton's interpreter is switched on."""
    device = torch.device(device)
    if not _triton_importable():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _interpreting()


def fused_apply(
    images: Tensor,
    params: dict[str, Tensor],
    config: SynthConfig,
    source_images: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`ssad.synth.functional.apply` computed by the fused kernel; same arguments and results.

    Raises ValueError when the kernel cannot run on the images' device (see `available`).
    """
    if not available(images.device):
        reason = "Triton is not installed" if not _triton_importable() else (
            f"images are on {images.device}; the fused kernel runs on CUDA devices "
            "(or on the CPU under TRITON_INTERPRET=1)"
        )
        raise ValueError(f"backend='fused' cannot run: {reason}. Use backend='auto' or 'reference'.")
    from .fused import fused_apply as run  # imports Triton

    return run(images, params, config, source_images)


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` is on (read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "on"}


register(Backend("fused", fused_apply, available))
