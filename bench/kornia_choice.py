"""Where is kornia the better tool? Our hand-written ops against kornia's, side by side.

* anomaly-map smoothing: a hand-written separable Gaussian (reflect) vs
  ``kornia.filters.gaussian_blur2d`` (reflect; what `ssad.score.gaussian_blur` uses), on (M, 1, S, S) maps;
* AUPRO's connected components: `ssad.metrics._label_regions` (exact union-find as tensor ops)
  vs ``kornia.contrib.connected_components`` (iterated max-pooling), on defect masks;
* object-mask morphology: max-pool erosion / dilation (`ssad.synth.object_mask`) vs
  ``kornia.morphology.erosion`` / ``dilation`` with a flat square kernel.

Reports the median time of each, the ratio, and how far the results differ (max abs difference, or
for components whether the partition into regions is the same). JSON to ``--out``.

    python bench/kornia_choice.py --out bench/results/kornia_choice.json
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import kornia
import torch
import torch.nn.functional as F

from ssad.atomic import write_json
from ssad.metrics import _label_regions
from timing import median_seconds


def separable_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Two 1-D Gaussian convolutions with reflect padding, the kernel 3 sigma to each side."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _blobs(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """(count, size, size) bool masks of a few random discs and bars, like real defect masks."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    for i in range(count):  # building test data
        for _ in range(3):
            cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 6])).tolist()
            masks[i] |= (x - cx) ** 2 + (y - cy) ** 2 < r**2
        row = int(torch.randint(size, (1,), generator=g))
        masks[i, row : row + 2, size // 4 : size // 2] = True
    return masks


def _same_partition(a: torch.Tensor, b: torch.Tensor, on: torch.Tensor) -> bool:
    """Whether two labellings group the ``on`` pixels into the same regions."""
    pairs = torch.stack([a[on], b[on]], dim=1).unique(dim=0)
    return len(pairs) == len(a[on].unique()) == len(b[on].unique())


def _row(op: str, ours: Callable[[], object], theirs: Callable[[], object], repeats: int, **check: object) -> dict:
    """One result: the median seconds of our op and of kornia's, and ``check`` (how far they differ)."""
    return {"op": op, "ours_s": median_seconds(ours, repeats=repeats),
            "kornia_s": median_seconds(theirs, repeats=repeats), **check}


def _max_pool_close(fg: torch.Tensor) -> torch.Tensor:
    """Closing of (N, 1, S, S) float masks with a 7x7 square: max-pool dilation, then erosion."""
    return -F.max_pool2d(-F.max_pool2d(fg, 7, stride=1, padding=3), 7, stride=1, padding=3)


def _kornia_close(fg: torch.Tensor) -> torch.Tensor:
    """The same closing with kornia's grey-scale morphology and a flat 7x7 kernel."""
    kernel = torch.ones(7, 7)
    return kornia.morphology.erosion(kornia.morphology.dilation(fg, kernel), kernel)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rows = []

    maps = torch.rand(args.count, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    sigma = 4.0
    side = 2 * max(1, math.ceil(3 * sigma)) + 1
    ours_blur = partial(separable_blur, maps, sigma)
    kornia_blur = partial(kornia.filters.gaussian_blur2d, maps, (side, side), (sigma, sigma), border_type="reflect")
    rows.append(_row("gaussian smoothing", ours_blur, kornia_blur, args.repeats,
                     max_abs_difference=float((ours_blur() - kornia_blur()).abs().max())))

    masks = _blobs(args.count, args.size)
    # kornia needs enough iterations to cross the longest region: the side, to be safe.
    kornia_components = partial(kornia.contrib.connected_components, masks[:, None].float(), num_iterations=args.size)
    rows.append(_row("connected components (8-connected ours; kornia's max-pool propagation)",
                     partial(_label_regions, masks), kornia_components, args.repeats,
                     same_regions=_same_partition(_label_regions(masks)[0], kornia_components()[:, 0], masks)))

    fg = masks[:, None].float()
    ours_close, kornia_close = partial(_max_pool_close, fg), partial(_kornia_close, fg)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # borders: padding conventions differ
    rows.append(_row("morphology (closing, 7x7 square)", ours_close, kornia_close, args.repeats,
                     max_abs_difference=float((ours_close()[inner] - kornia_close()[inner]).abs().max())))
    for row in rows:
        row["kornia_over_ours"] = row["kornia_s"] / row["ours_s"]
        print(row, flush=True)
    env = {"torch": torch.__version__, "kornia": kornia.__version__, "threads": torch.get_num_threads(),
           "size": args.size, "count": args.count}
    write_json(args.out, {"env": env, "rows": rows})


if __name__ == "__main__":
    main()
