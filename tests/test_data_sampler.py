"""BatchSampler: index batches drawn on the device, epoch by epoch."""

from __future__ import annotations

from itertools import islice

import pytest
import torch

from ssad.data import BatchSampler


def test_batches_cover_each_epoch_once() -> None:
    sampler = BatchSampler(10, 5, torch.Generator().manual_seed(0))
    batches = list(islice(sampler, 4))
    assert all(b.shape == (5,) and b.dtype == torch.int64 and b.device.type == "cpu" for b in batches)
    for epoch in (batches[0:2], batches[2:4]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))


def test_batch_larger_than_the_set_spans_epochs() -> None:
    (batch,) = islice(BatchSampler(3, 8, torch.Generator().manual_seed(0)), 1)
    assert batch.shape == (8,) and torch.bincount(batch, minlength=3).min() >= 2
    assert sorted(batch[:3].tolist()) == [0, 1, 2] and sorted(batch[3:6].tolist()) == [0, 1, 2]


def test_same_seed_same_batches() -> None:
    first = list(islice(BatchSampler(7, 3, torch.Generator().manual_seed(5)), 6))
    again = list(islice(BatchSampler(7, 3, torch.Generator().manual_seed(5)), 6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_indices_live_on_the_generators_device() -> None:
    batch = next(BatchSampler(100, 16, torch.Generator("cuda").manual_seed(0)))
    assert batch.device.type == "cuda"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        BatchSampler(0, 4, torch.Generator())
