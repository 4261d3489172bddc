"""Batched defect synthesis for the 3-class pretext task, on the batch's own device.

Functional core: `sample_params` draws every random parameter of a batch, `apply` applies them.
`DefectSynthesizer` is the thin `nn.Module` that calls both; `object_mask` estimates where on an
image defects may go.
"""

from .config import FILL_MODES, SynthConfig
from .functional import apply
from .module import DefectSynthesizer, SynthOutput
from .object_mask import object_mask
from .params import sample_params

__all__ = ["DefectSynthesizer", "SynthConfig", "SynthOutput", "FILL_MODES", "apply", "object_mask", "sample_params"]
