"""The layering rule, read from the imports of every module under ``ssad/`` and ``kernels/``.

Layers, lowest first. A module may import from its own layer and from those below it, never from
one above; the engine (synth) imports nothing of ssad outside itself.

=========  =============================================================================================
layer      modules
=========  =============================================================================================
helpers    ssad._version, ssad.atomic (atomic writes: JSON, PNG), ssad.cpu, ssad.distributed (ranks
           under torchrun), ssad.graphs (CUDA-graph replay of any step), ssad.registry (the
           scorer-name tables settings are checked against)
synth      ssad.synth: the engine; stands alone
kernels    ssad.kernels (``kernels/``): the engine's fused backend; registers itself with it
data       ssad.data; ssad.validation (the validation set the engine makes from a category's images)
config     ssad.config: the run's settings, made of the engine's and checked against ssad.registry
model      ssad.model
score      ssad.image_score, ssad.score, ssad.anomaly_map
detector   ssad.detector, ssad.metrics, ssad.evaluate, ssad.selection; ssad itself (its ``__init__``
           hands out ``ssad.load_detector``)
train      ssad.train, ssad.checkpoint
commands   ssad.cli, ssad.run, ssad.predict, ssad.export, ssad.report (a run's pictures and tables),
           ssad.synth_export, ssad.synth_preview; the ``python -m`` entry points ssad.__main__ and
           ssad.synth.__main__ (Python finds the latter only inside synth/; ``import ssad.synth``
           never loads it)
=========  =============================================================================================

Placements between the named layers: validation sits with the data (it imports only data and the
engine, and config checks its family names); config sits above data (it holds the validation
settings) and below model, so reading settings loads no network; ssad.data.errors stays in its
package, whose layer it shares. Every module must have a layer: a new one fails here until placed.

What counts as an import: every ``import`` and ``from ... import`` anywhere in a module (module
level, inside functions, under ``TYPE_CHECKING``), relative ones resolved; ``from pkg import name``
imports ``pkg.name`` where that is a module, else ``pkg``. An import by name at run time
(``importlib``) is not read: the one the engine makes, of the backends' modules in
`ssad.synth.backends.PROVIDERS`, is how it finds the fused kernels without importing them.

No package-level cycle: the imports between packages (ssad.synth, ssad.data, ssad.kernels, each
as one) and top-level modules (ssad.config, ssad.score, ...) form no cycle. `test_runtime_imports`
checks what importing the engine and the settings loads.
"""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (layer, modules), lowest first; a module is placed by its longest dotted prefix here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("helpers", ("ssad._version", "ssad.atomic", "ssad.cpu", "ssad.distributed", "ssad.graphs", "ssad.registry")),
    ("synth", ("ssad.synth",)),
    ("kernels", ("ssad.kernels",)),
    ("data", ("ssad.data", "ssad.validation")),
    ("config", ("ssad.config",)),
    ("model", ("ssad.model",)),
    ("score", ("ssad.image_score", "ssad.score", "ssad.anomaly_map")),
    ("detector", ("ssad", "ssad.detector", "ssad.metrics", "ssad.evaluate", "ssad.selection")),
    ("train", ("ssad.train", "ssad.checkpoint")),
    ("commands", ("ssad.cli", "ssad.__main__", "ssad.synth.__main__", "ssad.run", "ssad.predict", "ssad.export",
                  "ssad.report", "ssad.synth_export", "ssad.synth_preview")),
]
#: Layers that import nothing of ssad outside themselves.
STANDALONE = ("synth",)
#: Packages whose modules count as one node of the package graph; entry points stand apart.
PACKAGES = ("ssad.synth", "ssad.data", "ssad.kernels")
ENTRY_POINTS = ("ssad.__main__", "ssad.synth.__main__")


