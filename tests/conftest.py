"""Shared test fixtures: where the real MVTec AD data lies (read in place, never copied), a small
demo category at 64 px, a short demo run for the benchmarks that read run folders, and a counter
of the aten operations a call dispatches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

MVTEC_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec"
#: Side of the small demo category the `demo` fixture loads.
DEMO_SIZE = 64


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    if not (MVTEC_ROOT / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD data not found at {MVTEC_ROOT} (only present on the project's machines)")
    return MVTEC_ROOT


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A demo data root holding demo_object: 40 training and 6 test images of `DEMO_SIZE` pixels."""
    from ssad.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, image_size=DEMO_SIZE, n_train=40, n_test=6, categories=("demo_object",))
    return root


@pytest.fixture(scope="module")
def demo(demo_root):
    """demo_object of `demo_root`, loaded at `DEMO_SIZE` pixels."""
    from ssad.data import load_category

    return load_category(demo_root, "demo_object", image_size=DEMO_SIZE, cache_dir=demo_root / "cache",
                         progress=False)


@pytest.fixture(scope="session")
def head_demo_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run of 4 steps with a segmentation head on demo_object at 64 px, scored at that size,
    for the benchmarks that read run folders: (the run folder, the demo data root its cache made).
    Read it, do not write into it."""
    from ssad.run import main as run_main

    folder = tmp_path_factory.mktemp("head_run")
    cache, run = folder / "cache", folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAD_CACHE_DIR", str(cache))
        assert run_main(["--demo", "--category", "demo_object", "--image-size", "64", "--steps", "4",
                         "--set", "train.batch_size=16", "--set", "train.init='scratch'", "--set",
                         "train.segmentation=true", "--set", "validation.sizes=[0]", "--no-progress",
                         "--out", str(run)]) == 0
    return run, cache / "demo"


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _ops_by_batch(call: Callable[[int], object], batches: tuple[int, ...]) -> list[Counter[str]]:
    call(batches[0])  # a warm-up: what is built once and cached (e.g. the Poisson solve's bases) does not count
    counts = []
    for batch in batches:
        with _CountOps() as mode:
            call(batch)
        counts.append(mode.ops)
    return counts


@pytest.fixture
def ops_by_batch() -> Callable[[Callable[[int], object], tuple[int, ...]], list[Counter[str]]]:
    """``ops_by_batch(call, (4, 256))``: the aten operations (name -> count) that ``call(batch)``
    dispatches, for each batch size, after one warm-up call; vectorized code dispatches the same
    for every size."""
    return _ops_by_batch


def _reads_back(ops: Counter[str]) -> bool:
    # aten.nonzero sizes its output by the data; count_nonzero (a reduction) does not read back.
    return any("_local_scalar_dense" in op or op.startswith("aten.nonzero.") for op in ops)


@pytest.fixture
def reads_back() -> Callable[[Counter[str]], bool]:
    """``reads_back(ops)``: whether the operations include a host-device sync (a value read back,
    a nonzero)."""
    return _reads_back
