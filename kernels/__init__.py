"""Fused GPU kernels of the synthesis hot path (installed as ``ssad.kernels``)."""

__all__: list[str] = []
