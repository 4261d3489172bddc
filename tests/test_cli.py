"""The ``ssad`` command (`ssad.cli`): one console script, a subcommand per tool, each the module's own."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from ssad.cli import COMMANDS, Command, Group, main
from ssad.data import make_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = [["run"], ["predict"], ["export"], ["synth", "export"], ["synth", "preview"]]


def _leaves(group: Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Command]]:
    return [leaf for name, target in group.commands.items()
            for leaf in (_leaves(target, (*path, name)) if isinstance(target, Group) else [((*path, name), target)])]


def test_the_console_script_is_declared_and_every_command_has_a_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ssad": "ssad.cli:main"}
    assert sorted(list(path) for path, _ in _leaves(COMMANDS)) == sorted(SUBCOMMANDS)
    for _, command in _leaves(COMMANDS):
        assert callable(importlib.import_module(command.module).main)


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("run", "predict", "export", "synth"))
    assert main(["synth", "-h"]) == 0
    out = capsys.readouterr().out
    assert "  export " in out and "  preview " in out


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=" ".join)
def test_each_command_help_shows_its_options_with_defaults(path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*path, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ssad {' '.join(path)} ") and "(default: " in out


def test_unknown_or_missing_commands_say_how_to_call(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main(["synth"]) == 2
    assert "usage: ssad synth {export,preview}" in capsys.readouterr().err


def test_synth_preview_writes_a_grid(tmp_path, capsys):
    make_demo_dataset(tmp_path / "demo", image_size=64, n_train=4, n_test=1, categories=("demo_object",))
    out = tmp_path / "grid.png"
    assert main(["synth", "preview", "--images", str(tmp_path / "demo" / "demo_object" / "train"), "--out", str(out),
                 "--n", "4", "--size", "64", "--columns", "2"]) == 0
    assert Image.open(out).size == (2 * 64, 2 * (64 + 16))  # two rows of tiles under their captions
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["ssad", "ssad.run", "ssad.synth"])
def test_module_forms_still_run(module):
    args = ["--help"] if module == "ssad.run" else ["synth", "--help"] if module == "ssad" else ["preview", "--help"]
    run = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: python -m ")
