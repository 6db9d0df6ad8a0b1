"""A larger real photo set from installed packages: the demo's 21 photos, each cut
into a grid of non-overlapping tiles (4 x 4 by default: 336 photos), written as PNG
into a folder for `dataset.source: folder`.

Tiles of one photo share its light and camera but not its content, so they are
distinct images; uniform tiles (sky, background) may be near-duplicates, which the
dataset job reports. Used for the compact-code comparison at a size where the
training split can fit PCA-128, ITQ-64 and 8-bit PQ (docs/design.md, "Compact
descriptors"):

    python benchmarks/tile_photos.py results/tiles
    snakemake --cores 2 --configfile config/compress-tiles.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from risbench import sources


def tiles(image: Image.Image, grid: int):
    """The grid x grid tiles of ``image``, row by row (the right and bottom
    remainders of an uneven division are left out)."""
    width, height = image.size[0] // grid, image.size[1] // grid
    for row in range(grid):
        for col in range(grid):
            box = (col * width, row * height, (col + 1) * width, (row + 1) * height)
            yield row, col, image.crop(box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the tiles go (created)")
    parser.add_argument("--grid", type=int, default=4, help="tiles per side (default 4)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for source in sources.demo_sources():
        with Image.open(source.path) as image:
            for row, col, tile in tiles(image.convert("RGB"), args.grid):
                tile.save(args.folder / f"{source.image_id}_r{row}c{col}.png")
                count += 1
    print(f"{count} tiles in {args.folder}")


if __name__ == "__main__":
    main()
