"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no example marked {name!r}"
    return match.group(1)


def test_training_loop_example_runs():
    scope: dict = {}
    exec(compile(_example("training-loop"), "README training-loop", "exec"), scope)
    out = scope["out"]
    assert out.images.shape == (16, 3, 128, 128) and out.labels.shape == (16,)
    assert scope["loss"].isfinite()
