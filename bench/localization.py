"""Which anomaly maps localize best? Pixel AUROC and AUPRO of the patch scorers' variants.

For each run folder given: loads its checkpoint and category, fits each variant on the training
images and scores the test images. Also reports the image AUROC of the maps' maxima (a
PatchCore-style image score) next to the run's own image score. JSON out and a Markdown table;
the defaults of `ScoreConfig` (patch_scorer "auto") follow these figures.

    python bench/localization.py --data-root ../shared/data/mvtec \
        --run runs/bottle_cpu runs/screw_cpu --out bench/results/localization.json
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
from ssad.metrics import aupro, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.score import create_patch_scorer

# (name, create_patch_scorer name, options; sigma in pixels at 256 x 256). "layer2+1": layer1
# resampled to layer2's grid (1/8 of the side).
L21 = ("layer2", "layer1")
VARIANTS = [
    ("per location, layer2+1", "per_location", dict(layers=L21)),
    ("shared, layer2+1", "shared", dict(layers=L21)),
    ("knn 10k coreset, layer2+1", "knn", dict(layers=L21, memory=10_000)),
    ("knn 2k coreset, layer2+1", "knn", dict(layers=L21, memory=2_000)),
    ("knn 40k coreset, layer2+1", "knn", dict(layers=L21, memory=40_000)),
    ("per location, layer2", "per_location", dict(layers=("layer2",))),
    ("knn 10k coreset, layer2", "knn", dict(layers=("layer2",), memory=10_000)),
    ("knn 10k coreset, layer2+3", "knn", dict(layers=("layer2", "layer3"), memory=10_000)),
    ("knn 10k coreset, layer2+1, sigma 8", "knn", dict(layers=L21, memory=10_000, sigma=8.0)),
]


def compare(run: Path, data_root: Path, channels: int) -> dict:
    """Every variant on one run: pixel AUROC, AUPRO, image AUROC of the map maxima, seconds."""
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    data = load_category(data_root, config.data.category, image_size=config.data.image_size, progress=False)
    model = PretextModel(config.synth.num_classes)
    model.load_state_dict(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])
    rows = []
    for name, scorer, options in VARIANTS:
        start = time.perf_counter()
        sigma = options.get("sigma", 4.0) * data.image_size / 256
        patches = create_patch_scorer(scorer, channels=channels, **{**options, "sigma": sigma})
        maps = patches.fit(model, data.train).score(model, data.test)
        rows.append({
            "variant": name,
            "pixel_auroc": pixel_auroc(maps, data.test_masks),
            "aupro": aupro(maps, data.test_masks),
            "image_auroc_of_map_max": image_auroc(maps.amax(dim=(1, 2, 3)), data.test_labels),
            "seconds": time.perf_counter() - start,
        })
        r = rows[-1]
        print(f"{config.data.category:8s} {name:38s} pixel {r['pixel_auroc']:.3f}  AUPRO {r['aupro']:.3f}  "
              f"image (map max) {r['image_auroc_of_map_max']:.3f}  {r['seconds']:.0f} s", flush=True)
    metrics = run / "metrics.json"
    return {"run": str(run), "category": config.data.category, "image_size": config.data.image_size,
            "moves": data.moves, "run_metrics": json.loads(metrics.read_text()) if metrics.exists() else None,
            "variants": rows}


def markdown_table(results: list[dict]) -> str:
    """Variants down, runs across: pixel AUROC / AUPRO / image AUROC of the map maxima."""
    head = "| variant | " + " | ".join(f"{r['category']} {r['image_size']} px" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for i, (name, _, _) in enumerate(VARIANTS):
        cells = [f"{r['variants'][i]['pixel_auroc']:.3f} / {r['variants'][i]['aupro']:.3f} / "
                 f"{r['variants'][i]['image_auroc_of_map_max']:.3f}" for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True,
                        help="run folder(s) with config.json and checkpoint.pt")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    results = [compare(run, args.data_root, args.channels) for run in args.run]
    print("\npixel AUROC / AUPRO / image AUROC of the map maxima\n" + markdown_table(results))
    result = {"channels": args.channels, "runs": results}
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
