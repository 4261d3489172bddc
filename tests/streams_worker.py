"""Run by test_synth_streams under torchrun (gloo): each rank synthesizes its share of a dataset
with per-sample streams; rank 0 saves what all ranks made."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ssad.synth import DefectSynthesizer, SampleStreams, SynthConfig

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
images = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
indices = torch.arange(rank, len(images), world)  # rank r gets samples r, r + world, ...
out = DefectSynthesizer(SynthConfig())(images[indices], generator=SampleStreams(7, indices))
shares = [None] * world
dist.all_gather_object(shares, {"indices": indices, "images": out.images, "labels": out.labels, "masks": out.masks})
if rank == 0:
    torch.save(shares, Path(sys.argv[1]) / "shares.pt")
dist.destroy_process_group()
