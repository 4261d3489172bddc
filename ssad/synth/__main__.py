"""``python -m ssad.synth export|preview ...``: the synthesizer's command-line tools.

    python -m ssad.synth export --category screw --data-root DIR --n 500 --out synthetic/
    python -m ssad.synth preview --images DIR --out grid.png
"""

import sys

COMMANDS = ("export", "preview")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ssad.synth {{{'|'.join(COMMANDS)}}} ... (--help after a command for its options)",
              file=sys.stderr)
        return 2
    if argv[0] == "export":
        from ssad.synth_export import main as export

        return export(argv[1:])
    from ssad.synth_preview import main as preview

    return preview(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
