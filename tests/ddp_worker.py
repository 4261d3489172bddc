"""Run by test_train under torchrun: a few gloo steps, then each rank saves its parameters."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ssad.config import load_config
from ssad.data import load_category, make_demo_dataset
from ssad.train import init_distributed, train

out = Path(sys.argv[1])
device = init_distributed()
rank = dist.get_rank()
if rank == 0:
    make_demo_dataset(out / "demo", image_size=64, n_train=16, n_test=2, categories=("demo_object",))
dist.barrier()
data = load_category(out / "demo", "demo_object", image_size=64, device=device)
config = load_config([], ["data.image_size=64", "train.steps=3", "train.batch_size=8", "train.init='scratch'"])
result = train(config, data, out / "run", progress=False)
torch.save({k: v for k, v in result.model.named_parameters()}, out / f"rank{rank}.pt")
dist.destroy_process_group()
