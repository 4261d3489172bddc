"""``python -m ssad.synth export``: synthetic anomalies of a category, on disk, in MVTec AD layout.

    python -m ssad.synth export --category screw --data-root ../shared/data/mvtec --n 500 --out synthetic/

writes ``OUT/<category>/`` with

* ``train/good/NNNNNN.png``: the samples drawn normal (label 0: colour-jittered training images);
* ``test/<kind>/NNNNNN.png`` and ``ground_truth/<kind>/NNNNNN_mask.png``: the defective ones, by
  kind (polygon, scar, perlin, poisson), with their masks;
* ``params.jsonl``: one line per sample: index, file, label, kind, seed and its parameters (the
  small ones; the Perlin lattices and masks are left out, `SampleStreams(seed, [index])` redraws them).

Sample ``i`` is made from training image ``i mod N`` with per-sample streams (`SampleStreams`), so
it is the same whatever ``--batch-size``. The folder is written under a temporary name and renamed when
complete: an existing ``OUT/<category>`` is never overwritten, an interrupted export leaves nothing
half-written under that name. ``load_category(OUT, category)`` reads it back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ssad.cli import command_parser
from ssad.config import load_config
from ssad.data import DataError, load_category, resolve_data_root
from ssad.data.layout import GOOD
from ssad.synth import DefectSynthesizer, SampleStreams, SynthOutput
from ssad.synth.config import defect_kind

__all__ = ["export_dataset", "build_parser", "main"]


def _kind(label: int, family: int) -> str:
    """The folder of a sample: its `defect_kind`, normal ones under MVTec AD's name for them."""
    kind = defect_kind(label, family)
    return GOOD if kind == "normal" else kind


def export_dataset(
    root: Path,
    category: str,
    out: Path,
    count: int,
    *,
    image_size: int = 256,
    seed: int = 0,
    batch_size: int = 64,
    config_paths: list[str] = (),
    overrides: list[str] = (),
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Write ``count`` synthetic samples of ``root/category`` to ``out/category``; returns that
    folder. Settings come from TOML files and ``section.key=value`` overrides, as for a run."""
    if count < 1:
        raise ValueError(f"--n {count}: export at least one sample.")
    target = Path(out) / category
    if target.exists():
        raise ValueError(f"{target} exists already and is never overwritten; choose another --out.")
    config = load_config(list(config_paths), list(overrides))
    data = load_category(root, category, image_size=image_size, device=device, progress=progress)
    synth = DefectSynthesizer(config.synth)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted export left
    lines = []
    with tqdm(total=count, desc=f"export {category}", unit="image", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            indices = torch.arange(start, min(start + batch_size, count), device=data.train.device)
            picked = indices % len(data.train)
            masks = data.object_masks_at(picked)
            sources = None if data.source_images is None else data.source_images[indices % len(data.source_images)]
            result = synth(data.train[picked], masks, sources, SampleStreams(seed, indices))
            lines += _write_batch(staging, indices, result, seed)
            bar.update(len(indices))
    (staging / "params.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    staging.rename(target)
    return target


def _write_batch(folder: Path, indices: torch.Tensor, result: SynthOutput, seed: int) -> list[dict]:
    images = result.images.cpu().expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    masks = result.masks.cpu()[:, 0].numpy()
    family = result.params.get("family", torch.zeros_like(result.labels)).cpu()
    lines = []
    for i, index in enumerate(indices.tolist()):  # writing files, not the hot path
        label = int(result.labels[i])
        kind = _kind(label, int(family[i]))
        name = f"{index:06d}"
        file = Path("train" if kind == GOOD else "test") / kind / f"{name}.png"
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / file)
        if kind != GOOD:
            mask_file = folder / "ground_truth" / kind / f"{name}_mask.png"
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(mask_file)
        small = {k: v[i].tolist() for k, v in result.params.items() if v[i].numel() <= 64}
        lines.append({"index": index, "file": str(file), "label": label, "kind": kind, "seed": seed, **small})
    return lines


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m ssad.synth export`` (``ssad synth export``: pass its ``prog``)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--category", required=True, help="category folder under the data root")
    p.add_argument("--data-root",
                   help="folder holding <category>/train/good (default: $SSAD_DATA_ROOT, else ./datasets/MVTecAD)")
    p.add_argument("--out", type=Path, required=True, help="folder to write <category>/ into")
    p.add_argument("--n", type=int, default=200, help="number of samples")
    p.add_argument("--image-size", type=int, default=256, help="square image side the category is read at")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-sample streams")
    p.add_argument("--batch-size", type=int, default=64, help="samples per synthesizer call (the output is the same)")
    p.add_argument("--config", action="append", default=[], metavar="TOML", help="settings ([synth] section)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument("--device", default="cpu", help="device the samples are made on")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        folder = export_dataset(resolve_data_root(args.data_root), args.category, args.out, args.n,
                                image_size=args.image_size, seed=args.seed, batch_size=args.batch_size,
                                config_paths=args.config, overrides=args.set, device=args.device,
                                progress=not args.no_progress)
    except (ValueError, FileNotFoundError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} samples to {folder} (MVTec AD layout; params.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
