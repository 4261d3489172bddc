"""``python -m ssad.predict``: score new images with a run's detector.

    python -m ssad.predict --run runs/screw/20261201-2140 new_images/ 'line3/*.png' --maps

Paths are files, folders (searched recursively for images) or globs. Images are read as the data
layer reads them (any format PIL opens, resized to the detector's image size) and scored in
batches on the device. Writes ``predictions.csv`` (path, score, anomalous, at the run's thresholds)
into ``--out`` (default ``RUN/predictions/<timestamp>``; never overwritten) and, with ``--maps``,
one picture per image: the image | its anomalous region outlined | the anomaly map. An unreadable
input is named on stderr and skipped; the others are still scored, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssad.atomic import atomic_write
from ssad.cli import command_parser
from ssad.data.decode import read_image
from ssad.data.errors import BadDataError
from ssad.data.layout import find_images
from ssad.detector import THRESHOLDS, Detector, find_detector, load_detector
from ssad.report import test_panels

__all__ = ["main", "expand_paths", "predict"]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m ssad.predict`` (``ssad predict``: pass its ``prog``)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--run", type=Path, required=True,
                   help="run folder holding detector.pt, or a folder of runs (runs/<category>): the newest")
    p.add_argument("paths", nargs="+", help="image files, folders or globs")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/predictions/<timestamp>)")
    p.add_argument("--maps", action="store_true", help="also write one anomaly-map picture per image")
    p.add_argument("--thresholds", choices=THRESHOLDS,
                   help="'f1': F1-max on the run's test split (default when it had one); "
                        "'normal': from normal training images only")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def expand_paths(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named by ``patterns`` (files, folders searched recursively, globs), in order and
    without repeats; and one error line per pattern that names nothing."""
    found: list[Path] = []
    errors: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = find_images(path)
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            matches = []
        if not matches:
            what = "no images in the folder" if path.is_dir() else "matches no file" if glob.has_magic(pattern) \
                else "no such file"
            errors.append(f"{pattern}: {what}")
        found.extend(matches)
    return list(dict.fromkeys(found)), errors


def predict(
    detector: Detector,
    paths: list[Path],
    out_dir: Path,
    maps: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[dict[str, object]], list[str]]:
    """Score ``paths`` with ``detector``; write ``out_dir/predictions.csv`` (and map pictures).
    Returns the rows written and one error line per file that could not be read."""
    device = next(detector.parameters()).device
    rows: list[dict[str, object]] = []
    errors: list[str] = []
    # Colour scale of the pictures: the pixel threshold sits in its middle, whatever the run.
    threshold = float(getattr(detector, f"pixel_threshold_{detector.thresholds}"))
    low = min(0.0, threshold)
    scale = (low, 2 * threshold - low)
    bar = tqdm(total=len(paths), desc="predict", unit="image", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch, names = [], []
        for path in paths[start : start + batch_size]:
            try:
                batch.append(read_image(path, detector.image_size)[0])
                names.append(path)
            except BadDataError as error:
                errors.append(str(error))
        bar.update(len(paths[start : start + batch_size]))
        if not batch:
            continue
        images = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device)
        out = detector(images)
        for i, path in enumerate(names):
            rows.append({"path": str(path), "score": float(out.scores[i]), "anomalous": int(out.anomalous[i])})
        if maps:
            stems = [f"{start + i:05d}_{path.stem}" for i, path in enumerate(names)]
            test_panels(images, out.defect_masks, out.maps, stems, out_dir / "maps", scale)
    bar.close()
    atomic_write(out_dir / "predictions.csv", lambda tmp: tmp.write_text(_csv(rows)))
    return rows, errors


def _csv(rows: list[dict[str, object]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["path", "score", "anomalous"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = find_detector(args.run)
    out_dir = args.out or path.parent / "predictions" / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"output folder {out_dir} exists already and is never overwritten; choose another --out.")
        detector = load_detector(path, device)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.thresholds:
        detector.use_thresholds(args.thresholds)
    paths, errors = expand_paths(args.paths)
    rows, read_errors = predict(detector, paths, out_dir, args.maps, args.batch_size, not args.no_progress)
    errors += read_errors
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    flagged = sum(int(r["anomalous"]) for r in rows)
    print(f"{len(rows)} images scored, {flagged} anomalous ({detector.thresholds} thresholds); "
          f"{out_dir / 'predictions.csv'}" + (f"; {len(errors)} inputs skipped" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
