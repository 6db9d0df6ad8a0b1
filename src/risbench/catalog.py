"""Image lists: one per variant, and the catalog that joins them.

A variant list (``results/images/{variant}.parquet``) names the images of one
variant in a fixed order; descriptor stores hold their rows in that order.
The catalog (``results/dataset/images.parquet``) is the variant lists one after
the other, with a global ``row`` (design.md, "File contracts"). ``image_id`` is
the source image's id in every variant: (image_id, variant) names one image.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ["image_id", "variant", "group", "role", "path"]


def original_list(manifest: pd.DataFrame) -> pd.DataFrame:
    """The ``original`` variant: every kept source image, bases and distractors,
    plus ``source_mode``, the Pillow mode of each source file (the modify stage
    picks ImageMagick's resize filter from it; the catalog leaves it out)."""
    table = pd.DataFrame(
        {
            "image_id": manifest["image_id"],
            "variant": "original",
            "group": manifest["image_id"],
            "role": manifest["role"],
            "path": manifest["path"],
        },
        columns=COLUMNS,
    )
    if "source_mode" in manifest:
        table["source_mode"] = manifest["source_mode"].to_numpy()
    return table


def bases(original: pd.DataFrame) -> pd.DataFrame:
    return original[original["role"] == "base"].reset_index(drop=True)


def modified_list(original: pd.DataFrame, variant: str, paths: list[str]) -> pd.DataFrame:
    base = bases(original)
    return pd.DataFrame(
        {
            "image_id": base["image_id"],
            "variant": variant,
            "group": base["group"],
            "role": "modified",
            "path": paths,
        },
        columns=COLUMNS,
    )


def assemble(lists: list[pd.DataFrame]) -> pd.DataFrame:
    catalog = pd.concat(lists, ignore_index=True)[COLUMNS]
    catalog.insert(0, "row", range(len(catalog)))
    return catalog
