"""A small Python API for notebooks: a finished run's tables, its per-query outcomes,
and image indexes.

    from risbench import api

    tables = api.load_run("results")            # {"table3_all": DataFrame, ...}
    tables["table3_all"].head()
    per_query = api.outcomes("results", "dct", "hamming", "all")
    index = api.open_index("my.index")
    index.query("photo.jpg")                    # [(image path, distance), ...] nearest first

Every file is found the way the workflow writes it: the summary tables under
``{results}/tables/`` (:data:`risbench.results.TABLES`), a benchmark's outputs
through its run index (:class:`risbench.results.RunIndex`). A missing or
unreadable file raises :class:`risbench.results.ResultsError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

from risbench.imageindex import ImageIndex
from risbench.results import TABLES, ResultsError, RunIndex, run_index_path

__all__ = ["load_run", "open_index", "outcomes"]


def load_run(results_dir: str | os.PathLike = "results") -> dict:
    """The summary tables of a finished run: {table name: DataFrame}, in
    :data:`risbench.results.TABLES` order, read from ``{results_dir}/tables/{name}.csv``."""
    import pandas as pd

    tables = {}
    for name in TABLES:
        path = Path(results_dir) / "tables" / f"{name}.csv"
        if not path.is_file():
            raise ResultsError(f"{path}: no such table (is the run finished?)")
        tables[name] = pd.read_csv(path)
    return tables


def outcomes(results_dir: str | os.PathLike, descriptor: str, distance: str, protocol: str = "all"):
    """The per-query outcomes of one benchmark (descriptor × distance × protocol)
    as a DataFrame: the parquet file its run index lists under ``queries``."""
    import pandas as pd

    path = run_index_path(descriptor, distance, results_dir)
    run = RunIndex.read(path)
    if protocol not in run.protocols:
        raise ResultsError(f"{path}: no protocol {protocol!r}; it has {', '.join(run.protocols)}")
    queries = run.protocols[protocol].get("queries")
    if queries is None:
        raise ResultsError(f"{path}: protocol {protocol!r} lists no per-query outcomes")
    if not Path(queries).is_file():
        raise ResultsError(f"{queries}: no such per-query outcomes file (listed in {path})")
    return pd.read_parquet(queries)


def open_index(path: str | os.PathLike, descriptor: str | None = None) -> ImageIndex:
    """An index written by ``risbench index``; ``.query(photo)`` gives the indexed
    images within its radius, nearest first, as (path, distance) pairs. Refused
    (:class:`risbench.imageindex.IndexError_`) like ``risbench query`` refuses it."""
    return ImageIndex.load(path, descriptor)