def module_name(path: Path) -> str:
    """``ssad/synth/params.py`` -> ``ssad.synth.params``; ``kernels/`` installs as ``ssad.kernels``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts.insert(0, "ssad")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_tree() -> dict[str, tuple[str, bool]]:
    """{module: (source, is a package)} for every module under ``ssad/`` and ``kernels/`` (links
    are not followed: a checkout may link ``ssad/kernels`` to ``kernels/``)."""
    modules = {}
    for top in ("ssad", "kernels"):
        for folder, _, files in os.walk(ROOT / top):
            for file in files:
                if file.endswith(".py"):
                    path = Path(folder) / file
                    modules[module_name(path)] = (path.read_text(), file == "__init__.py")
    return modules


def imports(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported ssad module, line) for every import in ``source``, the code of ``module``;
    ``known`` are the modules that exist (``from pkg import name`` imports ``pkg.name`` if known)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node.lineno)
                      for alias in node.names]
    ours = [(name, line) for name, line in found if name == "ssad" or name.startswith("ssad.")]
    return sorted(dict.fromkeys(ours), key=lambda item: item[1])  # in the order of the source, each once


def layer_of(module: str) -> int:
    """Index in `LAYERS` of the longest dotted prefix of ``module`` placed there (``ssad`` itself
    only by its own name, so that a module left out is not placed by the package's root)."""
    placed = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in placed and (prefix != "ssad" or module == "ssad"):
            return placed[prefix]
    raise LookupError(f"{module} has no layer: place it in LAYERS (tests/test_layers.py)")


def node_of(module: str) -> str:
    """The node of ``module`` in the package graph: its package of `PACKAGES`, or itself."""
    if module in ENTRY_POINTS:
        return module
    return next((p for p in PACKAGES if module == p or module.startswith(p + ".")), module)


def violations(tree: dict[str, tuple[str, bool]]) -> list[str]:
    """One line per import that goes up a layer or leaves a standalone layer."""
    known = set(tree)
    lines = []
    for module, (source, is_package) in sorted(tree.items()):
        own = layer_of(module)
        for target, line in imports(source, module, is_package, known):
            theirs = layer_of(target)
            if theirs > own:
                lines.append(f"{module}:{line} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]}), "
                             "a layer above")
            elif LAYERS[own][0] in STANDALONE and theirs != own:
                lines.append(f"{module}:{line} ({LAYERS[own][0]}) imports {target}: it stands alone")
    return lines


def package_cycle(tree: dict[str, tuple[str, bool]]) -> list[str]:
    """An import cycle between packages and top-level modules (`node_of`), as the path around it
    (first node repeated at its end); empty when there is none."""
    known = set(tree)
    edges: dict[str, set[str]] = {}
    for module, (source, is_package) in tree.items():
        here = node_of(module)
        targets = {node_of(target) for target, _ in imports(source, module, is_package, known)}
        edges.setdefault(here, set()).update(targets - {here})
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return []


# --- the rule, on the tree -------------------------------------------------------------------------


def test_every_module_has_a_layer():
    unplaced = []
    for module in read_tree():
        try:
            layer_of(module)
        except LookupError as error:
            unplaced.append(str(error))
    assert not unplaced, "\n".join(unplaced)


def test_no_import_breaks_the_layering():
    lines = violations(read_tree())
    assert not lines, "\n".join(lines)


def test_no_package_level_import_cycle():
    assert package_cycle(read_tree()) == []


def test_runtime_imports():
    """Importing the engine and running it on the CPU loads nothing of ssad outside it (but the
    package's root), and reading settings loads no network or scorer (nor torchvision)."""
    code = (
        "import sys, torch; from ssad.synth import DefectSynthesizer; "
        "DefectSynthesizer()(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)); "
        "print(sorted(m for m in sys.modules if m.startswith('ssad') and not m.startswith('ssad.synth'))); "
        "import ssad.config; "
        "print(sorted(m for m in ('ssad.model', 'ssad.score', 'torchvision') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["['ssad', 'ssad._version']", "[]"]


# --- the checker, on small made-up trees ---------------------------------------------------------------


def _tree(**sources: str) -> dict[str, tuple[str, bool]]:
    """{module: (source, is a package)} from keyword arguments: ``ssad__synth__a="..."``
    is module ``ssad.synth.a``; a name ending in ``__init`` is a package."""
    tree = {}
    for key, source in sources.items():
        name = key.replace("__", ".")
        is_package = name.endswith(".init")
        tree[name.removesuffix(".init")] = (source, is_package)
    return tree


def test_the_checker_reads_every_kind_of_import():
    known = {"ssad", "ssad.synth", "ssad.synth.config", "ssad.data", "ssad.data.loader", "ssad.config"}
    source = (
        "import torch\n"
        "from ssad import config\n"  # a module, by the name it has
        "from ssad.data import CategoryData\n"  # a name of a package: the package
        "from .config import SynthConfig\n"  # relative, from inside ssad.synth
        "def f():\n"
        "    import ssad.data.loader\n"  # inside a function
    )
    assert imports(source, "ssad.synth.params", False, known) == [
        ("ssad.config", 2), ("ssad.data", 3), ("ssad.synth.config", 4), ("ssad.data.loader", 6)]
    assert imports("from . import config", "ssad.synth", True, known) == [("ssad.synth.config", 1)]
    assert layer_of("ssad.synth.params") == layer_of("ssad.synth") < layer_of("ssad.kernels.fused")
    assert layer_of("ssad.synth.__main__") == len(LAYERS) - 1
    with pytest.raises(LookupError, match="ssad.newcomer has no layer"):
        layer_of("ssad.newcomer")


def test_the_checker_fails_on_an_upward_import_and_on_a_cycle():
    tree = _tree(
        ssad__synth__init="",
        ssad__synth__params="def draw():\n    from ssad.data import loader\n",  # up, inside a function
        ssad__synth__config="from ssad.atomic import write_json\n",  # down, but synth stands alone
        ssad__data__init="",
        ssad__data__loader="from ssad.synth import params\n",  # down: fine
        ssad__atomic="",
    )
    assert violations(tree) == [
        "ssad.synth.config:1 (synth) imports ssad.atomic: it stands alone",
        "ssad.synth.params:2 (synth) imports ssad.data.loader (data), a layer above",
    ]
    cycle = package_cycle(tree)
    assert set(cycle) == {"ssad.data", "ssad.synth"} and len(cycle) == 3 and cycle[0] == cycle[-1]
    assert package_cycle(_tree(ssad__config="import ssad.validation\n", ssad__validation="")) == []
    assert violations(_tree(ssad__config="import ssad.validation\n", ssad__validation="")) == []
