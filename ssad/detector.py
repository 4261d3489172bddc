"""A trained detector in one module and one file: network, fitted scorers, thresholds.

    detector = ssad.load_detector("runs/screw/20261201-2140/detector.pt", device="cuda")
    out = detector(images)          # (B, C, H, W) uint8, or float in [0, 1], any size
    out.scores, out.maps            # (B,) and (B, 1, H, W) float: higher = more anomalous
    out.anomalous, out.defect_masks # (B,) bool and (B, 1, H, W) bool: the thresholds' decisions

`python -m ssad.run` fits one (`fit_detector`) and writes ``detector.pt`` into the run folder;
`python -m ssad.predict` scores new images with it, `python -m ssad.export` traces it.

Thresholds: ``"f1"`` are the image and pixel thresholds at F1-max on the run's labelled test split;
``"normal"`` come from normal training images alone (``score.normal_quantile`` of their held-out
image scores and of their maps' maxima, 5-fold), for users without labelled defects: a new normal
image is flagged with a probability of about ``1 - normal_quantile``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssad._version import __version__
from ssad.atomic import atomic_write
from ssad.config import ScoreConfig
from ssad.model import PretextModel, normalise
from ssad.score import (
    GaussianDensity,
    KNNDensity,
    PatchGaussian,
    PatchKNN,
    PatchScorer,
    create_density,
    create_patch_scorer,
    embed_images,
)

__all__ = ["Detection", "Detector", "THRESHOLDS", "fit_detector", "load_detector", "find_detector", "DETECTOR_FORMAT"]

#: Bumped whenever a saved detector's layout changes; `load_detector` refuses other formats.
DETECTOR_FORMAT = 1
THRESHOLDS = ("f1", "normal")
IMAGE_SCORES = ("density", "map_max")
_DENSITIES = {"GaussianDensity": GaussianDensity, "KNNDensity": KNNDensity}
_PATCH_SCORERS = {"PatchGaussian": PatchGaussian, "PatchKNN": PatchKNN}


class Detection(NamedTuple):
    """``scores`` (B,) float, ``maps`` (B, 1, H, W) float, ``anomalous`` (B,) bool, ``defect_masks``
    (B, 1, H, W) bool: image and pixel decisions at the detector's thresholds."""

    scores: Tensor
    maps: Tensor
    anomalous: Tensor
    defect_masks: Tensor


