"""Random batches of indices drawn on the device: the training loop's replacement for a DataLoader.

    sampler = BatchSampler(len(data.train), 96, torch.Generator(data.device).manual_seed(0))
    for step, idx in zip(range(steps), sampler):
        images = data.train[idx]              # (96, 3, S, S) uint8, gathered on the device
        masks = data.object_masks_at(idx)     # (96 or 1, 1, S, S) bool
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["BatchSampler"]


class BatchSampler(Iterator[torch.Tensor]):
    """Endless batches of indices into a set of `n` items, each `(batch_size,) int64` on the generator's device.

    Indices are drawn as epochs: a random permutation of `0..n-1` (`torch.randperm` with `generator`)
    is consumed batch by batch and the next permutation is appended when it runs short, so every item
    appears once per epoch and a batch may straddle two epochs (or several when `batch_size > n`).
    Shapes never depend on the data and nothing is read back to the host.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 items and batch_size >= 1, got n={n}, batch_size={batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.generator = generator
        self._pending = torch.empty(0, dtype=torch.int64, device=generator.device)

    def __next__(self) -> torch.Tensor:
        while len(self._pending) < self.batch_size:
            permutation = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
            self._pending = torch.cat([self._pending, permutation])
        batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
        return batch

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The indices drawn but not yet used (the generator's state is saved by its owner)."""
        return {"pending": self._pending.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._pending = state["pending"].to(self._pending.device)
