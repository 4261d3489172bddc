"""`DefectSynthesizer`: the `nn.Module` that samples parameters and applies them in one call."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import SynthConfig
from .functional import apply
from .params import sample_params
from .raster import compositing_box
from .streams import SampleStreams

__all__ = ["DefectSynthesizer", "SynthOutput", "check_images", "check_image_batch", "check_source_images"]


class SynthOutput(NamedTuple):
    """A pretext batch: ``images`` (B, C, H, W) like the input, ``labels`` (B,) int64,
    ``masks`` (B, 1, H, W) bool (the replaced pixels), ``params`` (dict of per-sample tensors)."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    params: dict[str, Tensor]


class DefectSynthesizer(nn.Module):
    """Turns a batch of normal images into the 3-class pretext batch, on the batch's device.

    Example::

        synth = DefectSynthesizer(SynthConfig())
        out = synth(images)                  # images (B, 3, H, W) uint8 on the GPU
        loss = F.cross_entropy(model(normalise(out.images)), out.labels)
    """

    def __init__(self, config: SynthConfig | None = None) -> None:
        super().__init__()
        self.config = config or SynthConfig()

    def forward(
        self,
        images: Tensor,
        object_masks: Tensor | None = None,
        source_images: Tensor | None = None,
        generator: torch.Generator | SampleStreams | None = None,
    ) -> SynthOutput:
        """Args: ``images`` (B, C, H, W) uint8 or float in [0, 1], C in {1, 3};
        ``object_masks`` (B or 1, 1, H, W) bool where defect centres may go;
        ``source_images`` like ``images``, where cut-paste takes its patch (default: the images);
        ``generator`` on the images' device, for reproducible batches, or `SampleStreams` for
        defects that depend on each sample's index alone."""
        check_images(images, self.config, object_masks, source_images)
        params = sample_params(
            images.shape, self.config, device=images.device, object_masks=object_masks, generator=generator
        )
        out, masks = apply(images, params, self.config, source_images)
        return SynthOutput(out, params["labels"], masks, params)

    def extra_repr(self) -> str:
        return repr(self.config)


_UNIT_RANGE = "float images must lie in [0, 1] (and hold no NaN); divide uint8 data by 255 or pass it as uint8."
#: Devices where ``torch._assert_async`` checks on the device without reading a value back.
_ASYNC_ASSERT_DEVICES = ("cuda", "cpu", "meta")


def _assert_unit_range(images: Tensor) -> None:
    """Check that float ``images`` lie in [0, 1] without a host-device sync.

    On CUDA the check is an asynchronous device-side assertion: it costs no read-back, and a batch
    out of range stops the process at the next sync with the message above (CUDA cannot recover
    from a failed device-side assertion). On the CPU it fails at once, as a ValueError.
    """
    in_range = ((images >= 0) & (images <= 1)).all()
    if images.device.type not in _ASYNC_ASSERT_DEVICES:  # e.g. mps: no asynchronous assert, read the flag
        if not bool(in_range):
            raise ValueError(_UNIT_RANGE)
        return
    try:
        torch._assert_async(in_range, _UNIT_RANGE)
    except RuntimeError as error:  # raised at once where the data lives on the host
        raise ValueError(_UNIT_RANGE) from error


def _check_is_tensor(name: str, value: object, expected: str) -> None:
    if not isinstance(value, Tensor):
        hint = " (object_mask returns the mask itself; with return_info=True a (mask, info) pair)" \
            if isinstance(value, tuple) else ""
        raise TypeError(f"{name} must be a torch.Tensor, {expected}; got {type(value).__name__}{hint}.")


def check_images(
    images: Tensor,
    config: SynthConfig,
    object_masks: Tensor | None = None,
    source_images: Tensor | None = None,
) -> None:
    """Raise ValueError (TypeError for what is not a tensor) naming what is wrong with the
    synthesizer's inputs. Shape checks read no data; the [0, 1] check of float values is an
    asynchronous assertion on CUDA (no read-back) and is skipped with ``check_values=False``."""
    check_image_batch(images)
    compositing_box(config, *images.shape[2:])  # raises when the images are too small
    if images.is_floating_point() and config.check_values:
        _assert_unit_range(images)
    if object_masks is not None:
        _check_object_masks(object_masks, images)
    check_source_images(source_images, images)


def check_image_batch(images: Tensor) -> None:
    """Raise ValueError (TypeError where it is no tensor) unless ``images`` is a non-empty
    (B, C, H, W) batch, C in {1, 3}, of uint8 or float; reads the shape and dtype alone."""
    _check_is_tensor("images", images, "(B, C, H, W) uint8 or float in [0, 1]")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W); got {images.dim()} dimensions {tuple(images.shape)}.")
    batch, channels = images.shape[:2]
    if batch == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image.")
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (dim 1); got C = {channels} in {tuple(images.shape)}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1]; got {images.dtype}.")


def _check_object_masks(object_masks: Tensor, images: Tensor) -> None:
    """Raise unless ``object_masks`` is (B or 1, 1, H, W) bool for ``images`` (B, C, H, W), on their device."""
    _check_is_tensor("object_masks", object_masks, "(B or 1, 1, H, W) bool, e.g. ssad.synth.object_mask(images)")
    batch, _, height, width = images.shape
    if object_masks.dim() != 4 or object_masks.shape[1] != 1 or object_masks.shape[0] not in (1, batch) \
            or object_masks.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"object_masks must be ({batch} or 1, 1, {height}, {width}) to match images; "
            f"got {tuple(object_masks.shape)}."
        )
    if object_masks.dtype != torch.bool:
        raise ValueError(f"object_masks must be bool; got {object_masks.dtype} (use `mask > 0`).")
    if object_masks.device != images.device:
        raise ValueError(f"object_masks are on {object_masks.device} but images on {images.device}.")


def check_source_images(source_images: Tensor | None, images: Tensor) -> None:
    """Raise ValueError (TypeError where it is no tensor) unless ``source_images`` is None or
    matches ``images`` in shape, dtype and device."""
    if source_images is None:
        return
    _check_is_tensor("source_images", source_images, "a tensor like images")
    if source_images.shape != images.shape or source_images.dtype != images.dtype:
        raise ValueError(
            f"source_images must match images: {tuple(images.shape)} {images.dtype}; "
            f"got {tuple(source_images.shape)} {source_images.dtype}."
        )
    if source_images.device != images.device:
        raise ValueError(f"source_images are on {source_images.device} but images on {images.device}.")
