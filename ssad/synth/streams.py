"""Per-sample random streams: a sample's defect depends on (seed, sample index) and nothing else.

A ``torch.Generator`` draws the batch's numbers in one sequence, so sample 5 of a batch of 8 gets
other numbers than sample 5 of a batch of 1024, or than the same sample on another rank.
`SampleStreams` replaces it where that matters (datasets exported once and reused, runs that must
not change with the batch size or the number of devices):

    streams = SampleStreams(seed=0, indices=torch.arange(start, start + batch, device=device))
    out = synth(images, generator=streams)   # sample i's parameters depend on (0, indices[i]) only

It is counter-based: the k-th number drawn by sample ``index`` in the n-th call is a hash of
(seed, index, n, k), computed on the indices' device with 32-bit integer mixing held in int64
lanes (no overflow, so every device and CPU computes the same bits). Numbers have 24 random bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SampleStreams", "draw_uniform"]

_MASK = 0xFFFFFFFF


def _mul32(x: Tensor | int, constant: int) -> Tensor | int:
    """``x * constant mod 2^32`` for x in [0, 2^32), in int64 without overflow (16-bit halves);
    x a tensor or a Python int."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK


def _mix(x: Tensor | int) -> Tensor | int:
    """A 32-bit integer hash with good avalanche (Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class SampleStreams:
    """One random stream per sample, keyed by ``seed`` and ``indices`` (B,) int64 (any values,
    e.g. dataset positions); pass it wherever the synthesizer takes a ``generator``.

    Each `rand` call advances every stream by one call, so the same sequence of calls (as
    `sample_params` makes for any batch size) gives sample ``index`` the same numbers.
    """

    def __init__(self, seed: int, indices: Tensor) -> None:
        if indices.dim() != 1 or indices.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"indices must be (B,) integers; got {tuple(indices.shape)} {indices.dtype}.")
        self.seed, self.calls = int(seed), 0
        self.keys = _mix((indices.long() & _MASK) ^ _mix(self.seed & _MASK))

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def rand(self, *shape: int) -> Tensor:
        """(B, *rest) float32 uniform in [0, 1); ``shape[0]`` must be B."""
        if shape[0] != len(self.keys):
            raise ValueError(f"these streams serve {len(self.keys)} samples; asked for {shape[0]}.")
        count = math.prod(shape[1:])
        call = _mix((self.calls * 0x9E3779B9) & _MASK)
        self.calls += 1
        element = torch.arange(count, device=self.device)
        bits = _mix(_mix(self.keys[:, None] ^ call) ^ element[None, :])
        return ((bits >> 8).float() / 2**24).reshape(shape)


def draw_uniform(generator: torch.Generator | SampleStreams | None, *shape: int,
                 device: torch.device | str = "cpu") -> Tensor:
    """``torch.rand(*shape)`` from a ``torch.Generator`` (or torch's global one when None) or
    from per-sample `SampleStreams`."""
    if isinstance(generator, SampleStreams):
        return generator.rand(*shape)
    return torch.rand(*shape, generator=generator, device=device)
