"""How much does the disk cache save? A category loaded twice: decoded, then from the cache.

    python bench/data_cache.py --data-root ../shared/data/mvtec --category bottle \\
        --out bench/results/data_cache_bottle.json

Uses a fresh temporary cache folder, so the first load always decodes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ssad.atomic import write_json
from ssad.data import load_category


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as cache:
        first = load_category(args.data_root, args.category, args.image_size, cache_dir=cache)
        second = load_category(args.data_root, args.category, args.image_size, cache_dir=cache)
    assert not first.from_cache and second.from_cache
    result = {
        "category": args.category,
        "image_size": args.image_size,
        "images": len(first.train) + len(first.test),
        "decode_seconds": first.load_seconds,
        "cached_seconds": second.load_seconds,
        "speedup": first.load_seconds / second.load_seconds,
    }
    print(f"{args.category} at {args.image_size}px, {result['images']} images: decoded in "
          f"{result['decode_seconds']:.2f} s, from the cache in {result['cached_seconds']:.2f} s "
          f"({result['speedup']:.0f}x faster)")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
