"""Batched defect synthesis for the 3-class pretext task, on the batch's own device.

Functional core: `sample_params` draws every random parameter of a batch, `apply` applies them.
`DefectSynthesizer` is the thin `nn.Module` that calls both; `object_mask` estimates where on an
image defects may go; `SampleStreams` makes each sample's draws depend on its index alone.
Defect families: the spec's cut-paste polygons and scars, Perlin-noise blobs (`perlin`) and
Poisson-blended patches (`poisson`), chosen by `SynthConfig.family_probs`. `apply` computes the
cut-paste defects with the backend the config names (`backends`: the torch reference, or the fused
Triton kernel that `ssad.kernels` registers). The engine imports nothing of ssad outside this package.
"""

from .config import FAMILIES, FILL_MODES, SynthConfig
from .functional import apply
from .module import DefectSynthesizer, SynthOutput
from .object_mask import object_mask
from .params import sample_params
from .streams import SampleStreams

__all__ = [
    "DefectSynthesizer", "SynthConfig", "SynthOutput", "SampleStreams", "FILL_MODES", "FAMILIES", "apply",
    "object_mask", "sample_params",
]
