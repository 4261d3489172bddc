"""``python -m ssad COMMAND ...``: the ``ssad`` command (`ssad.cli`) where its script is not installed."""

import sys

from ssad.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ssad"))
