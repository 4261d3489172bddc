"""ssad: batched, on-device defect synthesis for self-supervised anomaly detection."""

__version__ = "0.1.0"

__all__ = ["__version__"]
