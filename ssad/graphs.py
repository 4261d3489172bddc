"""`CudaGraphed`: a function of tensors replayed from CUDA graphs, to take launch overhead out.

On a GPU the synthesizer is a few hundred small kernels (parameter sampling) and two big ones (the
fused apply). Launched one by one from Python, the small ones cost more host time than the GPU
needs to run them all. Captured once in a CUDA graph, they replay with one launch.

`CudaGraphed` captures per input signature (shapes, dtypes, devices, which inputs are None) on
first use and replays after copying the inputs into the graph's own buffers. The function must be
capturable: static shapes and no value read back to the host (the synthesizer is both: its
float range check is an asynchronous device-side assertion). Its random draws come from ``generator``, which the
graph registers, or from the device's default generator. Each replay advances the generator as the
eager call would and draws what it would draw: capturing leaves ``generator``'s stream where it was,
so a seeded run replays the same batches with or without graphs, and resumes the same. Off CUDA it
is a plain call.

Example::

    g = torch.Generator("cuda").manual_seed(0)
    synth = DefectSynthesizer()
    make_batch = CudaGraphed(lambda images: synth(images, generator=g), generator=g)
    out = make_batch(images)            # (B, 3, H, W) on the GPU; out is a fresh SynthOutput
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

__all__ = ["CudaGraphed"]

T = TypeVar("T")


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor | None]  # the graph reads these buffers
    outputs: Any  # and writes these


class CudaGraphed(Generic[T]):
    """Calls ``fn(*inputs)`` (tensors or None) through a CUDA graph per input signature.

    Args:
        fn: a capturable function of tensors returning tensors (in tuples, lists, dicts,
            named tuples).
        generator: the generator ``fn`` draws from, if any; a CUDA one is registered with each
            graph (off CUDA nothing is captured, and any generator will do).
        warmup: eager calls on a side stream before a capture (they compile kernels and fill
            the allocator's pools, as capture requires); ``generator`` is rewound after them.
        clone: return copies of the outputs. Without copies each call overwrites the tensors the
            previous call returned (the graph's own buffers): faster, and safe when they are used
            up before the next call, as in a training step.
    """

    def __init__(self, fn: Callable[..., T], *, generator: torch.Generator | None = None, warmup: int = 2,
                 clone: bool = True) -> None:
        self.fn, self.generator, self.warmup, self.clone = fn, generator, warmup, clone
        self._captured: dict[tuple, _Captured] = {}

    def __call__(self, *inputs: Tensor | None) -> T:
        if not any(t is not None and t.is_cuda for t in inputs):
            return self.fn(*inputs)
        key = tuple(None if t is None else (t.shape, t.dtype, t.device) for t in inputs)
        captured = self._captured.get(key)
        if captured is None:
            captured = self._captured[key] = self._capture(inputs)
        else:
            for buffer, value in zip(captured.inputs, inputs):
                if buffer is not None:
                    buffer.copy_(value)
        captured.graph.replay()
        return tree_map(lambda x: x.clone() if isinstance(x, Tensor) else x, captured.outputs) if self.clone \
            else captured.outputs

    @property
    def num_graphs(self) -> int:
        """Graphs captured so far (one per input signature seen)."""
        return len(self._captured)

    @torch.no_grad()
    def _capture(self, inputs: tuple[Tensor | None, ...]) -> _Captured:
        buffers = [None if t is None else t.clone() for t in inputs]
        device = next(t.device for t in inputs if t is not None)
        rewind = None if self.generator is None else self.generator.get_state()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*buffers)
        torch.cuda.current_stream(device).wait_stream(side)
        if rewind is not None:
            self.generator.set_state(rewind)

        graph = torch.cuda.CUDAGraph()
        if self.generator is not None:
            graph.register_generator_state(self.generator)
        try:
            with torch.cuda.graph(graph):
                outputs = self.fn(*buffers)
        except RuntimeError as error:
            raise RuntimeError(
                f"capturing {getattr(self.fn, '__name__', 'fn')} in a CUDA graph failed: {error}. A captured "
                "function must keep its shapes and never read a value back to the host (.item(), "
                "bool(tensor), .cpu(), nonzero()); call it directly where it cannot."
            ) from error
        return _Captured(graph, buffers, outputs)
