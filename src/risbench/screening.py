"""Staged screening (paper §6.4): cheap benchmarks on a few bases decide what runs in full.

The paper benchmarked every model and distance on 200 images, kept those above
F1 0.9, repeated on 2,500 and ran the survivors on all 25,000. Here a stage is
``{bases: N, min_f1: X, top_k: K}`` (``min_f1`` and/or ``top_k``): every
candidate **descriptor × distance pair** is benchmarked under protocol ``all``
on the first N base groups (each base image with all its modified versions);
the pairs whose best F1 is at least ``min_f1`` are kept, and of those at most
the ``top_k`` best (ties broken by descriptor and distance name). Stage 1's
candidates are every configured pair, a later stage's those the previous stage
kept, and the full-size benchmarks run for the last stage's survivors only.

A stage reads the rows of its bases from the full descriptor stores (the rows
of a variant are in its list's order, so the first N bases are the first N
base rows of ``original`` and the first N rows of every modified variant):
nothing is recomputed and only those rows are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from risbench.results import BenchmarkStats, ResultsError

STAGE_COLUMNS = [
    "stage",
    "bases",
    "descriptor",
    "distance",
    "f1",
    "radius",
    "precision",
    "recall",
    "queries",
    "seconds",
    "kept",
]


class ScreeningError(ValueError):
    """A screening stage that cannot go on (e.g. it kept nothing)."""


# --------------------------------------------------------------------------------------
# a stage's images: the first N base groups


def first_bases(catalog: pd.DataFrame, bases: int) -> tuple[pd.DataFrame, dict]:
    """The catalog restricted to its first ``bases`` base groups (and every
    distractor), renumbered, and per variant the positions of the kept images
    among that variant's rows (= the descriptor store rows to read).

    "First" is the order of the base images in the ``original`` variant (name
    order: the dataset's manifest is sorted by id). Fewer bases than asked: all
    of them.
    """
    if bases < 1:
        raise ValueError(f"bases must be positive, got {bases}")
    is_base = (catalog["variant"] == "original") & (catalog["role"] == "base")
    groups = pd.unique(catalog.loc[is_base, "group"])[:bases]
    keep = catalog["group"].isin(groups) | (catalog["role"] == "distractor")
    rank = catalog.groupby("variant", sort=False).cumcount()
    rows = {
        variant: rank[keep & (catalog["variant"] == variant)].to_numpy(dtype=np.int64)
        for variant in pd.unique(catalog["variant"])
    }
    subset = catalog[keep].drop(columns="row").reset_index(drop=True)
    subset.insert(0, "row", range(len(subset)))
    return subset, rows


def read_rows(path: str | Path, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Rows ``rows`` (sorted positions) of a descriptor store and its attributes;
    only the chunks holding them are read."""
    import zarr

    array = zarr.open_array(str(path), mode="r")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # one run of rows
        matrix = array[int(rows[0]) : int(rows[-1]) + 1]
    elif rows.size:
        matrix = array.get_orthogonal_selection((rows, slice(None)))
    else:
        matrix = np.empty((0, *array.shape[1:]), dtype=array.dtype)
    return np.asarray(matrix), dict(array.attrs)


def load_first_bases(catalog: pd.DataFrame, stores: dict[str, str], bases: int):
    """(catalog, matrices, attrs) of the first ``bases`` base groups, reading
    only their rows of each variant's store (``stores``: variant → path)."""
    subset, rows = first_bases(catalog, bases)
    matrices, attrs = {}, {}
    for variant, path in stores.items():
        matrices[variant], attrs = read_rows(path, rows[variant])
    return subset, matrices, attrs


# --------------------------------------------------------------------------------------
# a stage's decision


def stage_table(stats_paths, stage: int, bases: int) -> pd.DataFrame:
    """One row per benchmarked pair (from the benchmark stats JSON files), best first."""
    rows = []
    for path in stats_paths:
        try:
            stats = BenchmarkStats.read(path)
        except ResultsError as error:
            raise ScreeningError(str(error)) from None
        best = stats.best
        rows.append(
            {
                "stage": stage,
                "bases": bases,
                "descriptor": stats.descriptor,
                "distance": stats.distance,
                "f1": float(best["f1"]),
                "radius": float(best["radius"]),
                "precision": float(best["precision"]),
                "recall": float(best["recall"]),
                "queries": int(stats.queries),
                "seconds": stats.seconds,
                "kept": False,
            }
        )
    table = pd.DataFrame(rows, columns=STAGE_COLUMNS)
    return rank(table)


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Best F1 first; ties by descriptor, then distance name (deterministic)."""
    order = np.lexsort((table["distance"], table["descriptor"], -table["f1"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def select(table: pd.DataFrame, min_f1: float | None = None, top_k: int | None = None):
    """Marks ``kept``: best F1 at least ``min_f1`` (when given), then at most the
    ``top_k`` best of those (when given), in :func:`rank` order."""
    table = rank(table.copy())
    kept = np.ones(len(table), dtype=bool)
    if min_f1 is not None:
        kept &= table["f1"].to_numpy() >= min_f1
    if top_k is not None:
        kept &= np.cumsum(kept) <= top_k
    table["kept"] = kept
    return table


def kept_pairs(path: str | Path) -> list[tuple[str, str]]:
    """The (descriptor, distance) pairs a stage table kept, best first."""
    table = pd.read_csv(path)
    table = table[table["kept"].astype(bool)]
    return list(zip(table["descriptor"], table["distance"], strict=True))


def screen_stage(
    stats_paths,
    out: str | Path,
    *,
    stage: int,
    bases: int,
    min_f1: float | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Writes a stage's table (CSV); fails when the stage keeps nothing."""
    table = select(stage_table(stats_paths, stage, bases), min_f1, top_k)
    if not table["kept"].any():
        reached = ""
        if len(table):
            best = table.iloc[0]
            reached = f"; the best was {best.descriptor} {best.distance} at F1 {best.f1:.4f}"
        raise ScreeningError(
            f"screening stage {stage} ({bases} bases) kept no descriptor × distance pair "
            f"(min_f1 {min_f1}, top_k {top_k}){reached}: lower screening.stages[{stage - 1}]"
            ".min_f1"
        )
    table.to_csv(out, index=False)
    return table


# --------------------------------------------------------------------------------------
# the summary table


def summary_table(stage_paths, final_stats=(), final_bases: int | None = None) -> pd.DataFrame:
    """Every stage's rows (stage order, best first within a stage), ``kept`` as
    yes/no; then, when given, the full run's protocol ``all`` results of the
    survivors as stage ``full`` (``kept`` empty)."""
    frames = [pd.read_csv(path) for path in stage_paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STAGE_COLUMNS)
    table = table.sort_values("stage", kind="stable", ignore_index=True)
    table["stage"] = table["stage"].astype(str)
    table["kept"] = np.where(table["kept"].astype(bool), "yes", "no")
    final_stats = list(final_stats)
    if final_stats:
        final = stage_table(final_stats, 0, final_bases or 0)
        final["stage"] = "full"
        if final_bases is None:
            final["bases"] = pd.NA
        final["kept"] = ""
        table = pd.concat([table, final], ignore_index=True)
    return table[STAGE_COLUMNS]


def write_summary(table: pd.DataFrame, csv: str | Path, markdown: str | Path | None) -> None:
    table.to_csv(csv, index=False)
    if markdown is not None:
        text = table.to_markdown(index=False, floatfmt=".4f", missingval="")
        Path(markdown).write_text(text + "\n")
