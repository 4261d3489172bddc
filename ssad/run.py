"""``python -m ssad.run``: the whole job for one category, into one run folder.

    python -m ssad.run --category bottle --data-root ../shared/data/mvtec --config configs/cpu.toml
    python -m ssad.run --demo                      # offline, on procedural demo data

Each run trains the pretext model (with ``train.segmentation``, its segmentation head too),
chooses the detector's scoring size, map source and image score on a synthetic validation set (`ssad.selection`: defects the engine makes on held-out normal images;
settings given in the config are kept), fits the detector on the normal training images, scores
the test images and writes ``runs/<category>/<timestamp>/`` (or ``--out``): ``config.json`` (the
resolved config), ``meta.json`` (versions, seed, device, initialisation, what the data layer
decided about the category, the pretext accuracy, the scoring settings and who chose them,
notes), ``train_log.jsonl``, ``checkpoint.pt``, ``detector.pt`` (written before the test metrics;
for `python -m ssad.predict` and `python -m ssad.export`), ``metrics.json`` (a metric the test
split cannot give is null, with a note; the validation figures of every candidate and the rule),
``synthetic_samples.png``, ``validation.png`` and ``validation_samples.png``, ``roc.png`` and
``test_images/<defect>_<stem>.png`` (image | ground truth | anomaly map). A run folder is never
overwritten; ``--resume`` continues the run in ``--out`` (or the newest run of the category), and
refits and rewrites everything after training (a finished run only refits: the way to give an
older run folder its ``detector.pt``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import ssad
from ssad.atomic import save_png, write_json
from ssad.cli import command_parser
from ssad.config import RunConfig, load_config
from ssad.cpu import freed_memory_kept
from ssad.data import (
    DEMO_CATEGORIES,
    CategoryData,
    DataError,
    default_cache_dir,
    download_category,
    load_category,
    make_demo_dataset,
    resolve_data_root,
)
from ssad.evaluate import METRICS, Evaluation, evaluate
from ssad.report import metrics_table, pairs_picture, roc_picture, selection_picture, selection_table, test_panels
from ssad.selection import Selection, select_and_fit, validation_set
from ssad.synth import DefectSynthesizer
from ssad.synth.preview import render_grid
from ssad.train import init_distributed, pretext_accuracy, train

__all__ = ["main", "build_parser", "resolve_run_config", "run_one", "RunOptions", "RunNotes", "METRICS"]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m ssad.run`` (``ssad run``: pass its ``prog``)."""
    p = command_parser(__doc__, prog)
    p.add_argument("--category", help="MVTec AD category, a custom folder name under the data root, or 'all'")
    p.add_argument("--data-root",
                   help="folder holding <category>/train/good (default: $SSAD_DATA_ROOT, else ./datasets/MVTecAD)")
    p.add_argument("--config", action="append", default=[], metavar="TOML", help="config file(s), later ones win")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument("--steps", type=int, help="pretext training steps (train.steps)")
    p.add_argument("--image-size", type=int, help="square image side (data.image_size)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<category>/<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest run of the category)")
    p.add_argument("--download", action="store_true",
                   help="fetch the category from the official MVTec AD archive if missing")
    p.add_argument("--demo", action="store_true", help="use the built-in procedural demo data (offline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < --config files < --set overrides < the dedicated flags."""
    overrides = list(args.set)
    for flag, key in (("steps", "train.steps"), ("image_size", "data.image_size"), ("seed", "train.seed")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.category is not None:
        overrides.append(f"data.category={json.dumps(args.category)}")
    elif args.demo:
        overrides.append('data.category="demo_object"')
    return load_config(args.config, overrides)


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out, beside what it computes (`RunConfig`): ``out`` the run folder
    (with several categories, the folder holding one per category; None: a new
    ``runs/<category>/<timestamp>``), ``resume`` the run there (or the newest of the category),
    ``download`` a missing category first, show ``progress`` bars."""

    out: Path | None = None
    resume: bool = False
    download: bool = False
    progress: bool = True


@dataclass
class RunNotes:
    """What a run could not do, said once and recorded in ``meta.json``."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.lines:
            self.lines.append(text)
            print(f"note: {text}", file=sys.stderr)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return _main(args)
    except (ValueError, FileNotFoundError, DataError) as error:  # bad input: say what, not where in the code
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    config = resolve_run_config(args)
    device = torch.device(args.device) if args.device else init_distributed()
    notes = RunNotes()
    if device.type == "cpu":
        if not args.device:
            notes.add("no GPU found: running on the CPU (slow at the default schedule; see configs/cpu.toml).")
        if config.train.cpu_amp and not config.train.uses_amp(device):
            notes.add("train.cpu_amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 runs slower "
                      "than float32: training in float32.")

    options = RunOptions(out=args.out, resume=args.resume, download=args.download, progress=not args.no_progress)
    root = _data_root(args.data_root, args.demo)
    categories = _categories(root, config.data.category, args.demo)
    rows = [run_one(_with_category(config, c), options, root, device, notes, len(categories) > 1) for c in categories]
    if len(rows) > 1 and _is_main_process():
        mean = {"category": "mean", **{m: _mean([r[m] for r in rows]) for m in METRICS}}
        print("\nsummary\n" + metrics_table([*rows, mean], ["category", *METRICS]))
    return 0


def run_one(
    config: RunConfig, options: RunOptions, root: Path, device: torch.device, notes: RunNotes, many: bool
) -> dict[str, Any]:
    """Train, choose and fit, score and report ``config.data.category`` (read from ``root``, on
    ``device``; ``many``: one of several categories of the run); returns its row of metrics."""
    category = config.data.category
    run_dir = _shared_by_ranks(_run_dir(options, category, many) if _is_main_process() else None)
    if options.download and not (root / category).is_dir():
        download_category(root, category)
    notes = RunNotes(list(notes.lines))  # the run's notes, and this category's own
    data = _load(root, category, config.data.image_size, device, options.progress, notes)
    loaded = {data.image_size: data}

    def load(size: int) -> CategoryData:
        """The category at ``size`` pixels, of the kind decided at the training size. Besides the
        training size, one size is held at a time (a large category's images are hundreds of
        megabytes per size); another is read again from the disk cache."""
        if size not in loaded:
            for other in [s for s in loaded if s != data.image_size]:
                del loaded[other]
            loaded[size] = _load(root, category, size, device, options.progress, notes, kind_from=data)
        return loaded[size]

    if data.source_kind == "procedural":
        notes.add("no other categories under the data root: texture defects are cut from procedural sources.")

    meta = {
        "category": category,
        "data_root": str(root),
        "device": str(device),
        "seed": config.train.seed,
        "versions": _versions(),
        "started": datetime.now().isoformat(timespec="seconds"),
        "data": _data_decisions(data),
    }
    if _is_main_process():
        write_json(run_dir / "config.json", config.to_dict())
        if not options.resume:
            _save_synthetic_samples(config, data, run_dir / "synthetic_samples.png")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # On the CPU the training step's large tensors reuse freed memory instead of faulting in fresh
        # pages; fitting and scoring then run with glibc's defaults, which give freed memory back.
        with freed_memory_kept(device.type == "cpu"):
            result = train(config, data, run_dir, resume=options.resume, progress=options.progress)
        for warning in caught:
            notes.add(str(warning.message))
    if not _is_main_process():  # other ranks help to train, and to embed the training images when fitting
        select_and_fit(result.model, load, config.score, config.validation, config.data.image_size, progress=False)
        return {}
    meta.update(init=result.init_used, steps=result.steps, pretext=result.last_log,
                pretext_accuracy=_check_pretext(result.model, config, data, notes))

    detector, selection = select_and_fit(result.model, load, config.score, config.validation,
                                         config.data.image_size, progress=options.progress)
    for line in selection.notes:
        notes.add(line)
    detector.save(run_dir / "detector.pt")  # before the test metrics: nothing fitted is lost if they fail
    scored = load(selection.image_size)
    _save_validation_pictures(scored, selection, config, run_dir)
    evaluation = evaluate(detector, scored)
    for line in evaluation.notes:
        notes.add(line)
    if evaluation.f1_thresholds is not None:
        image_threshold, pixel_threshold = evaluation.f1_thresholds
        if pixel_threshold is None:  # no masks: the pixel decisions keep the threshold from normal images
            pixel_threshold = float(detector.pixel_threshold_normal)
        detector.set_thresholds("f1", image_threshold, pixel_threshold)
        detector.use_thresholds("f1").save(run_dir / "detector.pt")
    row = {"category": category, **evaluation.metrics}
    write_json(run_dir / "metrics.json", {**row, "notes": evaluation.notes, "validation": selection.to_dict()})
    _save_pictures(scored, evaluation, run_dir)
    meta.update(scoring={"image_size": selection.image_size, "map_source": selection.map_source,
                         "image_score": selection.image_score, "decided_by": selection.decided_by}, notes=notes.lines)
    write_json(run_dir / "meta.json", meta)
    print(f"\n{category}: {result.steps} pretext steps ({result.init_used} init), run folder {run_dir}")
    print(selection_table(selection))
    print(metrics_table([row], ["category", *METRICS]))
    for line in evaluation.notes:
        print(f"n/a: {line}")
    return row


def _data_decisions(data: CategoryData) -> dict[str, Any]:
    """What the data layer decided about the category, for meta.json."""
    return {"kind": data.kind, "moves": data.moves, "decided_by": data.kind_source,
            "object_mask_share": round(data.object_mask_share, 4), "reason": data.kind_reason,
            "sources": data.source_kind}


#: A pretext accuracy below chance (1 / classes) plus this margin means the network learnt little.
_CHANCE_MARGIN = 0.1


def _check_pretext(model: torch.nn.Module, config: RunConfig, data: CategoryData, notes: RunNotes) -> float:
    """The trained classifier's accuracy on fresh synthetic batches of the training images (eval
    mode); a note when it is near chance, where the maps rest on barely trained features."""
    generator = torch.Generator(data.device).manual_seed(config.train.seed)
    synth = DefectSynthesizer(config.synth)
    accuracy = pretext_accuracy(model, data.train, data.object_masks, synth, generator, data.source_images)
    chance = 1 / config.synth.num_classes
    if accuracy < chance + _CHANCE_MARGIN:
        notes.add(f"the pretext classifier ends at accuracy {accuracy:.2f}, near chance ({chance:.2f}): it learnt "
                  f"little, and the anomaly maps rest on barely trained features. Look at synthetic_samples.png: "
                  f"are the defects visible, on the part? More steps, or category.json, may help.")
    return accuracy


def _load(root: Path, category: str, image_size: int, device: torch.device, progress: bool,
          notes: RunNotes, kind_from: CategoryData | None = None) -> CategoryData:
    """`load_category` at ``image_size``, its warnings kept as the run's notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_category(root, category, image_size=image_size, device=device, progress=progress,
                             kind_from=kind_from)
    for warning in caught:
        notes.add(str(warning.message))
    return data


def _mean(values: list[float | None]) -> float | None:
    """The mean of the figures that exist (a category without masks has no pixel metrics)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _shared_by_ranks(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (under torchrun); the value itself otherwise."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _data_root(data_root: str | None, demo: bool) -> Path:
    if demo:
        root = default_cache_dir() / "demo"
        if not all((root / name).is_dir() for name in DEMO_CATEGORIES):
            make_demo_dataset(root)
        return root
    return resolve_data_root(data_root)


def _categories(root: Path, category: str, demo: bool) -> list[str]:
    if demo:
        if category == "all":
            return list(DEMO_CATEGORIES)
        if category not in DEMO_CATEGORIES:
            raise ValueError(f"--demo has no category {category!r}; the demo categories are "
                             f"{', '.join(DEMO_CATEGORIES)} (or 'all'). For MVTec AD drop --demo and pass --data-root.")
        return [category]
    if category != "all":
        return [category]
    found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(f"--category all: no category (a folder with train/good) under {root}")
    return found


def _with_category(config: RunConfig, category: str) -> RunConfig:
    return replace(config, data=replace(config.data, category=category))


def _run_dir(options: RunOptions, category: str, many: bool) -> Path:
    """The run's folder: ``options.out`` (one folder per category inside it when ``many``), else
    runs/<category>/<timestamp>; resuming, the given or newest existing one."""
    base = Path("runs") / category
    out = options.out / category if options.out is not None and many else options.out
    if options.resume:
        if out is not None:
            return out
        runs = sorted(p for p in base.glob("*") if (p / "checkpoint.pt").is_file()) if base.is_dir() else []
        if not runs:
            raise FileNotFoundError(f"--resume: no run with a checkpoint under {base}; pass --out RUN_FOLDER")
        return runs[-1]
    run_dir = out or base / datetime.now().strftime("%Y%m%d-%H%M%S")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(
            f"run folder {run_dir} exists already and is never overwritten; choose another --out or add --resume."
        )
    return run_dir


def _save_synthetic_samples(config: RunConfig, data: CategoryData, path: Path, count: int = 16) -> None:
    generator = torch.Generator(data.train.device).manual_seed(config.train.seed)
    idx = torch.randint(len(data.train), (count,), generator=generator, device=data.train.device)
    sources = None if data.source_images is None else data.source_images[idx % len(data.source_images)]
    masks = data.object_masks_at(idx)
    out = DefectSynthesizer(config.synth)(data.train[idx], masks, sources, generator)
    save_png(render_grid(out.images, out.labels, out.masks, out.params), path)


def _save_pictures(data: CategoryData, evaluation: Evaluation, run_dir: Path) -> None:
    """ROC curves (image and pixel level, those the test split allows) and one panel per test image."""
    curves = {}
    if evaluation.metrics["image_auroc"] is not None:
        curves["image"] = (evaluation.image_scores, data.test_labels)
    if evaluation.metrics["pixel_auroc"] is not None:
        known = data.test_mask_known
        curves["pixel"] = (evaluation.anomaly_maps[known], data.test_masks[known])
    if curves:
        roc_picture(curves, run_dir / "roc.png")
    # One colour scale for all images, from a strided sample of the map values.
    maps = evaluation.anomaly_maps
    values = maps.flatten()[:: max(1, maps.numel() // _SCALE_SAMPLE)].float()
    low, high = (float(values.quantile(q)) for q in _SCALE_QUANTILES)
    names = [f"{kind}_{path.stem}" for kind, path in zip(data.test_defect_types, data.test_paths)]
    test_panels(data.test, data.test_masks, maps, names, run_dir / "test_images", (low, high))


def _save_validation_pictures(data: CategoryData, selection: Selection, config: RunConfig, run_dir: Path) -> None:
    """``validation.png``: each candidate's validation figures, the chosen one marked; and
    ``validation_samples.png``: a few of the synthetic defects it was measured on."""
    if not selection.figures:
        return
    selection_picture(selection.figures, selection.setting, run_dir / "validation.png")
    count = min(_SAMPLE_PAIRS, len(data.train))
    positions = torch.arange(count, device=data.device)
    defects = validation_set(data, positions, config.validation.families, config.validation.seed)
    families = [config.validation.families[int(f)] for f in defects.family]
    pairs_picture(data.train[positions], defects.images, defects.masks, families, run_dir / "validation_samples.png")


#: Map values sampled for the pictures' colour scale: plenty for its two quantiles, and within the
#: 16M values `torch.quantile` takes.
_SCALE_SAMPLE = 4_000_000
#: The colour scale runs from the median map value (the normal surface, dark) to the 99.9th
#: percentile (the strongest responses, which saturate without one image's peak flattening the rest).
_SCALE_QUANTILES = (0.5, 0.999)
#: Normal and defective pairs shown in validation_samples.png.
_SAMPLE_PAIRS = 8


def _versions() -> dict[str, Any]:
    import kornia
    import torchvision

    return {
        "ssad": ssad.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kornia": kornia.__version__,
        "cuda": torch.version.cuda,
    }


if __name__ == "__main__":
    sys.exit(main())
