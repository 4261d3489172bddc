"""The pretext classifier: torchvision ResNet-18 backbone, MLP projection head, linear classifier."""

from __future__ import annotations

import functools
import os
import socket
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = ["PretextModel", "SegmentationHead", "create_model", "IMAGENET_MEAN", "IMAGENET_STD", "MAP_LAYERS",
           "normalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INITS = ("auto", "imagenet", "scratch")
#: The intermediate maps `PretextModel.feature_maps` offers, shallow to deep.
MAP_LAYERS = ("layer1", "layer2", "layer3")
#: Seconds a stalled ImageNet weights download may hang before "auto" falls back to scratch.
DOWNLOAD_TIMEOUT = 30.0


def normalise(images: Tensor) -> Tensor:
    """ImageNet normalisation of (B, 3, H, W) float images in [0, 1] (uint8 is scaled first)."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images - mean) / std


class SegmentationHead(nn.Module):
    """A light FPN-style decoder: the layer1-layer3 maps -> (B, 1, H/4, W/4) float defect logits.

    Each map is projected to ``width`` channels (1x1 convolution); from the deepest up, the
    coarser sum is upsampled (bilinear) and added to the next finer projection; one 3x3
    convolution block and a 1x1 convolution turn the layer1-grid sum into one logit per place.
    About 66 k parameters against ResNet-18's 11 M: the backbone does the seeing, the head only
    says where.
    """

    def __init__(self, channels: dict[str, int], width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleDict({name: nn.Conv2d(channels[name], width, 1) for name in MAP_LAYERS})
        self.out = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, maps: dict[str, Tensor]) -> Tensor:
        """(B, 1, h1, w1) float logits on layer1's grid, from `PretextModel.feature_maps` (all of `MAP_LAYERS`)."""
        deepest, *finer = reversed(MAP_LAYERS)
        x = self.lateral[deepest](maps[deepest])
        for name in finer:
            finer_map = self.lateral[name](maps[name])
            x = finer_map + F.interpolate(x, size=finer_map.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(x)


class PretextModel(nn.Module):
    """ResNet-18 features -> projection head -> ``num_classes`` logits; with ``segmentation``
    also a `SegmentationHead` on the intermediate maps, trained on the synthetic defects' masks.

    ``forward`` takes normalised (B, 3, H, W) float images and returns logits (B, num_classes),
    with ``segment=True`` also the head's defect logits (B, 1, H/4, W/4);
    ``embed`` returns the pooled backbone features (B, ``feature_dim``: 512) used for scoring;
    ``feature_maps`` the intermediate maps used for localization.
    """

    def __init__(self, num_classes: int = 3, head_dim: int = 128, segmentation: bool = False) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.feature_dim: int = resnet.fc.in_features  # the pooled features the ImageNet classifier took
        resnet.fc = nn.Identity()
        self.backbone = resnet
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim),
            nn.BatchNorm1d(self.feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.feature_dim, head_dim),
        )
        self.classifier = nn.Linear(head_dim, num_classes)
        # Built last, so that the other layers draw the same initial weights with and without it.
        self.segmentation = SegmentationHead(self.map_channels()) if segmentation else None

    def embed(self, images: Tensor) -> Tensor:
        """(B, 512) pooled features of normalised images."""
        return self.backbone(images)

    def forward(self, images: Tensor, segment: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if not segment:
            return self.classifier(self.head(self.embed(images)))
        pooled, maps = self.embed_and_maps(images)
        return self.classifier(self.head(pooled)), self.segment_maps(maps)

    def segment(self, images: Tensor) -> Tensor:
        """(B, 1, H/4, W/4) float defect logits of normalised images (the head only; no classifier)."""
        return self.segment_maps(self.feature_maps(images))

    def segment_maps(self, maps: dict[str, Tensor]) -> Tensor:
        """The head's (B, 1, H/4, W/4) float defect logits from `feature_maps` (all of `MAP_LAYERS`)."""
        if self.segmentation is None:
            raise ValueError("this network has no segmentation head: train one with train.segmentation=true, "
                             'or draw maps from the memory (score.map_source="memory").')
        return self.segmentation(maps)

    def feature_maps(self, images: Tensor, layers: Iterable[str] = MAP_LAYERS) -> dict[str, Tensor]:
        """Intermediate maps of normalised images: ``layer1`` (B, 64, H/4, W/4), ``layer2``
        (B, 128, H/8, W/8), ``layer3`` (B, 256, H/16, W/16); the network runs only as deep as the
        deepest of ``layers`` needs, and returns the maps up to it."""
        depth = max(MAP_LAYERS.index(name) for name in layers)
        r = self.backbone
        maps = {"layer1": r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(images)))))}
        for previous, name in zip(MAP_LAYERS, MAP_LAYERS[1 : depth + 1]):
            maps[name] = getattr(r, name)(maps[previous])
        return maps

    def embed_and_maps(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """`embed` and `feature_maps` of normalised images from one pass through the network."""
        maps = self.feature_maps(images)
        r = self.backbone
        return torch.flatten(r.avgpool(r.layer4(maps["layer3"])), 1), maps

    @staticmethod
    def map_channels() -> dict[str, int]:
        """Channels of each map `feature_maps` offers, by layer name (`MAP_LAYERS`), read from the
        network itself: ``{"layer1": 64, "layer2": 128, "layer3": 256}`` for ResNet-18."""
        return dict(_map_channels())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


@functools.cache
def _map_channels() -> dict[str, int]:
    """`PretextModel.map_channels`, worked out once: the network run on the meta device, which
    allocates nothing, computes nothing and draws no random numbers."""
    with torch.device("meta"):
        probe = torch.empty(1, 3, _PROBE_SIDE, _PROBE_SIDE)
        maps = PretextModel().feature_maps(probe, MAP_LAYERS)
    return {name: int(value.shape[1]) for name, value in maps.items()}


#: Side of the image `_map_channels` probes with: the deepest map (layer3, stride 16) is 2 x 2 there.
_PROBE_SIDE = 32


def create_model(init: str | os.PathLike = "auto", num_classes: int = 3,
                 segmentation: bool = False) -> tuple[PretextModel, str]:
    """Build the pretext model and initialise it; returns ``(model, what_was_used)``.

    ``init``: ``"imagenet"`` (torchvision's ResNet-18 ImageNet weights, cached or downloaded;
    an error if neither works), ``"scratch"`` (random), ``"auto"`` (ImageNet when the weights
    can be had, else scratch with a warning), or a path to a state dict saved from a
    `PretextModel` (or a checkpoint holding one under ``"model"``). The second return value says
    which one was used: ``"imagenet"``, ``"scratch"`` or ``"file:<path>"``.
    """
    model = PretextModel(num_classes, segmentation=segmentation)
    if str(init) == "scratch":
        return model, "scratch"
    if str(init) in ("imagenet", "auto"):
        try:
            weights = _imagenet_weights()
        except Exception as error:  # no network, no cache: any failure of the fetch means "not available"
            if init == "imagenet":
                raise RuntimeError(
                    f"ImageNet weights for ResNet-18 could not be loaded ({error}); put them in the torch hub "
                    f"cache ({torch.hub.get_dir()}/checkpoints) or use --init scratch."
                ) from error
            warnings.warn(
                f"ImageNet weights unavailable ({type(error).__name__}); training ResNet-18 from scratch.",
                stacklevel=2,
            )
            return model, "scratch"
        weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
        model.backbone.load_state_dict(weights)
        return model, "imagenet"
    path = Path(init)
    if not path.is_file():
        raise ValueError(f"init={str(init)!r}: use one of {INITS} or the path of a saved state dict (file not found).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        head = " and a segmentation head" if segmentation else " and no segmentation head"
        raise ValueError(f"{path} does not hold a PretextModel with {num_classes} classes{head}: {error}") from error
    return model, f"file:{path}"


def _imagenet_weights() -> dict[str, Tensor]:
    """torchvision's ResNet-18 ImageNet weights, from the torch hub cache or downloaded. A network
    that drops packets would leave the download waiting forever (urllib has no timeout of its
    own): a socket that stays silent for `DOWNLOAD_TIMEOUT` seconds fails it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    finally:
        socket.setdefaulttimeout(previous)