class Detector(nn.Module):
    """Scores images: the pretext network, the patch scorer on its feature maps and, for
    ``image_score="density"``, the image density on its pooled features, at ``image_size`` (the
    run's ``score.image_size``). An image's score is the density's ("density") or its anomaly
    map's maximum ("map_max", which needs no density and runs the network only as deep as the
    patch scorer's layers).

    ``forward`` resizes any input to ``image_size`` (bilinear, antialiased), scores it, and brings
    the maps back to the input's size. Thresholds are buffers (``image_threshold_f1``, ...);
    ``use_thresholds`` picks which pair the decisions use ("f1" when the run had labelled test
    images, else "normal").
    """

    def __init__(self, model: PretextModel, density: GaussianDensity | KNNDensity | None, patches: PatchScorer,
                 image_size: int, image_score: str = "density") -> None:
        super().__init__()
        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score={image_score!r}: choose one of {IMAGE_SCORES}.")
        if image_score == "density" and density is None:
            raise ValueError('image_score="density" needs a fitted density.')
        self.model, self.density, self.patches, self.image_size = model, density, patches, image_size
        self.image_score = image_score
        for kind in THRESHOLDS:
            for level in ("image", "pixel"):
                self.register_buffer(f"{level}_threshold_{kind}", torch.tensor(float("inf")))
        self.thresholds = "normal"
        self.eval()

    def use_thresholds(self, kind: str) -> Detector:
        if kind not in THRESHOLDS:
            raise ValueError(f"thresholds {kind!r}: choose one of {THRESHOLDS}.")
        self.thresholds = kind
        return self

    def set_thresholds(self, kind: str, image: float, pixel: float) -> None:
        getattr(self, f"image_threshold_{kind}").fill_(image)
        getattr(self, f"pixel_threshold_{kind}").fill_(pixel)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Detection:
        """``images``: (B, 1 or 3, H, W) uint8, or float in [0, 1]."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images of shape {tuple(images.shape)}: expected (B, 1 or 3, H, W).")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = x.expand(-1, 3, -1, -1)  # grayscale as RGB, as the data layer reads it
        size = (self.image_size, self.image_size)
        # Always resampled (an identity at the training size), so a traced detector takes any size.
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        if self.image_score == "density":
            pooled, feature_maps = self.model.embed_and_maps(normalise(x))
            maps = self.patches.anomaly_maps(feature_maps, size)
            scores = self.density.score(pooled)
        else:
            maps = self.patches.anomaly_maps(self.model.feature_maps(normalise(x), self.patches.layers), size)
            scores = maps.amax(dim=(1, 2, 3))
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        image_threshold = getattr(self, f"image_threshold_{self.thresholds}")
        pixel_threshold = getattr(self, f"pixel_threshold_{self.thresholds}")
        return Detection(scores, maps, scores >= image_threshold, maps >= pixel_threshold)

    def score_all(self, images: Tensor, batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """Image scores (N,) and maps (N, 1, S, S) of (N, C, S, S) images, in batches."""
        outs = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.cat([o.scores for o in outs]), torch.cat([o.maps for o in outs])

    def spec(self) -> dict[str, Any]:
        """What `load_detector` rebuilds the modules from (the tensors are in the state dict)."""
        patches = {name: getattr(self.patches, name) for name in self.patches.options}
        density = {"k": self.density.k} if isinstance(self.density, KNNDensity) else {}
        density = None if self.density is None else [type(self.density).__name__, density]
        return {
            "image_size": self.image_size,
            "image_score": self.image_score,
            "num_classes": self.model.classifier.out_features,
            "thresholds": self.thresholds,
            "density": density,
            "patches": [type(self.patches).__name__, patches],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` atomically: format, ssad version, spec and state dict (on the CPU)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {"format": DETECTOR_FORMAT, "ssad": __version__, "spec": self.spec(), "state": state}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))


def fit_detector(model: PretextModel, train: Tensor, cfg: ScoreConfig, moves: bool, folds: int = 5) -> Detector:
    """Fit the image density and the patch scorer (``cfg``; "auto" resolved by ``moves``) on
    (N, 3, S, S) uint8 normal ``train`` images, and set the "normal" thresholds from held-out
    scores, ``folds``-fold: each fold scored by scorers fitted on the others (in-sample scores run
    low and would flag too many new normal images; fits on fewer images run a little high)."""
    model.eval()
    detector = _fit_scorers(model, train, cfg, moves)
    if folds >= 2 and len(train) >= 2 * folds:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).to(train.device)
        parts = order.chunk(folds)
        held_out = [_fit_scorers(model, train[torch.cat(parts[:i] + parts[i + 1:])], cfg, moves).score_all(train[held])
                    for i, held in enumerate(parts)]
        scores, maps = (torch.cat(fold) for fold in zip(*held_out))
    else:  # too few images to hold some out: in-sample, and so somewhat low
        scores, maps = detector.score_all(train)
    q = cfg.normal_quantile
    detector.set_thresholds("normal", float(scores.quantile(q)), float(maps.amax(dim=(1, 2, 3)).quantile(q)))
    return detector


def _fit_scorers(model: PretextModel, train: Tensor, cfg: ScoreConfig, moves: bool) -> Detector:
    image_size, image_score = train.shape[-1], cfg.image_score_for(moves)
    density = None
    if image_score == "density":
        density = create_density(cfg.density, cfg.knn_k).fit(embed_images(model, train))
    name = cfg.patch_scorer_for(moves)
    options = dict(channels=cfg.patch_channels, sigma=cfg.sigma * image_size / 256, layers=cfg.patch_layers)
    patches = create_patch_scorer(name, **options, **({"memory": cfg.patch_memory} if name == "knn" else {}))
    patches.fit(model, train)
    return Detector(model, density, patches, image_size, image_score).to(train.device)


def find_detector(run: str | os.PathLike) -> Path:
    """``run/detector.pt``; for a folder of runs (``runs/<category>``), the newest run's (run
    folders are named by their start time). The path returned may not exist: `load_detector` says so."""
    run = Path(run)
    if not (run / "detector.pt").is_file():
        runs = sorted(p for p in run.glob("*/detector.pt")) if run.is_dir() else []
        if runs:
            return runs[-1]
    return run / "detector.pt"


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> Detector:
    """The `Detector` saved at ``path`` (by `python -m ssad.run`), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no detector at {path}; a finished `python -m ssad.run` writes RUN/detector.pt "
            f"(for an older run folder: `python -m ssad.run --resume --out RUN`)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable detector file ({error}).") from error
    if not isinstance(payload, dict) or payload.get("format") != DETECTOR_FORMAT:
        written = f"format {payload.get('format')!r} by ssad {payload.get('ssad')}" \
            if isinstance(payload, dict) else "no format"
        raise ValueError(
            f"{path} is a detector of {written}; ssad {__version__} reads format {DETECTOR_FORMAT}. "
            f"Re-create it with `python -m ssad.run --resume --out RUN` (refits from the run's checkpoint)."
        )
    spec, state = payload["spec"], payload["state"]
    density = None if spec["density"] is None else _DENSITIES[spec["density"][0]](**spec["density"][1])
    patch_kind, patch_options = spec["patches"]
    patch_options["layers"] = tuple(patch_options["layers"])
    detector = Detector(PretextModel(num_classes=spec["num_classes"]), density,
                        _PATCH_SCORERS[patch_kind](**patch_options), spec["image_size"],
                        spec.get("image_score", "density"))  # detectors saved before image_score
    # The scorers' buffers exist only once fitted: register them from the file, then load the rest.
    for key in [k for k in state if k.startswith(("density.", "patches."))]:
        owner, name = key.split(".", 1)
        getattr(detector, owner).register_buffer(name, state[key])
    detector.load_state_dict(state)
    return detector.use_thresholds(spec["thresholds"]).to(device).eval()
