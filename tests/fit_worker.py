"""Run by test_fit_sharded under torchrun: each rank fits detectors (one per memory size given) on its
share of the images."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ssad.config import ScoreConfig
from ssad.data import load_category
from ssad.detector import fit_detector
from ssad.model import create_model
from ssad.train import init_distributed

out, memories = Path(sys.argv[1]), [int(m) for m in sys.argv[2:]]
device = init_distributed()
rank = dist.get_rank()
data = load_category(out / "demo", "demo_object", image_size=64, device=device, cache_dir=out / f"cache{rank}",
                     progress=False)
torch.manual_seed(0)
model = create_model("scratch")[0].to(device)
for memory in memories:
    detector = fit_detector(model, data.train, ScoreConfig(patch_memory=memory, patch_candidates=2000,
                                                           image_score="fusion"), moves=True)
    torch.save({"bank": detector.patches.bank, "pixel": detector.pixel_threshold_normal,
                "image": detector.image_threshold_normal, "scores": detector.score_all(data.test)[0]},
               out / f"rank{rank}_{memory}.pt")
dist.destroy_process_group()
