"""Per-sample random streams: a sample's defect depends on (seed, index), not on its batch or rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssad.synth import DefectSynthesizer, SampleStreams, SynthConfig, sample_params

SIZE = 64


def _dataset(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("config", [SynthConfig(), SynthConfig(family_probs=(0.4, 0.3, 0.3))],
                         ids=["spec", "every-family"])
def test_a_sample_gets_the_same_defect_in_any_batch(config):
    data, sources = _dataset(), _dataset().flip(0)  # per-sample sources: fills independent of the batch
    synth = DefectSynthesizer(config)
    whole = synth(data, source_images=sources, generator=SampleStreams(3, torch.arange(64)))
    for batch in (1, 8, 37):
        picked = torch.randperm(64, generator=torch.Generator().manual_seed(batch))[:batch]
        part = synth(data[picked], source_images=sources[picked], generator=SampleStreams(3, picked))
        for key in ("labels", "centre", "vertices", "num_vertices", "brightness"):
            torch.testing.assert_close(part.params[key], whole.params[key][picked], rtol=0, atol=0)
        assert torch.equal(part.masks, whole.masks[picked])
        # Images: the same arithmetic per sample; allow one level where float rounding lands apart.
        assert (part.images.int() - whole.images[picked].int()).abs().max() <= 1


def test_streams_depend_on_seed_and_index_and_look_uniform():
    shape = (4096, 3, 64, 64)
    a = sample_params(shape, SynthConfig(), generator=SampleStreams(0, torch.arange(4096)))
    b = sample_params(shape, SynthConfig(), generator=SampleStreams(1, torch.arange(4096)))
    assert not torch.equal(a["centre"], b["centre"])
    u = SampleStreams(0, torch.arange(1000)).rand(1000, 50)
    assert 0 <= u.min() and u.max() < 1
    counts = torch.histc(u, bins=10, min=0, max=1)
    expected = u.numel() / 10
    assert ((counts - expected) ** 2 / expected).sum() < 40  # chi-square, 9 degrees of freedom: p < 1e-5
    # Neighbouring indices and successive calls are not correlated.
    assert abs(torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1]) < 0.1
    streams = SampleStreams(0, torch.arange(1000))
    first, second = streams.rand(1000), streams.rand(1000)
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1]) < 0.1


def test_streams_check_their_batch():
    with pytest.raises(ValueError, match="serve 4 samples"):
        SampleStreams(0, torch.arange(4)).rand(5)
    with pytest.raises(ValueError, match="integers"):
        SampleStreams(0, torch.rand(4))


def test_two_gloo_ranks_make_the_samples_one_process_makes(tmp_path):
    script = Path(__file__).with_name("streams_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(port), str(script), str(tmp_path)], check=True, env=env, timeout=180, capture_output=True)
    shares = torch.load(tmp_path / "shares.pt")
    images = torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = DefectSynthesizer(SynthConfig())(images, generator=SampleStreams(7, torch.arange(12)))
    for share in shares:
        idx = share["indices"]
        assert torch.equal(share["labels"], whole.labels[idx]) and torch.equal(share["masks"], whole.masks[idx])
        assert (share["images"].int() - whole.images[idx].int()).abs().max() <= 1
