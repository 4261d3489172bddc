"""Pictures and tables of a run: ROC curves, per-test-image panels, the metrics table.

Drawn with PIL only (no plotting library): people would rather look at these than read numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from ssad.metrics import roc_curve
from ssad.synth.preview import save_png

__all__ = ["roc_picture", "test_panels", "metrics_table", "heat_colours"]

_CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))
# Anchor colours of the heat map, from low to high (dark blue, cyan, yellow, red).
_HEAT = torch.tensor([[0, 0, 130], [0, 200, 255], [255, 230, 0], [220, 0, 0]], dtype=torch.float)


def roc_picture(curves: dict[str, tuple[Tensor, Tensor]], path: Path, size: int = 480) -> None:
    """A square ROC plot of ``curves``: name -> (scores (N,), labels (N,)), AUROC in the legend."""
    margin = 48
    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    plot = size - 2 * margin

    def at(fpr: float, tpr: float) -> tuple[float, float]:
        return margin + fpr * plot, size - margin - tpr * plot

    draw.rectangle([at(0, 1), at(1, 0)], outline="black")
    draw.line([at(0, 0), at(1, 1)], fill=(170, 170, 170), width=1)
    for tick in (0.0, 0.5, 1.0):
        draw.text((at(tick, 0)[0] - 8, size - margin + 6), f"{tick:.1f}", fill="black")
        draw.text((margin - 30, at(0, tick)[1] - 6), f"{tick:.1f}", fill="black")
    draw.text((size // 2 - 70, size - 22), "false positive rate", fill="black")
    draw.text((6, 8), "true positive rate", fill="black")
    for i, (name, (scores, labels)) in enumerate(curves.items()):
        fpr, tpr, _ = roc_curve(scores.flatten(), labels.flatten())
        area = float(torch.trapezoid(tpr, fpr))
        points = _thin([at(float(x), float(y)) for x, y in zip(fpr, tpr)])
        colour = _CURVE_COLOURS[i % len(_CURVE_COLOURS)]
        draw.line(points, fill=colour, width=2)
        draw.text((margin + 10, margin + 10 + 16 * i), f"{name}: AUROC {area:.3f}", fill=colour)
    save_png(picture, path)


def _thin(points: list[tuple[float, float]], most: int = 4000) -> list[tuple[float, float]]:
    """At most ``most`` points of a curve (pixel ROC curves have millions), keeping both ends."""
    if len(points) <= most:
        return points
    keep = np.linspace(0, len(points) - 1, most).round().astype(int)
    return [points[i] for i in keep]


def heat_colours(values: Tensor) -> Tensor:
    """(…) values in [0, 1] -> (…, 3) uint8 colours of the heat scale."""
    x = values.clamp(0, 1) * (len(_HEAT) - 1)
    low = x.floor().long().clamp_max(len(_HEAT) - 2)
    t = (x - low)[..., None]
    return (_HEAT[low] * (1 - t) + _HEAT[low + 1] * t).round().to(torch.uint8)


def test_panels(
    images: Tensor,
    masks: Tensor,
    maps: Tensor,
    names: list[str],
    out_dir: Path,
    scale: tuple[float, float],
) -> None:
    """One picture per image: the image, a mask outlined (the ground truth of a test image, or the
    predicted defect region), the anomaly map overlaid.

    Args: images (M, 3, S, S) uint8; masks (M, 1, S, S) bool; maps (M, 1, S, S) float; names, one
    file stem per image; scale (low, high): map values shown as the coldest and hottest colour
    (shared by all images, so pictures compare).
    """
    images, masks, maps = images.cpu(), masks.cpu(), maps.cpu().float()
    low, high = scale
    heat = heat_colours((maps[:, 0] - low) / max(high - low, 1e-12))  # (M, S, S, 3)
    edge = (masks.float() - -F.max_pool2d(-masks.float(), 3, stride=1, padding=1))[:, 0] > 0
    for i, name in enumerate(names):  # writing pictures, not the hot path
        image = images[i].permute(1, 2, 0)
        truth = torch.where(edge[i, ..., None], torch.tensor([255, 0, 0], dtype=torch.uint8), image)
        overlay = (0.5 * image.float() + 0.5 * heat[i].float()).round().to(torch.uint8)
        strip = torch.cat([image, truth, overlay], dim=1).numpy()
        save_png(Image.fromarray(strip), out_dir / f"{name}.png")


def metrics_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain-text table, one row per dict, numbers with three decimals."""
    cells = [[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
