"""Memory, head or both? Each anomaly-map source on a run's real test split, overall and per defect type.

For each run folder given (``checkpoint.pt`` and ``config.json``; the head's sources only where the
run trained with ``train.segmentation``), at one scoring size (``--size``; by default the size the
run's validation chose, from its ``metrics.json``), as a run fits its detector:

- the memory fitted on all normal training images; held-out normal scores (the run's folds) for
  the fusions' standardisation;
- every map source (`ssad.registry.MAP_SOURCES`) x every image score: image AUROC, pixel AUROC,
  AUPRO, image and pixel F1-max on the test split (`ssad.evaluate.measure`);
- per defect type, on that type's images and all good ones: image AUROC, pixel AUROC, AUPRO;
- what the run's validation chose, for comparison.

JSON out, a Markdown table printed, and a picture of the per-type figures (one bar per source).

    python bench/map_sources.py --data-root ../shared/data/mvtec --run runs/seg_bottle runs/seg_screw \\
        --out bench/results/map_sources_mvtec.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from timing import Stopwatch

from ssad.anomaly_map import AnomalyMap
from ssad.atomic import save_png, write_json
from ssad.checkpoint import load_run_model
from ssad.config import ValidationConfig
from ssad.data import CategoryData, load_category
from ssad.data.layout import GOOD
from ssad.detector import (
    coarse_statistics,
    embed,
    fit_scorers,
    fold_indices,
    held_out_scores,
    map_for,
    scaled_sigma,
    score_coarse,
)
from ssad.evaluate import measure
from ssad.image_score import IMAGE_SCORES, ImageScore
from ssad.metrics import aupro, image_auroc, pixel_auroc
from ssad.registry import MAP_SOURCES
from ssad.report import unit_axis

#: Images whose full-size maps are drawn at once.
BATCH = 32
PER_TYPE = ("image_auroc", "pixel_auroc", "aupro")


def per_type(scores: torch.Tensor, maps: torch.Tensor, data: CategoryData) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC and AUPRO of each defect type: its images against all good ones."""
    types = data.test_defect_types
    good = torch.tensor([t == GOOD for t in types])
    out = {}
    for name in sorted(set(types) - {GOOD}):
        rows = good | torch.tensor([t == name for t in types])
        known = rows & data.test_mask_known.cpu()
        out[name] = {"images": int((rows & ~good).sum()),
                     "image_auroc": image_auroc(scores[rows], data.test_labels[rows]),
                     "pixel_auroc": pixel_auroc(maps[known], data.test_masks[known]),
                     "aupro": aupro(maps[known], data.test_masks[known])}
    return out


def chosen_size(run: Path, fallback: int) -> int:
    """The scoring size the run's validation chose (``metrics.json``), else ``fallback``."""
    metrics = run / "metrics.json"
    if metrics.is_file():
        return int(json.loads(metrics.read_text())["validation"]["image_size"])
    return fallback


def measure_run(run: Path, data_root: Path, size: int | None, validation: ValidationConfig) -> dict:
    """Every (map source, image score) on one run's test split at one size."""
    config, model = load_run_model(run)
    score = config.score
    size = size or chosen_size(run, config.data.image_size)
    data = load_category(data_root, config.data.category, image_size=size, progress=False)
    has_head = model.segmentation is not None
    sources = [s for s in MAP_SOURCES if has_head or not AnomalyMap(s).needs_head]
    head = config.data.image_size if has_head else 0  # the head sees images at its training size, as a run's
    # As a run fits its detector: held-out normal scores for the standardisations, the memory on all images.
    folds = fold_indices(len(data.train), validation.folds, validation.seed, data.device)
    normal = held_out_scores(model, data.train, score, data.moves, folds, density=True, head=head)
    fitted = fit_scorers(model, data.train, score, data.moves, "map_max", density=True, head_size=head)
    test = fitted.coarse_scores(embed(model, data.test, score.patch_layers, pooled=True, head=head))
    rows = []
    for source in sources:
        anomaly_map = map_for(source, scaled_sigma(score.sigma, size), normal)
        normal_statistics = coarse_statistics(anomaly_map, normal, BATCH)
        maps, statistics = score_coarse(anomaly_map, test, BATCH)
        for kind in IMAGE_SCORES:
            scorer = ImageScore(kind)
            if kind == "fusion":
                scorer.calibrate(normal_statistics)
            scores = scorer(statistics)
            evaluation = measure(scores, maps, data.test_labels, data.test_masks, data.test_mask_known)
            rows.append({"map_source": source, "image_score": kind, **evaluation.metrics,
                         "by_type": per_type(scores, maps, data)})
    metrics = run / "metrics.json"
    validation_choice = None
    if metrics.is_file():
        chosen = json.loads(metrics.read_text())["validation"]
        validation_choice = {k: chosen.get(k, "memory" if k == "map_source" else None)
                             for k in ("image_size", "map_source", "image_score")}
    return {"run": str(run), "category": config.data.category, "image_size": size, "segmentation": has_head,
            "training_steps": config.train.steps, "seed": config.train.seed,
            "synth_family_probs": list(config.synth.family_probs), "validation_choice": validation_choice,
            "rows": rows}


