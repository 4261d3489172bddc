"""ssad: batched, on-device defect synthesis for self-supervised anomaly detection.

``ssad.load_detector`` (and ``Detector``, ``Detection``) come from `ssad.detector`, imported on
first use: ``import ssad.synth`` stays free of torchvision (which loads Triton).
"""

from typing import Any

from ssad._version import __version__

__all__ = ["__version__", "Detection", "Detector", "load_detector"]


def __getattr__(name: str) -> Any:
    if name in ("Detection", "Detector", "load_detector"):
        from ssad import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'ssad' has no attribute {name!r}")
