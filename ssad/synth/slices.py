"""Working through a batch in a fixed number of slices.

On the CPU a fresh tensor of tens of megabytes costs more in page faults than the arithmetic that
fills it; temporaries of a fraction of the batch stay in memory the allocator reuses. The number of
slices is fixed (this is not a loop over samples), so a call dispatches the same operations for
any batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

__all__ = ["SLICES", "batch_slices"]

SLICES = 8


def batch_slices(*tensors: Tensor, slices: int = SLICES) -> Iterator[tuple[Tensor, ...]]:
    """The tensors' ``slices`` slices along dim 0 (each ``(B, ...)``), zipped: views, so a slice
    of an output tensor can be written into. Slices are empty where B < slices."""
    return zip(*(t.tensor_split(slices) for t in tensors))