def markdown_table(results: list[dict], kind: str = "map_max") -> str:
    """One row per run and map source (image score ``kind``): the overall figures."""
    names = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
    lines = ["| run | size | map | " + " | ".join(names) + " |", "|---|---:|---|" + "---:|" * len(names)]
    for r in results:
        for row in r["rows"]:
            if row["image_score"] == kind:
                lines.append(f"| {Path(r['run']).name} | {r['image_size']} | {row['map_source']} | "
                             + " | ".join("n/a" if row[n] is None else f"{row[n]:.3f}" for n in names) + " |")
    return "\n".join(lines)


def type_picture(results: list[dict], path: Path, kind: str = "map_max", width: int = 640) -> None:
    """Per run and defect type, pixel AUROC and AUPRO of each map source as bars (image score ``kind``)."""
    colours = {"memory": (31, 119, 180), "head": (214, 39, 40), "fusion": (44, 160, 44)}
    groups = [(r, name) for r in results for name in next(iter(r["rows"]))["by_type"]]
    label, bar, top = 230, 6, 28
    per_group = 2 * len(colours) * bar + 14
    picture = Image.new("RGB", (width, top + len(groups) * per_group + 24), "white")
    draw = ImageDraw.Draw(picture)
    plot = width - label - 20
    for j, (source, colour) in enumerate(colours.items()):
        draw.rectangle([label + j * 120, 8, label + j * 120 + 10, 16], fill=colour)
        draw.text((label + j * 120 + 14, 6), source, fill="black")
    for i, (r, name) in enumerate(groups):
        y = top + i * per_group
        draw.text((6, y + 2), f"{Path(r['run']).name}: {name}", fill="black")
        draw.text((6, y + 14), "pixel AUROC, then AUPRO", fill=(120, 120, 120))
        rows = {row["map_source"]: row for row in r["rows"] if row["image_score"] == kind}
        k = 0
        for figure in ("pixel_auroc", "aupro"):
            for source, colour in colours.items():
                if source in rows:
                    value = rows[source]["by_type"][name][figure]
                    draw.rectangle([label, y + k * bar, label + value * plot, y + (k + 1) * bar - 1], fill=colour)
                k += 1
    unit_axis(draw, label, plot, top, top + len(groups) * per_group)
    save_png(picture, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True,
                        help="run folder(s) with config.json and checkpoint.pt")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--size", type=int, help="scoring size (default: the one the run's validation chose)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = []
    for run in args.run:
        with Stopwatch() as watch:
            result = measure_run(run, args.data_root, args.size, ValidationConfig())
        results.append(result | {"seconds": watch.seconds})
        print(markdown_table([result]), flush=True)
    out = {"runs": results, "image_scores": list(IMAGE_SCORES), "per_type": list(PER_TYPE)}
    print(markdown_table(results))
    if args.out:
        write_json(args.out, out)
        type_picture(results, args.out.with_suffix(".png"))
    return out


if __name__ == "__main__":
    main()
