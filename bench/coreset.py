"""What the kNN memory's bounded coreset costs in accuracy: test figures and fit time per candidates budget.

For each run folder given (``checkpoint.pt`` and ``config.json``) at one scoring size (``--size``;
by default the size the run's validation chose), the memory is fitted on all normal training
images with each ``--candidates`` budget (`ssad.config.ScoreConfig.patch_candidates`; 0: every
patch is a candidate, the coreset chosen among all of them), and the test split scored with the
map maximum as image score: image AUROC, pixel AUROC, AUPRO, F1-max, and the fit's seconds. This
reads the test split: it measures what a budget costs, it is not how a run chooses one.

    python bench/coreset.py --data-root ../shared/data/mvtec --run runs/bottle runs/screw \\
        --candidates 0 200000 50000 --out bench/results/coreset_mvtec.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from map_sources import chosen_size
from timing import Stopwatch

from ssad.atomic import write_json
from ssad.checkpoint import load_run_model
from ssad.data import load_category
from ssad.detector import fit_scorers
from ssad.evaluate import measure

#: Images scored at once.
BATCH = 32
FIGURES = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")


def measure_run(run: Path, data_root: Path, size: int | None, budgets: list[int]) -> dict:
    """Every candidates budget's test figures and fit seconds on one run at one size."""
    config, model = load_run_model(run)
    size = size or chosen_size(run, config.data.image_size)
    data = load_category(data_root, config.data.category, image_size=size, progress=False)
    patches = len(data.train) * (size // 8) ** 2  # layer2's grid: one feature per 8 x 8 pixels
    rows = []
    for budget in budgets:
        score = replace(config.score, patch_candidates=budget or max(patches, config.score.patch_memory))
        with Stopwatch() as watch:
            detector = fit_scorers(model, data.train, score, data.moves, "map_max")
        scores, maps = detector.score_all(data.test, BATCH)
        figures = measure(scores, maps, data.test_labels, data.test_masks, data.test_mask_known).metrics
        rows.append({"candidates": budget, "all_patches": patches, "fit_seconds": watch.seconds,
                     **{name: figures[name] for name in FIGURES}})
        print(f"{run.name} {size} px, candidates {budget or 'all'}: "
              + ", ".join(f"{name} {figures[name]:.4f}" for name in FIGURES) + f", fit {watch.seconds:.0f} s",
              flush=True)
    return {"run": str(run), "category": config.data.category, "image_size": size,
            "training_images": len(data.train), "memory": config.score.patch_memory, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--size", type=int, help="scoring size (default: the one the run's validation chose)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[0, 200_000],
                        help="candidates budgets; 0: every patch")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = {"runs": [measure_run(run, args.data_root, args.size, args.candidates) for run in args.run]}
    if args.out:
        write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
