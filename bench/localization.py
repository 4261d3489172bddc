"""Which anomaly maps localize best? Pixel AUROC and AUPRO of `PatchScorer` variants, one run.

Loads a run's checkpoint and its category, fits each variant on the training images and scores
the test images; JSON out. The variant with the best pixel AUROC is ssad's default.

    python bench/localization.py --run runs/bottle_cpu --data-root ../shared/data/mvtec \\
        --out bench/results/localization_bottle.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ssad.atomic import write_json
from ssad.config import RunConfig
from ssad.data import load_category
from ssad.metrics import aupro, pixel_auroc
from ssad.model import PretextModel
from ssad.score import PatchScorer

# (name, PatchScorer arguments; sigma in pixels at 256 x 256). "layer2+1": layer1 resampled to
# layer2's grid (1/8 of the side).
VARIANTS = [
    ("layer2+1, per location, sigma 4 (default)", dict(layers=("layer2", "layer1"), shared=False, sigma=4.0)),
    ("layer2+3, per location, sigma 4", dict(layers=("layer2", "layer3"), shared=False, sigma=4.0)),
    ("layer2+3, shared, sigma 4", dict(layers=("layer2", "layer3"), shared=True, sigma=4.0)),
    ("layer2, per location, sigma 4", dict(layers=("layer2",), shared=False, sigma=4.0)),
    ("layer2, shared, sigma 4", dict(layers=("layer2",), shared=True, sigma=4.0)),
    ("layer3, per location, sigma 4", dict(layers=("layer3",), shared=False, sigma=4.0)),
    ("layer2, per location, sigma 2", dict(layers=("layer2",), shared=False, sigma=2.0)),
    ("layer2, per location, sigma 8", dict(layers=("layer2",), shared=False, sigma=8.0)),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with config.json and checkpoint.pt")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    config = RunConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    data = load_category(args.data_root, config.data.category, image_size=config.data.image_size)
    model = PretextModel()
    model.load_state_dict(torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])

    rows = []
    for name, options in VARIANTS:
        start = time.perf_counter()
        options = {**options, "sigma": options["sigma"] * data.image_size / 256}
        scorer = PatchScorer(channels=args.channels, **options).fit(model, data.train)
        maps = scorer.score(model, data.test)
        rows.append({
            "variant": name,
            "pixel_auroc": pixel_auroc(maps, data.test_masks),
            "aupro": aupro(maps, data.test_masks),
            "seconds": time.perf_counter() - start,
        })
        print(f"{name:45s} pixel AUROC {rows[-1]['pixel_auroc']:.3f}  AUPRO {rows[-1]['aupro']:.3f}")
    result = {"run": str(args.run), "category": config.data.category, "image_size": config.data.image_size,
              "channels": args.channels, "variants": rows}
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
