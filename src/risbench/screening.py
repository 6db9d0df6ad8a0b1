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

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from risbench import store
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


def read_rows(path: str | Path, rows: np.ndarray, **expect) -> tuple[np.ndarray, dict]:
    """Rows ``rows`` (increasing positions) of a descriptor store and its attributes;
    only the chunks holding them are read, each checked for presence, decoding and
    digest (:func:`risbench.store.read_rows`; ``expect``: attributes it must have)."""
    return store.read_rows(path, rows, **expect)


def load_first_bases(
    catalog: pd.DataFrame,
    stores: dict[str, str],
    bases: int,
    *,
    descriptor: str | None = None,
    kind: str | None = None,
    dim: int | None = None,
    check_variant: bool = False,
):
    """(catalog, matrices, attrs) of the first ``bases`` base groups, reading
    only their rows of each variant's store (``stores``: variant → path).

    Every store must hold as many rows as its variant has in ``catalog`` and
    agree with the first on descriptor, kind and dim (or with those given);
    ``check_variant``: each must also record its own variant."""
    subset, rows = first_bases(catalog, bases)
    counts = catalog["variant"].value_counts()
    matrices, attrs = store.read_stores(
        stores,
        descriptor=descriptor,
        kind=kind,
        dim=dim,
        rows={variant: int(counts.get(variant, 0)) for variant in stores},
        positions={variant: rows.get(variant, np.empty(0, np.int64)) for variant in stores},
        check_variant=check_variant,
    )
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
    """The (descriptor, distance) pairs a stage table kept, best first (the file's
    order); a table that keeps none is damaged (:func:`screen_stage` never writes one)."""
    table = read_stage_table(path)
    kept = table[table["kept"]]
    pairs = list(zip(kept["descriptor"], kept["distance"], strict=True))
    if not pairs:
        raise ScreeningError(f"{path}: the stage table keeps no pair")
    return pairs


# A stage table is the CSV pandas writes for STAGE_COLUMNS: `kept` is True or False,
# `seconds` may be empty (stats without timing), every line ends with a newline.
_TYPES = {"stage": int, "bases": int, "queries": int, "descriptor": str, "distance": str}
_TYPES.update({name: float for name in ("f1", "radius", "precision", "recall", "seconds")})
_KEPT = {"True": True, "False": False}


def write_stage_table(table: pd.DataFrame, out: str | Path) -> None:
    """Writes a stage table atomically (a partial file is renamed into place)."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    table[STAGE_COLUMNS].to_csv(partial, index=False)
    os.replace(partial, out)


def _parse_field(path, line: int, name: str, text: str):
    if name == "kept":
        if text not in _KEPT:
            raise ScreeningError(f"{path}, line {line}: kept is {text!r}, not True or False")
        return _KEPT[text]
    if name == "seconds" and text == "":
        return None
    try:
        value = _TYPES[name](text)
    except ValueError:
        value = None
    if value is None or value == "" or (isinstance(value, float) and not np.isfinite(value)):
        raise ScreeningError(f"{path}, line {line}: {name} is {text!r}, not a valid {name}")
    return value


def read_stage_table(path: str | Path) -> pd.DataFrame:
    """A stage table written by :func:`write_stage_table`, parsed strictly: the exact
    header, 11 fields a row, typed values, ``kept`` True/False, no repeated pair and
    a final newline; anything else raises :class:`ScreeningError` with the line number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScreeningError(f"{path}: cannot read the stage table ({error})") from error
    lines = text.split("\n")
    if lines[-1] != "":  # pandas ends every row with a newline: the last one was cut
        raise ScreeningError(f"{path}, line {len(lines)}: truncated (no end of line)")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != STAGE_COLUMNS:
        raise ScreeningError(f"{path}, line 1: header {header}, expected {STAGE_COLUMNS}")
    rows, seen = [], {}
    for fields in reader:
        line = reader.line_num
        if len(fields) != len(STAGE_COLUMNS):
            raise ScreeningError(
                f"{path}, line {line}: {len(fields)} fields, {len(STAGE_COLUMNS)} expected"
            )
        named = zip(STAGE_COLUMNS, fields, strict=True)
        row = {name: _parse_field(path, line, name, text) for name, text in named}
        pair = (row["descriptor"], row["distance"])
        if pair in seen:
            raise ScreeningError(f"{path}, line {line}: {pair} repeats line {seen[pair]}")
        seen[pair] = line
        rows.append(row)
    return pd.DataFrame(rows, columns=STAGE_COLUMNS).astype({"kept": bool})


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
    write_stage_table(table, out)
    return table


# --------------------------------------------------------------------------------------
# the summary table


def summary_table(stage_paths, final_stats=(), final_bases: int | None = None) -> pd.DataFrame:
    """Every stage's rows (stage order, best first within a stage), ``kept`` as
    yes/no; then, when given, the full run's protocol ``all`` results of the
    survivors as stage ``full`` (``kept`` empty)."""
    frames = [read_stage_table(path) for path in stage_paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STAGE_COLUMNS)
    table = table.sort_values("stage", kind="stable", ignore_index=True)
    table["stage"] = table["stage"].astype(str)
    table["kept"] = np.where(table["kept"].to_numpy(dtype=bool), "yes", "no")
    final_stats = list(final_stats)
    if final_stats:
        final = stage_table(final_stats, 0, final_bases or 0)
        final["stage"] = "full"
        if final_bases is None:
            final["bases"] = pd.NA
        final["kept"] = ""
        table = pd.concat([table, final], ignore_index=True)
    return table[STAGE_COLUMNS]


def base_count(catalog_path: str | Path) -> int:
    """The full run's number of base images: its catalog's original bases."""
    images = pd.read_parquet(catalog_path, columns=["variant", "role"])
    return int(((images["variant"] == "original") & (images["role"] == "base")).sum())


def write_summary(table: pd.DataFrame, csv: str | Path, markdown: str | Path | None) -> None:
    table.to_csv(csv, index=False)
    if markdown is not None:
        text = table.to_markdown(index=False, floatfmt=".4f", missingval="")
        Path(markdown).write_text(text + "\n")
