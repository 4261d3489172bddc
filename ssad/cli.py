"""``ssad``: one command for ssad's tools, a subcommand each.

    ssad run --demo                              # python -m ssad.run
    ssad predict --run RUN new_images/ --maps    # python -m ssad.predict
    ssad export --run RUN --format pt2           # python -m ssad.export
    ssad synth export --category screw --out synthetic/    # python -m ssad.synth export
    ssad synth preview --images DIR --out grid.png         # python -m ssad.synth preview

A subcommand is its module's own ``main(argv, prog)``: the options, their defaults and ``--help``
are the module's (its parser comes from `command_parser`, whose help shows the defaults). The
module is imported when its command runs, so ``ssad --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

__all__ = ["Command", "Group", "COMMANDS", "SYNTH_COMMANDS", "HelpFormatter", "command_parser", "main", "synth_main"]


class Command(NamedTuple):
    """A subcommand: the ``main(argv, prog)`` of ``module`` runs it."""

    module: str
    summary: str


class Group(NamedTuple):
    """Subcommands under one name (``ssad synth export``)."""

    summary: str
    commands: dict[str, Command | Group]


#: The commands of ``ssad synth`` (and of ``python -m ssad.synth``).
SYNTH_COMMANDS = Group("the synthesizer's tools", {
    "export": Command("ssad.synth_export", "synthetic anomalies of a category, on disk, in MVTec AD layout"),
    "preview": Command("ssad.synth_preview", "a picture of a synthetic pretext batch"),
})
#: The commands of ``ssad``.
COMMANDS = Group("ssad's tools", {
    "run": Command("ssad.run", "train, choose and fit a detector for a category, score its test images"),
    "predict": Command("ssad.predict", "score new images with a run's detector"),
    "export": Command("ssad.export", "a run's detector as a torch.export program, TorchScript or ONNX model"),
    "synth": SYNTH_COMMANDS,
})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, where it has one to say (not None, False or
    an empty list) that its help does not state already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default, text = action.default, action.help or ""
        if default is None or default is False or default == [] or "default" in text:
            return action.help
        return super()._get_help_string(action)


def command_parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a command module whose docstring ``doc`` opens with ````python -m ssad.X``:
    summary``: named ``prog`` (default: that ``python -m`` form), described by the summary, its
    help showing the defaults (`HelpFormatter`)."""
    lead, summary = doc.split("\n\n")[0].split(": ", 1)
    return argparse.ArgumentParser(prog=prog or lead.strip("`"), description=" ".join(summary.split()),
                                   formatter_class=HelpFormatter)


def main(argv: list[str] | None = None, prog: str = "ssad") -> int:
    """Run the command that ``argv`` (default: the command line's arguments) names; returns the
    exit status."""
    return _dispatch(COMMANDS, argv, prog)


def synth_main(argv: list[str] | None = None, prog: str = "python -m ssad.synth") -> int:
    """`main` for the ``synth`` commands alone (``python -m ssad.synth export|preview``)."""
    return _dispatch(SYNTH_COMMANDS, argv, prog)


def _dispatch(group: Group, argv: list[str] | None, prog: str) -> int:
    """Run the command of ``group`` that ``argv[0]`` names with the rest of ``argv`` (default: the
    command line's arguments); with ``--help``, list the commands (exit status 0); with anything
    else, say how to call (2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in group.commands:
        target, name = group.commands[argv[0]], f"{prog} {argv[0]}"
        if isinstance(target, Group):
            return _dispatch(target, argv[1:], name)
        return importlib.import_module(target.module).main(argv[1:], prog=name)
    usage = f"usage: {prog} {{{','.join(group.commands)}}} ..."
    if argv[:1] in (["-h"], ["--help"]):
        width = max(map(len, group.commands))
        lines = [f"  {name:{width}}  {target.summary}" for name, target in group.commands.items()]
        print("\n".join([usage, "", f"{group.summary}:", *lines, "",
                         f"'{prog} COMMAND --help' lists a command's options and their defaults."]))
        return 0
    said = f"unknown command {argv[0]!r}" if argv else "a command is required"
    print(f"{usage}\n{prog}: error: {said} (--help lists them)", file=sys.stderr)
    return 2
