"""Checkpoints: written atomically, refused with a clear error when corrupt or from another config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ssad.atomic import atomic_write
from ssad.config import RunConfig
from ssad.model import PretextModel

__all__ = ["save_checkpoint", "load_checkpoint", "load_run_model"]

#: Settings that may change between a run and its resumption without changing what it trained.
_RESUMABLE = {("train", "log_every"), ("train", "checkpoint_every"), ("train", "compile"), ("train", "cuda_graph")}
#: Sections that play no part in training (validation and scoring come after it, from the final weights).
_AFTER_TRAINING = {"score", "validation"}


def save_checkpoint(path: Path, config: RunConfig, **state: Any) -> None:
    """Save ``state`` (tensors, state dicts, plain data) with the run's config, atomically."""
    payload = {"format": 1, "config": config.to_dict(), **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path, config: RunConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` for the same ``config``.

    Raises FileNotFoundError when absent, ValueError when corrupt or written with other settings
    (naming them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume; start without --resume.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated or garbled files fail in many ways
        raise ValueError(
            f"checkpoint {path} is corrupt ({type(error).__name__}: {error}); delete it to start over."
        ) from error
    if not isinstance(state, dict) or state.get("format") != 1 or "config" not in state:
        raise ValueError(f"{path} is not an ssad checkpoint; delete it to start over.")
    differences = _differences(state["config"], config.to_dict())
    if differences:
        raise ValueError(
            f"checkpoint {path} was written with other settings: {', '.join(differences)}. "
            "Resume with the same config, or start a new run folder."
        )
    return state


def load_run_model(run: Path, device: torch.device | str = "cpu") -> tuple[RunConfig, PretextModel]:
    """A run folder's settings (``config.json``) and its trained network (``checkpoint.pt``; with
    the segmentation head where the run trained one), in eval mode on ``device``."""
    run = Path(run)
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    model = PretextModel(config.synth.num_classes, segmentation=config.train.segmentation)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt", config, device)["model"])
    return config, model.to(device).eval()


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    # A setting added after the checkpoint was written meant its default then.
    defaults = RunConfig().to_dict()
    out = []
    for section in sorted((set(saved) | set(current)) - _AFTER_TRAINING):
        a, b = {**defaults.get(section, {}), **saved.get(section, {})}, current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) not in _RESUMABLE and a.get(key) != b.get(key):
                out.append(f"{section}.{key} (checkpoint {a.get(key)!r}, now {b.get(key)!r})")
    return out
