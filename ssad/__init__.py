"""ssad: batched, on-device defect synthesis for self-supervised anomaly detection."""

from ssad._version import __version__
from ssad.detector import Detection, Detector, load_detector

__all__ = ["__version__", "Detection", "Detector", "load_detector"]
