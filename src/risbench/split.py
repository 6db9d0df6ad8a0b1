"""The training split of learned descriptors (config ``compress.split``).

Compact codes (:mod:`risbench.compress`) are fitted on training images that
the benchmark never queries: the distractors (unless ``distractors: false``)
and every variant of a seeded share of the base groups. A base group is held
out when a hash of the seed and its id falls below ``share``: each group's
fate depends on nothing else, so the held-out groups stay the same in a
screening stage's first N bases, in every variant's job and when images are
added, and the share is met on average, not exactly (the count of held-out
groups is binomial: the compress job logs it and checks it is enough).

When ``compress`` is configured, the benchmark of EVERY descriptor leaves the
held-out groups out (:func:`leave_out`), so every descriptor answers the same
queries. Cheap to import (the config check reads :func:`held_out`).
"""

from __future__ import annotations

import hashlib

INDEXED_ROLES = ("base", "modified")


def held_out(group: str, share: float, seed: int) -> bool:
    """Whether base group ``group`` is a training group: the first 8 bytes of
    SHA-256(seed, group), read as a fraction of 2**64, are below ``share``."""
    digest = hashlib.sha256(f"{int(seed)}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def held_out_groups(groups, split: dict) -> list[str]:
    """The training groups among ``groups``, sorted."""
    return sorted({g for g in map(str, groups) if held_out(g, split["share"], split["seed"])})


def training_mask(catalog, split: dict):
    """Per catalog row: whether compact codes train on it (distractors when
    ``split["distractors"]``, and every variant of the held-out base groups)."""
    import numpy as np

    role = catalog["role"].to_numpy()
    groups = catalog["group"].astype(str).to_numpy()
    held = set(held_out_groups(np.unique(groups[np.isin(role, INDEXED_ROLES)]), split))
    mask = np.isin(role, INDEXED_ROLES) & np.isin(groups, list(held))
    if split.get("distractors", True):
        mask |= role == "distractor"
    return mask


def leave_out(catalog, matrices: dict, split: dict | None):
    """The catalog and per-variant matrices without the held-out base groups
    (``split`` None: unchanged). Distractors stay (they are never indexed);
    each matrix keeps the rows of its variant's remaining catalog rows."""
    import numpy as np

    if not split:
        return catalog, matrices
    groups = catalog["group"].astype(str).to_numpy()
    role = catalog["role"].to_numpy()
    held = held_out_groups(np.unique(groups[np.isin(role, INDEXED_ROLES)]), split)
    drop = np.isin(role, INDEXED_ROLES) & np.isin(groups, held)
    variants = catalog["variant"].to_numpy()
    kept = {}
    for variant, matrix in matrices.items():
        rows = drop[variants == variant]
        if len(rows) != len(matrix):
            raise ValueError(f"variant {variant!r}: {len(matrix)} rows for {len(rows)} images")
        kept[variant] = np.asarray(matrix)[~rows]
    return catalog[~drop].reset_index(drop=True), kept
