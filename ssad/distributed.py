"""Ranks under ``torchrun``: who am I, which images are mine, and everyone's share on every rank.

Training splits each batch over the ranks (`ssad.train`); fitting a detector splits the training
images: rank r embeds images r, r + W, r + 2W, ... (`share_of`), and what the ranks made is put
together once (`gather_rows`), in the images' order, so that every rank holds what one process
would have made. Outside torchrun (or with one rank) each function is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["rank_and_world", "gather_from_ranks", "share_of", "gather_rows"]


def rank_and_world() -> tuple[int, int]:
    """(this rank, number of ranks): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_ranks(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (CPU tensors and plain data), on every rank, in rank order."""
    world = rank_and_world()[1]
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def share_of(count: int, device: torch.device | str = "cpu") -> Tensor:
    """(n,) int64: the indices of ``count`` images this rank handles (all of them with one rank)."""
    rank, world = rank_and_world()
    return torch.arange(rank, count, world, device=device)


def gather_rows(rows: Tensor, *values: Tensor | None) -> tuple[Tensor, list[Tensor | None]]:
    """Every rank's (n_i,) int64 ``rows`` and the (n_i, ...) ``values`` made for them, put together
    on every rank and sorted by row (stably: the values of one row keep their order): the rows
    (N,) and each value (N, ...), on the device of ``rows``. A None value stays None."""
    if rank_and_world()[1] == 1:
        return rows, list(values)
    device = rows.device
    parts = gather_from_ranks([rows.cpu(), *(None if v is None else v.cpu() for v in values)])
    rows = torch.cat([p[0] for p in parts])
    order = torch.sort(rows, stable=True).indices
    gathered = [None if values[i] is None else torch.cat([p[i + 1] for p in parts])[order].to(device)
                for i in range(len(values))]
    return rows[order].to(device), gathered
