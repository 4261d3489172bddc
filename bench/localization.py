"""Which anomaly maps localize best? Pixel AUROC and AUPRO of the patch scorers' variants.

For each run folder given: loads its checkpoint and category, fits each variant on the training
images and scores the test images. Also reports the image AUROC of the maps' maxima (a
PatchCore-style image score) next to the run's own image score. With ``--sizes``, the default
scorer (knn 10k coreset, layer2+1) also fits and scores at each of these image sides
(``score.image_size``): the network is convolutional, so one trained at 128 px scores at any
size; with several ``--channels``, at each size once per channel count (0: all). JSON out and
Markdown tables; the defaults of `ScoreConfig` follow these figures.

    python bench/localization.py --data-root ../shared/data/mvtec \
        --run runs/bottle_cpu runs/screw_cpu --out bench/results/localization.json
    python bench/localization.py --data-root ../shared/data/mvtec --run runs/screw_cpu \
        --no-variants --sizes 128 256 320 384 512 --out bench/results/scoring_size_screw.json
    python bench/localization.py --data-root ../shared/data/mvtec --run runs/screw_cpu \
        --no-variants --sizes 320 --channels 100 0 --out bench/results/channels_320.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from ssad.atomic import write_json
from ssad.checkpoint import load_run_model
from ssad.config import ScoreConfig
from ssad.data import CategoryData, load_category
from ssad.data.layout import scan_category
from ssad.detector import scaled_sigma
from ssad.metrics import aupro, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.score import create_patch_scorer
from timing import Stopwatch

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
#: `ScoreConfig`'s scorer, the one ``--sizes`` scores with.
DEFAULT = VARIANTS[2]


def measure(model: PretextModel, data: CategoryData, name: str, scorer: str, channels: int, options: dict) -> dict:
    """Fit one scorer on the training images, score the test images: one row of results."""
    with Stopwatch() as watch:
        sigma = scaled_sigma(options.get("sigma", ScoreConfig.sigma), data.image_size)
        patches = create_patch_scorer(scorer, channels=channels, **{**options, "sigma": sigma})
        maps = patches.fit(model, data.train).score(model, data.test)
        figures = {
            "pixel_auroc": pixel_auroc(maps, data.test_masks),
            "aupro": aupro(maps, data.test_masks),
            "image_auroc_of_map_max": image_auroc(maps.amax(dim=(1, 2, 3)), data.test_labels),
        }
    row = {"variant": name, "image_size": data.image_size, "channels": patches.channels, **figures,
           "seconds": watch.seconds}
    print(f"{data.category:8s} {name:38s} {data.image_size:4d} px {patches.channels:3d} ch  "
          f"pixel {row['pixel_auroc']:.3f}  AUPRO {row['aupro']:.3f}  "
          f"image (map max) {row['image_auroc_of_map_max']:.3f}  {row['seconds']:.0f} s", flush=True)
    return row


def compare(run: Path, data_root: Path, channels: list[int], variants: bool, sizes: list[int]) -> dict:
    """Every variant on one run at its training size (the first of ``channels``), and the default
    scorer at each of ``sizes`` with each of ``channels``."""
    config, model = load_run_model(run)
    category = config.data.category
    rows = []
    if variants:
        data = load_category(data_root, category, image_size=config.data.image_size, progress=False)
        rows = [measure(model, data, *variant, channels[0]) for variant in VARIANTS]
    name, scorer, options = DEFAULT
    by_size = []
    for size in sizes:
        data = load_category(data_root, category, image_size=size, progress=False)
        by_size += [measure(model, data, name, scorer, count, options) for count in channels]
    metrics = run / "metrics.json"
    return {"run": str(run), "category": category, "image_size": config.data.image_size,
            "moves": scan_category(data_root, category).info.moves,
            "run_metrics": json.loads(metrics.read_text()) if metrics.exists() else None,
            "variants": rows, "scoring_sizes": by_size}


def markdown_table(results: list[dict], key: str, label: str) -> str:
    """Rows of ``key`` ("variants" or "scoring_sizes") down, runs across: pixel AUROC / AUPRO /
    image AUROC of the map maxima."""
    head = f"| {label} | " + " | ".join(f"{r['category']}, trained at {r['image_size']} px" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for i, row in enumerate(results[0][key]):
        cells = [f"{r[key][i]['pixel_auroc']:.3f} / {r[key][i]['aupro']:.3f} / "
                 f"{r[key][i]['image_auroc_of_map_max']:.3f}" for r in results]
        name = row["variant"] if key == "variants" else f"{row['image_size']} px, {row['channels']} channels"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True,
                        help="run folder(s) with config.json and checkpoint.pt")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--channels", type=int, nargs="+", default=[ScoreConfig.patch_channels],
                        help="patch feature channels kept (0: all, score.patch_channels' default); "
                             "several: --sizes scores with each")
    parser.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the scorer variants at the run's training size (default: yes)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[],
                        help="also score with the default scorer at these image sides (score.image_size)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    results = [compare(run, args.data_root, args.channels, args.variants, args.sizes) for run in args.run]
    print("\npixel AUROC / AUPRO / image AUROC of the map maxima")
    for key, label, wanted in (("variants", "variant", args.variants), ("scoring_sizes", "scored at", args.sizes)):
        if wanted:
            print(markdown_table(results, key, label))
    result = {"channels": args.channels, "runs": results}
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
