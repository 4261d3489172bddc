"""``python -m ssad.synth export|preview ...``: the synthesizer's command-line tools (``ssad synth``).

    python -m ssad.synth export --category screw --data-root DIR --n 500 --out synthetic/
    python -m ssad.synth preview --images DIR --out grid.png

An entry point of the commands layer (`ssad.cli`) that Python finds only here; ``import ssad.synth``
never loads it, so the engine itself imports nothing from the rest of ssad.
"""

import sys

from ssad.cli import synth_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
