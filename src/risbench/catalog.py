"""Image lists: one per variant, and the catalog that joins them.

A variant list (``results/images/{variant}.parquet``) names the images of one
variant in a fixed order; descriptor stores hold their rows in that order.
The catalog (``results/dataset/images.parquet``) is the variant lists one after
the other, with a global ``row`` (design.md, "File contracts"). ``image_id`` is
the source image's id in every variant: (image_id, variant) names one image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["image_id", "variant", "group", "role", "path"]
# The role of a pairs data set's queries (its references are the bases): queried by
# protocol ``queries``, never indexed.
QUERY_ROLE = "query"
# A query's ``group`` names the groups it belongs to: its references' ids joined by
# this (never in an id: see sources.make_id); empty: it belongs to no group.
GROUP_SEPARATOR = "|"


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


def query_list(queries: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The queries of a pairs data set (``image_id``, ``references``: the ids of the
    references each query should retrieve, ``path``) as variant ``variant``."""
    return pd.DataFrame(
        {
            "image_id": queries["image_id"],
            "variant": variant,
            "group": [GROUP_SEPARATOR.join(refs) for refs in queries["references"]],
            "role": QUERY_ROLE,
            "path": queries["path"],
        },
        columns=COLUMNS,
    )


def group_labels(groups) -> np.ndarray:
    """The groups of catalog rows as :func:`risbench.metrics.sweep` takes them: each
    row's label, or a tuple of labels for a row in several groups or none (a query
    of a pairs data set). Without such rows, the labels unchanged (the fast path)."""
    groups = np.asarray(groups, dtype=object)
    # one join and one comparison (about 40 ms per million) before any Python loop
    if GROUP_SEPARATOR not in "\n".join(groups) and not (groups == "").any():
        return groups
    out = groups.copy()
    for i, g in enumerate(groups):
        if g == "" or GROUP_SEPARATOR in g:
            out[i] = tuple(label for label in g.split(GROUP_SEPARATOR) if label)
    return out
