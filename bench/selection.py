"""Does the synthetic validation set rank the settings as the real defects do? The grid, side by side.

For each run folder given (its checkpoint and category), every candidate setting (each scoring size
of ``validation.sizes`` x each image score) gets two sets of figures:

- **validation**: synthetic defects on held-out normal images, as `ssad.selection` measures them
  (also on each validation family alone, to see which families validate);
- **test**: the category's real test split, scored by scorers fitted on all training images, as
  the run's detector is.

Per run it reports the rank correlation (Spearman, ties averaged) of the validation ranking with the
test ranking, for the rule's objective (the mean of image AUROC, pixel AUROC and AUPRO) and for
image AUROC alone, and the test figures of the candidate the rule picks beside the best
candidate's and the hand-chosen preset's (320 px, map maximum, chosen on bottle and screw's test
sets). JSON out, a Markdown table printed, and a scatter plot of validation against test objective.

    python bench/selection.py --data-root ../shared/data/mvtec --run runs/base_bottle runs/base_screw \
        --out bench/results/selection_mvtec.json
    python bench/selection.py --data-root ~/.cache/ssad/demo --run runs/demo/* --out bench/results/selection_demo.json
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from timing import Stopwatch

from ssad.atomic import save_png, write_json
from ssad.checkpoint import load_run_model
from ssad.config import ScoreConfig, ValidationConfig
from ssad.data import CategoryData, load_category
from ssad.detector import coarse_statistics, fit_scorers, score_coarse
from ssad.image_score import IMAGE_SCORES, ImageScore
from ssad.metrics import aupro, image_auroc, pixel_auroc
from ssad.model import PretextModel
from ssad.selection import CandidateFigures, choose, validate_sizes

#: The hand-chosen setting configs/cpu.toml names as the alternative to validation: 320 px, map maximum.
PRESET = (320, "map_max")
FIGURES = ("image_auroc", "pixel_auroc", "aupro")
#: Images whose full-size maps are drawn at once.
BATCH = 32


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation of two equally long lists (ties get their average rank); None
    when either list is constant (no ranking to agree with)."""
    def ranks(values: list[float]) -> torch.Tensor:
        x = torch.tensor(values, dtype=torch.float64)
        order = x.argsort()
        rank = torch.empty_like(x)
        rank[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():  # average the ranks of ties
            tied = x == value
            rank[tied] = rank[tied].mean()
        return rank

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def test_figures(model: PretextModel, data: CategoryData, score: ScoreConfig, normal: torch.Tensor,
                 kinds: list[str]) -> list[CandidateFigures]:
    """Each image score's figures on the real test split at ``data``'s size (scorers fitted on all
    training images; the fusion standardised on the held-out ``normal`` (N, 3) statistics)."""
    detector = fit_scorers(model, data.train, score, data.moves, "map_max", density=True)
    maps, statistics = score_coarse(detector.anomaly_map, detector.coarse_scores_of(data.test), BATCH)
    known = data.test_mask_known
    has_masks = bool((known & (data.test_labels == 1)).any())
    pixel = pixel_auroc(maps[known], data.test_masks[known]) if has_masks else float("nan")
    region = aupro(maps[known], data.test_masks[known]) if has_masks else float("nan")
    figures = []
    for kind in kinds:
        scorer = ImageScore(kind)
        if kind == "fusion":
            scorer.calibrate(normal)
        figures.append(CandidateFigures(data.image_size, kind, image_auroc(scorer(statistics), data.test_labels),
                                        pixel, region))
    return figures


def agreement(validation: list[CandidateFigures], test: list[CandidateFigures]) -> dict:
    """How the validation ranking agrees with the test ranking of the same candidates."""
    picked = choose(validation)
    index = validation.index(picked)
    objective = [t.objective for t in test]
    out = {
        "spearman_objective": spearman([v.objective for v in validation], objective),
        "spearman_image_auroc": spearman([v.image_auroc for v in validation], [t.image_auroc for t in test]),
        "picked": [picked.image_size, picked.image_score],
        "picked_test": {name: getattr(test[index], name) for name in FIGURES} | {"objective": objective[index]},
        "best_test_objective": max(objective),
        "best_test_image_auroc": max(t.image_auroc for t in test),
    }
    preset = [i for i, v in enumerate(validation) if (v.image_size, v.image_score) == PRESET]
    if preset:
        out["preset_test"] = {name: getattr(test[preset[0]], name) for name in FIGURES} \
            | {"objective": objective[preset[0]]}
    return out


def compare(run: Path, data_root: Path, validation: ValidationConfig, progress: bool) -> dict:
    """The whole grid on one run (`grid`), and the seconds it took."""
    with Stopwatch() as watch:
        result = grid(run, data_root, validation, progress)
    return result | {"seconds": watch.seconds}


def grid(run: Path, data_root: Path, validation: ValidationConfig, progress: bool) -> dict:
    """The whole grid on one run: validation (all families and each alone) and test figures."""
    config, model = load_run_model(run)
    category, training_size = config.data.category, config.data.image_size
    kinds = list(IMAGE_SCORES)
    sizes = validation.candidate_sizes(training_size)
    data = {s: load_category(data_root, category, image_size=s, progress=False) for s in sizes}
    rows, by_family = [], {name: [] for name in validation.families}
    validation_all, test_all = [], []
    # The run's own validation (`ssad.selection.validate_sizes`), with the density for every image score.
    for scored in validate_sizes(model, data.__getitem__, config.score, validation, sizes, density=True):
        size = scored.image_size
        figures = scored.figures(kinds)
        for f, name in enumerate(validation.families):
            by_family[name] += scored.figures(kinds, rows=scored.family == f)
        normal = coarse_statistics(scored.anomaly_map("memory"), scored.normal, BATCH)
        tests = test_figures(model, data[size], config.score, normal, kinds)
        validation_all += figures
        test_all += tests
        for v, t in zip(figures, tests):
            rows.append({"image_size": size, "image_score": v.image_score,
                         "validation": {name: getattr(v, name) for name in FIGURES} | {"objective": v.objective},
                         "test": {name: getattr(t, name) for name in FIGURES} | {"objective": t.objective}})
            if progress:
                print(f"{category:12s} {size:4d} px {v.image_score:8s}  validation "
                      + " / ".join(f"{getattr(v, n):.3f}" for n in FIGURES)
                      + "  test " + " / ".join(f"{getattr(t, n):.3f}" for n in FIGURES), flush=True)
    for i, row in enumerate(rows):
        row["validation_by_family"] = {name: {n: getattr(by_family[name][i], n) for n in FIGURES}
                                       for name in validation.families}
    return {
        "run": str(run), "category": category, "training_size": training_size, "moves": data[sizes[0]].moves,
        "training_images": len(data[sizes[0]].train), "validation_images": len(scored.defective),
        "folds": validation.folds,
        "rows": rows,
        "agreement": agreement(validation_all, test_all),
        "agreement_by_family": {name: agreement(by_family[name], test_all) for name in validation.families},
    }


def markdown_table(results: list[dict]) -> str:
    """One row per run: rank agreement, and the test figures of the pick, the best and the preset."""
    def triple(figures: dict | None) -> str:
        return "n/a" if figures is None else " / ".join(f"{figures[n]:.3f}" for n in FIGURES)

    def rho(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = ["| category | Spearman, objective | Spearman, image AUROC | picked | its test figures | "
             "preset's test figures | best test objective |", "|---|---:|---:|---|---|---|---:|"]
    for r in results:
        a = r["agreement"]
        lines.append(f"| {r['category']} | {rho(a['spearman_objective'])} | {rho(a['spearman_image_auroc'])} | "
                     f"{a['picked'][0]} px, {a['picked'][1]} | {triple(a['picked_test'])} | "
                     f"{triple(a.get('preset_test'))} | {a['best_test_objective']:.3f} |")
    return "\n".join(lines)


def scatter(results: list[dict], path: Path, size: int = 520) -> None:
    """Validation objective (x) against test objective (y) for every candidate of every run, one
    colour per run, the picked candidate as a larger dot."""
    margin = 50
    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    values = [r[k]["objective"] for res in results for r in res["rows"] for k in ("validation", "test")]
    low, high = min(values) - 0.01, max(values) + 0.01
    plot = size - 2 * margin

    def at(x: float, y: float) -> tuple[float, float]:
        return margin + (x - low) / (high - low) * plot, size - margin - (y - low) / (high - low) * plot

    draw.rectangle([at(low, high), at(high, low)], outline="black")
    draw.line([at(low, low), at(high, high)], fill=(190, 190, 190))
    draw.text((size // 2 - 80, size - 22), "validation objective (synthetic)", fill="black")
    draw.text((6, 8), "test objective (real defects)", fill="black")
    colours = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
               (227, 119, 194), (127, 127, 127))
    for i, res in enumerate(results):
        colour = colours[i % len(colours)]
        picked = tuple(res["agreement"]["picked"])
        for row in res["rows"]:
            x, y = at(row["validation"]["objective"], row["test"]["objective"])
            radius = 6 if (row["image_size"], row["image_score"]) == picked else 3
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
        draw.text((margin + 8, margin + 6 + 14 * i), res["category"], fill=colour)
    for tick in (low, (low + high) / 2, high):
        draw.text((at(tick, low)[0] - 12, size - margin + 6), f"{tick:.2f}", fill="black")
        draw.text((6, at(low, tick)[1] - 6), f"{tick:.2f}", fill="black")
    save_png(picture, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True,
                        help="run folder(s) with config.json and checkpoint.pt")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(ValidationConfig.sizes),
                        help="candidate scoring sizes (0: the training size)")
    parser.add_argument("--images", type=int, default=ValidationConfig.images,
                        help="held-out images given a synthetic defect")
    parser.add_argument("--families", nargs="+", default=list(ValidationConfig.families),
                        help="validation families, taking turns over the images; each is also measured alone")
    parser.add_argument("--out", type=Path, help="JSON file; the scatter plot goes beside it as .png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    validation = ValidationConfig(sizes=tuple(args.sizes), images=args.images, families=tuple(args.families))
    results = [compare(run, args.data_root, validation, not args.quiet) for run in args.run]
    print(markdown_table(results))
    result = {"validation": asdict(validation), "preset": list(PRESET), "runs": results}
    if args.out:
        write_json(args.out, result)
        scatter(results, args.out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
