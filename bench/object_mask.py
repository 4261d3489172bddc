"""Do object masks hold the real defects? The colour-only and the colour-and-texture estimates.

For each category it can read, the share of each defective test image's ground-truth pixels that
lie inside the object mask (coverage: mean and minimum over the images) and the mask's share of
the image, for each foreground method. The masks are the ones training would use: one per
category for objects that sit still (combined over the training images), the test image's own for
objects that move, all ones for textures.

    python bench/object_mask.py --data-root ../shared/data/mvtec --out bench/results/object_mask.json

Reads bottle and screw under --data-root where present and makes the demo categories in a
temporary folder. Writes a picture per category and method (worst-covered test images: image with
the mask's outline, mask, ground truth) under --pictures (default runs/object_mask/: pictures of
MVTec AD images stay out of the repository, its licence forbids redistribution).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from timing import Stopwatch

from ssad.atomic import save_png, write_json
from ssad.data import DEMO_CATEGORIES, CategoryData, load_category, make_demo_dataset
from ssad.data.categories import CategoryInfo
from ssad.data.objects import MARGIN, category_object_masks, estimate_object_masks

#: method name -> `object_mask` options. "old (colour)" is the colour-only estimate: colour distance
#: and Otsu's threshold alone, no regrowing, the same 3% margin for every object; "new" the defaults.
#: The names label the rows of bench/results/object_mask*.json.
METHODS = {
    "old (colour)": dict(cues=("colour",), border_quantile=None, regrow=0.0, margin=0.03),
    "new (colour+texture)": {},
}
MVTEC = ("bottle", "screw")


def masks_for_test_images(data: CategoryData, options: dict) -> torch.Tensor:
    """(M, 1, S, S) bool: the mask training would use for each test image's object."""
    info = CategoryInfo(data.category, data.kind, data.moves)
    if data.moves:
        return estimate_object_masks(data.test, moves=True, **options)[0]
    return category_object_masks(data.train, info, **options).expand(len(data.test), -1, -1, -1)


def measure(data: CategoryData, options: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Coverage of the defect pixels and share of the image; also the masks and per-image coverage."""
    with Stopwatch(data.test.device) as watch:
        masks = masks_for_test_images(data, options)
    seconds = watch.seconds
    defective = data.test_labels.bool()
    truth = data.test_masks[defective]
    inside = (masks[defective] & truth).flatten(1).sum(1).double()
    coverage = inside / truth.flatten(1).sum(1).clamp_min(1)
    share = masks.flatten(1).double().mean(1)
    row = {
        "defective_images": int(defective.sum()),
        "coverage_mean": float(coverage.mean()),
        "coverage_min": float(coverage.min()),
        "share_mean": float(share.mean()),
        "share_max": float(share.max()),
        "seconds": seconds,
    }
    return row, masks, coverage


def picture(data: CategoryData, masks: torch.Tensor, coverage: torch.Tensor, path: Path, rows: int = 6) -> None:
    """The worst-covered defective test images: image with the mask outlined, mask, ground truth."""
    defective = data.test_labels.bool().nonzero().squeeze(1)
    worst = defective[coverage.argsort()[:rows]]
    size = data.image_size
    canvas = Image.new("RGB", (3 * size, len(worst) * (size + 16)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, i in enumerate(worst.tolist()):
        mask = masks[i].float()
        edge = (mask - -F.max_pool2d(-mask[None], 3, stride=1, padding=1)[0])[0] > 0
        image = data.test[i].permute(1, 2, 0).clone()
        image[edge] = torch.tensor([255, 40, 40], dtype=torch.uint8)
        tiles = [image, masks[i, 0, ..., None].expand(-1, -1, 3), data.test_masks[i, 0, ..., None].expand(-1, -1, 3)]
        y = r * (size + 16)
        for c, tile in enumerate(tiles):
            tile = tile if tile.dtype == torch.uint8 else tile.to(torch.uint8) * 255
            canvas.paste(Image.fromarray(tile.cpu().numpy()), (c * size, y + 16))
        covered = float(coverage[(defective == i).nonzero()[0, 0]])
        draw.text((3, y + 2), f"{data.test_defect_types[i]} {data.test_paths[i].stem}: "
                              f"{covered:.0%} of the defect in the mask (image | mask | ground truth)", fill="black")
    save_png(canvas, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/mvtec"))
    parser.add_argument("--categories", nargs="+", default=[*MVTEC, *DEMO_CATEGORIES])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="JSON to write")
    parser.add_argument("--pictures", type=Path, default=Path("runs/object_mask"))
    args = parser.parse_args(argv)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        demo_root, cache = Path(scratch) / "demo", Path(scratch) / "cache"
        demo = [c for c in args.categories if c in DEMO_CATEGORIES]
        if demo:
            make_demo_dataset(demo_root, categories=demo, image_size=args.image_size)
        for category in args.categories:
            root = demo_root if category in DEMO_CATEGORIES else args.data_root
            if not (root / category / "train" / "good").is_dir():
                print(f"skipped {category}: not found under {root}")
                continue
            data = load_category(root, category, args.image_size, cache_dir=cache, progress=False)
            results[category] = {"kind": "moving object" if data.moves else data.kind}
            for method, options in METHODS.items():
                row, masks, coverage = measure(data, options)
                results[category][method] = row
                slug = method.split()[0]
                picture(data, masks, coverage, args.pictures / f"{category}_{slug}.png")

    header = f"| category | {' | '.join(f'{m}: coverage mean / min, share' for m in METHODS)} |"
    lines = [header, "|---|" + "---:|" * len(METHODS)]
    for category, row in results.items():
        cells = [f"{row[m]['coverage_mean']:.3f} / {row[m]['coverage_min']:.3f}, {row[m]['share_mean']:.2f}"
                 for m in METHODS]
        lines.append(f"| {category} | {' | '.join(cells)} |")
    print("\n".join(lines))
    report = {"image_size": args.image_size, "methods": {m: {"object_mask": o} for m, o in METHODS.items()},
              "margin_by_kind_new": MARGIN, "results": results}
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
