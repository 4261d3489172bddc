"""`ssad.graphs.CudaGraphed`: a plain call off CUDA; on CUDA, replays that draw what eager calls
from the same generator state draw, and compute what the eager synthesizer computes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ssad.graphs import CudaGraphed
from ssad.synth import DefectSynthesizer, SynthConfig, apply

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_off_cuda_it_is_a_plain_call():
    calls = []

    def double(x, y):
        calls.append(1)
        return {"sum": x + (0 if y is None else y)}

    graphed = CudaGraphed(double)
    x = torch.arange(4.0)
    assert torch.equal(graphed(x, None)["sum"], x) and torch.equal(graphed(x, x)["sum"], 2 * x)
    assert len(calls) == 2 and graphed.num_graphs == 0


def test_off_cuda_the_synthesizer_draws_as_when_called_directly():
    synth, images = DefectSynthesizer(), torch.zeros(8, 3, 64, 64, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(3)
    graphed = CudaGraphed(lambda x: synth(x, generator=generator), generator=generator)
    out = graphed(images)
    direct = synth(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.images, direct.images) and torch.equal(out.labels, direct.labels)


def _graphed_synth(seed: int, check_values: bool = False) -> tuple[CudaGraphed, SynthConfig]:
    config = SynthConfig(check_values=check_values, backend="fused")
    synth = DefectSynthesizer(config)
    generator = torch.Generator("cuda").manual_seed(seed)
    return CudaGraphed(lambda images: synth(images, generator=generator), generator=generator), config


def _images(batch: int = 64, size: int = 128, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device="cuda",
                           generator=torch.Generator("cuda").manual_seed(1))
    return images if dtype == torch.uint8 else images.to(dtype) / 255


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_replays_compute_what_eager_apply_computes(dtype):
    graphed, config = _graphed_synth(seed=0)
    images = _images(dtype=dtype)
    first, second = graphed(images), graphed(images)
    assert graphed.num_graphs == 1
    assert not torch.equal(first.params["centre"], second.params["centre"])  # each replay draws anew
    for out in (first, second):  # `first` survived the second replay: outputs are copies
        eager, eager_masks = apply(images, out.params, config)
        assert torch.equal(out.images, eager) and torch.equal(out.masks, eager_masks)
        reference, reference_masks = apply(images, out.params, replace(config, backend="reference"))
        assert torch.equal(out.masks, reference_masks)
        assert set(out.labels.tolist()) == {0, 1, 2}


@needs_cuda
def test_replays_draw_what_eager_calls_draw_one_graph_per_shape():
    graphed, config = _graphed_synth(seed=5)
    synth, generator = DefectSynthesizer(config), torch.Generator("cuda").manual_seed(5)
    for batch in (64, 32, 64):  # two shapes, two graphs; the second 64 replays the first graph
        out, eager = graphed(_images(batch)), synth(_images(batch), generator=generator)
        for name in ("labels", "vertices", "fill_mode", "flat_colour"):
            assert torch.equal(out.params[name], eager.params[name]), name
        assert torch.equal(out.images, eager.images) and torch.equal(out.masks, eager.masks)
    assert graphed.num_graphs == 2


@needs_cuda
def test_the_default_float_range_check_is_captured():
    """The [0, 1] check of float images is a device-side assertion: capturable, no read-back."""
    graphed, config = _graphed_synth(seed=0, check_values=True)
    images = _images(dtype=torch.float32)
    out = graphed(images)
    eager, _ = apply(images, out.params, config)
    assert torch.equal(out.images, eager)


@needs_cuda
def test_a_read_back_cannot_be_captured():
    graphed = CudaGraphed(lambda images: images * images.sum().item())
    with pytest.raises(RuntimeError, match="never read a value back"):
        graphed(_images())
