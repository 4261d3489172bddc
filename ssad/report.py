"""Pictures and tables of a run: ROC curves, per-test-image panels, the metrics table.

Drawn with PIL only (no plotting library): people would rather look at these than read numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from ssad.atomic import save_png
from ssad.metrics import roc_curve

__all__ = ["roc_picture", "test_panels", "pairs_picture", "selection_picture", "selection_table", "metrics_table",
           "heat_colours"]

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
        keep = _thinned(len(fpr))
        points = [at(x, y) for x, y in zip(fpr[keep].tolist(), tpr[keep].tolist())]
        colour = _CURVE_COLOURS[i % len(_CURVE_COLOURS)]
        draw.line(points, fill=colour, width=2)
        draw.text((margin + 10, margin + 10 + 16 * i), f"{name}: AUROC {area:.3f}", fill=colour)
    save_png(picture, path)


def _thinned(count: int, most: int = 4000) -> Tensor:
    """(min(count, most),) int64 evenly spaced indices of a curve of ``count`` points, both ends
    kept: a pixel ROC curve has millions of points, and only the chosen ones may become Python
    objects (millions of them would take gigabytes)."""
    if count <= most:
        return torch.arange(count)
    return torch.linspace(0, count - 1, most).round().long()


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
    images, maps = images.cpu(), maps.cpu().float()
    low, high = scale
    heat = heat_colours((maps[:, 0] - low) / max(high - low, 1e-12))  # (M, S, S, 3)
    outlined = _outlined(images, masks)
    for i, name in enumerate(names):  # writing pictures, not the hot path
        image = images[i].permute(1, 2, 0)
        overlay = (0.5 * image.float() + 0.5 * heat[i].float()).round().to(torch.uint8)
        strip = torch.cat([image, outlined[i], overlay], dim=1).numpy()
        save_png(Image.fromarray(strip), out_dir / f"{name}.png")


def _outlined(images: Tensor, masks: Tensor) -> Tensor:
    """(M, S, S, 3) uint8 copies of (M, 3, S, S) uint8 ``images`` with the edge of each (M, 1, S, S)
    bool mask drawn in red."""
    masks = masks.cpu().float()
    edge = (masks - -F.max_pool2d(-masks, 3, stride=1, padding=1))[:, 0] > 0  # the mask minus its erosion
    return torch.where(edge[..., None], torch.tensor([255, 0, 0], dtype=torch.uint8), images.cpu().permute(0, 2, 3, 1))


def pairs_picture(normal: Tensor, defective: Tensor, masks: Tensor, captions: list[str], path: Path) -> None:
    """A grid of (normal image | its defective copy, the defect outlined) pairs, two pairs a row,
    each captioned. normal, defective (M, 3, S, S) uint8; masks (M, 1, S, S) bool."""
    caption, columns = 16, 2
    left, right = normal.cpu().permute(0, 2, 3, 1), _outlined(defective, masks)
    count, side = len(normal), normal.shape[-1]
    rows = -(-count // columns)
    canvas = Image.new("RGB", (columns * 2 * side + (columns - 1) * 8, rows * (side + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(count):  # a picture, not the hot path
        x, y = (i % columns) * (2 * side + 8), (i // columns) * (side + caption)
        canvas.paste(Image.fromarray(torch.cat([left[i], right[i]], dim=1).numpy()), (x, y + caption))
        draw.text((x + 3, y + 2), captions[i], fill="black")
    save_png(canvas, path)


def selection_picture(figures: list, chosen: tuple[int, str, str], path: Path, width: int = 560) -> None:
    """Horizontal bars of each candidate's validation figures (image AUROC, pixel AUROC, AUPRO),
    one group per (size, map source, image score), the chosen one's label in red. ``figures``:
    `ssad.selection.CandidateFigures`; ``chosen``: the chosen one's ``setting``."""
    names = ("image_auroc", "pixel_auroc", "aupro")
    label_width, bar_height, gap, top = 170, 7, 8, 28
    group = len(names) * bar_height + gap
    picture = Image.new("RGB", (width, top + len(figures) * group + 24), "white")
    draw = ImageDraw.Draw(picture)
    plot = width - label_width - 50
    for j, name in enumerate(names):
        x = label_width + j * 130
        draw.rectangle([x, 8, x + 10, 16], fill=_CURVE_COLOURS[j])
        draw.text((x + 14, 6), name.replace("_", " "), fill="black")
    for i, f in enumerate(figures):
        y = top + i * group
        mark = f.setting == tuple(chosen)
        draw.text((6, y + 3), f"{f.image_size} px, {f.map_source}, {f.image_score}" + (" <" if mark else ""),
                  fill=(200, 0, 0) if mark else "black")
        for j, name in enumerate(names):
            value = getattr(f, name)
            y0 = y + j * bar_height
            draw.rectangle([label_width, y0, label_width + value * plot, y0 + bar_height - 2], fill=_CURVE_COLOURS[j])
        draw.text((label_width + plot + 6, y + 3), f"{f.objective:.3f}", fill="black")  # what the rule compares
    unit_axis(draw, label_width, plot, top, top + len(figures) * group)
    save_png(picture, path)


def unit_axis(draw: ImageDraw.ImageDraw, left: int, length: float, top: int, bottom: int) -> None:
    """Grid lines and labels at 0, 0.5 and 1 of a horizontal bar chart whose value 0 is at ``left``
    and 1 at ``left + length`` pixels, its bars between ``top`` and ``bottom``."""
    for tick in (0.0, 0.5, 1.0):
        x = left + tick * length
        draw.line([x, top - 4, x, bottom], fill=(200, 200, 200))
        draw.text((x - 8, bottom + 4), f"{tick:.1f}", fill="black")


def selection_table(selection) -> str:
    """The validation figures of every candidate as a plain-text table, the chosen one marked, and
    the rule (`ssad.selection.Selection`)."""
    if not selection.figures:
        return "validation: " + " ".join(selection.notes)
    rows = [{"size": f.image_size, "map": f.map_source, "image score": f.image_score, "image AUROC": f.image_auroc,
             "pixel AUROC": f.pixel_auroc, "AUPRO": f.aupro, "mean": f.objective,
             "": "<- chosen" if f.setting == selection.setting else ""}
            for f in selection.figures]
    head = (f"validation: synthetic {'/'.join(selection.families)} defects on {selection.defective_images} of "
            f"{selection.normal_images} held-out normal images ({selection.folds} folds, {selection.seconds:.0f} s); "
            f"rule: {selection.rule}")
    return head + "\n" + metrics_table(rows, list(rows[0]))


def metrics_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain-text table, one row per dict, numbers with three decimals, a missing figure (None) "n/a"."""
    cells = [[f"{row[c]:.3f}" if isinstance(row[c], float) else "n/a" if row[c] is None else str(row[c])
              for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
