"""Compositing backends of `apply`, looked up by name.

``SynthConfig.backend`` names one: ``"reference"`` (the torch code of `ssad.synth.functional`),
``"fused"`` (the Triton kernel of `ssad.kernels`), or ``"auto"``: the fused kernel for CUDA images
where it can run, else the reference. A backend's module registers it when imported (`register`).

The engine imports no backend's module in its code: `backend` imports the module `PROVIDERS` names
the first time its backend is asked for, by the module's name. That is the one place the engine
reaches `ssad.kernels`, a layer above it that imports the engine: so ``import ssad.synth`` never
loads Triton, and no import cycle joins the two packages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .config import SynthConfig

__all__ = ["Backend", "PROVIDERS", "register", "backend", "resolve"]

#: Every backend, by name, and the module that registers it when imported.
PROVIDERS = {"reference": "ssad.synth.functional", "fused": "ssad.kernels"}


class Backend(NamedTuple):
    """A compositing backend: ``apply(images, params, config, source_images) -> (images, masks)``
    computes the cut-paste defects as `ssad.synth.apply` specifies (images (B, C, H, W), masks
    (B, 1, H, W) bool); ``available(device)`` says whether it runs on tensors of that device."""

    name: str
    apply: Callable[[Tensor, dict[str, Tensor], SynthConfig, Tensor | None], tuple[Tensor, Tensor]]
    available: Callable[[torch.device], bool]


_REGISTERED: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Make ``backend`` the one its name selects; the module `PROVIDERS` names for it calls this."""
    if backend.name not in PROVIDERS:
        raise ValueError(f"backend {backend.name!r}: not one of {tuple(PROVIDERS)}.")
    _REGISTERED[backend.name] = backend


def backend(name: str) -> Backend:
    """The backend called ``name`` (a key of `PROVIDERS`), its module imported on first use."""
    if name not in _REGISTERED:
        importlib.import_module(PROVIDERS[name])
    return _REGISTERED[name]


def resolve(name: str, device: torch.device) -> Backend:
    """The backend `apply` uses for images on ``device`` when the config names ``name``: that
    backend, or for "auto" the fused one on a CUDA device where it can run and the reference
    elsewhere. Only "fused", or "auto" on a CUDA device, loads `ssad.kernels`."""
    if name != "auto":
        return backend(name)
    if device.type == "cuda":
        fused = backend("fused")
        if fused.available(device):
            return fused
    return backend("reference")
