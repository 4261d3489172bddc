"""The validation set the engine makes: synthetic defects, with exact masks, on held-out normal images.

A user with a new part has no labelled defects to choose a detector's settings with, but the engine
makes defects, with their masks, on any normal image. `ssad.selection` holds out folds of the
normal training images from the detector's scorers, gives each held-out image a synthetic defect
here, and ranks candidate settings by how well they tell the held-out normal images from their
defective copies (image AUROC) and find the defects (pixel AUROC, AUPRO).

**Which defects validate.** The pretext network is trained to spot the spec's cut-paste polygons
and scars (`SynthConfig.family_probs = (1, 0, 0)`): validating on them would measure the training
task, which the network has learnt, not the unknown defects of the part. Validation uses the
engine's other families, whose shapes, fills and blending the network never saw (Perlin alone by
default, `ssad.config.ValidationConfig.families`; docs/validation.md says why):

- ``"perlin"`` (DRAEM's anomalies): blobs of thresholded Perlin noise, from one island to a few,
  most between 0.05% and 5% of the image (`VALIDATION_FAMILIES`), blended at an opacity of 0.5 to
  1 with a foreign image (`foreign_sources`: another category's images for a texture, procedural
  textures for an object, grey for a grey category) or with the image's own tiles, shuffled:
  stains, contamination, worn or disturbed surface.
- ``"poisson"`` (NSA's): a patch of another normal image of the category, resampled, 3% to 20% of
  the image's side, blended in the gradient domain so that no seam gives it away: structural
  defects, a part of the object where it does not belong. Not a default: a seamless patch is
  found less the larger the scoring size (its inside keeps normal gradients), so it ranks sizes by
  the patch's size against the features' receptive field rather than by the part's defects.

Colour jitter is off: a defective copy differs from its normal image only around its mask, so the
ranking measures the defect and nothing else. Images take the families in turn (by position), and
each image's defect depends on the seed and its position alone (`ssad.synth.SampleStreams`). The
parameters are drawn once, on one reference size, and replayed at every other (parameters are
data): each candidate size is measured on the same defects, scaled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssad.data import CategoryData, procedural_sources
from ssad.data.sources import is_grayscale, to_grayscale
from ssad.synth import SampleStreams, SynthConfig, apply, sample_params
from ssad.synth.module import check_images
from ssad.synth.object_mask import masks_at
from ssad.synth.perlin import perlin_masks
from ssad.synth.poisson import box_on_image, poisson_box

__all__ = ["VALIDATION_FAMILIES", "SyntheticDefects", "foreign_sources", "synthetic_defects"]

_NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "hue": 0.0}
#: The engine's settings for each validation family: big defects (label 1) of that family only,
#: without colour jitter, sized to span small to medium real defects.
VALIDATION_FAMILIES: dict[str, SynthConfig] = {
    # Finer lattices and higher thresholds than the training defaults: blobs of 0.05-5% of the
    # image instead of 1-35%.
    "perlin": SynthConfig(class_probs=(0.0, 1.0, 0.0), family_probs=(0.0, 1.0, 0.0), **_NO_JITTER,
                          perlin_scale=(1, 4), perlin_threshold=(0.35, 0.55), perlin_min_area=0.002,
                          perlin_beta=(0.5, 1.0), perlin_fill_probs=(0.5, 0.5)),
    # Patches of 3-20% of the side: 0.1-4% of the image, as MVTec AD's small to medium defects.
    "poisson": SynthConfig(class_probs=(0.0, 1.0, 0.0), family_probs=(0.0, 0.0, 1.0), **_NO_JITTER,
                           poisson_size=(0.03, 0.2)),
}
#: Procedural sources made for the Perlin fills of objects (which have no foreign images).
_SOURCES = 64
#: Images per synthesizer call: bounds the float temporaries of the Poisson solve.
_BATCH = 32


@dataclass(frozen=True)
class SyntheticDefects:
    """Defective copies of held-out normal images: ``images`` (V, 3, S, S) uint8, ``masks``
    (V, 1, S, S) bool (the pixels each defect changed, never empty), ``family`` (V,) int64 index
    into the families the set was made with."""

    images: Tensor
    masks: Tensor
    family: Tensor


def foreign_sources(data: CategoryData, count: int = _SOURCES) -> Tensor:
    """(K, 3, S, S) uint8 images the Perlin fills are taken from: the category's own texture
    sources where it has them, else ``count`` procedural textures; grey where the category is."""
    if data.source_images is not None:
        return data.source_images
    sources = procedural_sources(count, data.image_size).to(data.device)
    return to_grayscale(sources) if is_grayscale(data.train) else sources


def synthetic_defects(
    images: Tensor,
    positions: Tensor,
    object_masks: Tensor,
    others: Tensor,
    sources: Tensor,
    families: tuple[str, ...] = ("perlin", "poisson"),
    seed: int = 0,
    drawn_on: Tensor | None = None,
) -> SyntheticDefects:
    """A synthetic defect on each of (V, 3, S, S) uint8 normal ``images``.

    Args:
        positions: (V,) int64, each image's position in its dataset: picks its family
            (``families[position % len(families)]``) and keys its random stream.
        object_masks: (V or 1, 1, S, S) bool, where defects may lie.
        others: (V, 3, S, S) uint8, another normal image of the category for each: where the
            Poisson patches come from.
        sources: (K, 3, S, S) uint8 foreign images for the Perlin fills (`foreign_sources`).
        families: names in `VALIDATION_FAMILIES`.
        seed: with the positions, fixes every draw.
        drawn_on: (V or 1, 1, R, R) bool object masks of the same images at a reference size R:
            the defects are drawn there and replayed at S, so that every size gets the same
            defects (default: drawn at S, on ``object_masks``).
    """
    unknown = set(families) - set(VALIDATION_FAMILIES)
    if not families or unknown:
        raise ValueError(f"validation families {families!r}: choose among {tuple(VALIDATION_FAMILIES)}.")
    drawn_on = object_masks if drawn_on is None else drawn_on
    out = images.clone()
    masks = torch.zeros(len(images), 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
    family = positions % len(families)
    for f, name in enumerate(families):  # one pass per family, each over slices of its images
        config = VALIDATION_FAMILIES[name]
        chosen = (family == f).nonzero().flatten()  # building the set, not a hot path: a read-back is fine
        for part in chosen.split(_BATCH):
            fill = others[part] if name == "poisson" else sources[positions[part] % len(sources)]
            where, reference = masks_at(object_masks, part), masks_at(drawn_on, part)
            check_images(images[part], config, where, fill)
            params = sample_params((len(part), *images.shape[1:2], *reference.shape[-2:]), config,
                                   device=images.device, object_masks=reference,
                                   generator=SampleStreams(seed, positions[part]))
            if reference.shape[-2:] != images.shape[-2:]:
                params = _replayed(params, name, config, images.shape[-1] / reference.shape[-1], where)
            out[part], masks[part] = apply(images[part], params, config, fill)
    return SyntheticDefects(out, masks, family)


def _replayed(params: dict[str, Tensor], family: str, config: SynthConfig, scale: float,
              object_masks: Tensor) -> dict[str, Tensor]:
    """``params`` of one validation family, drawn on images ``1 / scale`` times the side of those
    ``object_masks`` (b or 1, 1, S, S) bool belong to, replayed at S: the Perlin noise is
    resolution-free (its mask is recomputed at S); the Poisson patch's place, size and source scale."""
    side = object_masks.shape[-1]
    params = dict(params)
    if family == "perlin":
        params["perlin_mask"] = perlin_masks(params, side, side, config.perlin_min_area, object_masks)
        return params
    short, long = poisson_box(config.poisson_size, config.poisson_aspect, side, side)
    size = params["poisson_size"] * scale
    _, extent = box_on_image(size, short, long)
    params["poisson_size"] = size.clamp_min(2).minimum(extent - 2)  # as drawn: off the box's fixed border
    params["poisson_centre"] = params["poisson_centre"] * scale
    params["poisson_source"] = params["poisson_source"] * scale
    return params
