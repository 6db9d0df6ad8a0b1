"""Benchmark protocols: which images are indexed, which are queries.

The catalog (``images.parquet``) has one row per benchmark image: ``row``,
``image_id``, ``variant``, ``group`` (the base image's id), ``role`` (``base``,
``modified``, ``distractor``) and ``path``. Descriptors come per variant:
``matrices[variant]`` holds the rows of ``catalog[catalog.variant == variant]``
in that order.

Protocols (design.md, "The paper's definitions"):

- ``all`` (paper §6): index = every base and modified image; queries = the
  same images, each query in the index (and relevant to itself unless
  ``exclude_self``);
- ``distractors`` (paper §5.2): as ``all``, plus the distractor images as extra
  queries that are never indexed (nothing is relevant to them: recall 1,
  precision 0 as soon as they retrieve anything);
- ``single-{variant}`` (paper §5.3.1, §6.6): index = the N base images; queries
  = the N images of that variant, one relevant image each (for ``original``
  the base images themselves, each in the index);
- ``queries`` (a pairs data set, ISC2021's protocol): index = the base images
  (its references); queries = its queries (role ``query``), each relevant to
  the references its ground truth lists, possibly several or none
  (``catalog.group_labels``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from risbench import catalog as catalogs
from risbench import metrics

PROTOCOLS = ("all", "distractors", "single-{variant}", "queries")
INDEXED_ROLES = ("base", "modified")


def parse(protocol: str) -> tuple[str, str | None]:
    """``all`` → ("all", None); ``single-blur`` → ("single", "blur")."""
    if protocol in ("all", "distractors", "queries"):
        return protocol, None
    if protocol.startswith("single-") and len(protocol) > len("single-"):
        return "single", protocol[len("single-") :]
    raise ValueError(
        f"unknown protocol {protocol!r}: one of all, distractors, queries, single-<variant>"
    )


def select(catalog: pd.DataFrame, protocol: str) -> dict:
    """The catalog rows of a protocol's index and queries.

    Returns ``index`` and ``queries`` (positions in ``catalog``, in catalog
    order; distractor queries after the others) and ``query_self`` (per query,
    its position in the index, or -1)."""
    missing = {"variant", "group", "role"} - set(catalog.columns)
    if missing:
        raise ValueError(f"catalog lacks columns {sorted(missing)}")
    kind, variant = parse(protocol)
    role = catalog["role"].to_numpy()
    variants = catalog["variant"].to_numpy()
    if kind in ("all", "distractors"):
        index = np.flatnonzero(np.isin(role, INDEXED_ROLES))
        queries = index
        query_self = np.arange(index.size)
        if kind == "distractors":
            extra = np.flatnonzero(role == "distractor")
            queries = np.concatenate([index, extra])
            query_self = np.concatenate([query_self, np.full(extra.size, -1)])
    elif kind == "queries":
        index = np.flatnonzero(role == "base")
        queries = np.flatnonzero(role == catalogs.QUERY_ROLE)
        if queries.size == 0:
            raise ValueError("protocol queries: the catalog has no queries (a pairs data set's)")
        query_self = np.full(queries.size, -1)
    else:
        index = np.flatnonzero(role == "base")
        if variant == "original":
            queries = index
            query_self = np.arange(index.size)
        else:
            queries = np.flatnonzero((variants == variant) & (role == "modified"))
            if queries.size == 0:
                raise ValueError(f"protocol {protocol}: the catalog has no {variant!r} images")
            query_self = np.full(queries.size, -1)
    if index.size == 0:
        raise ValueError(f"protocol {protocol}: nothing to index")
    return {"index": index, "queries": queries, "query_self": query_self.astype(np.int64)}


def gather(catalog: pd.DataFrame, matrices: dict, positions: np.ndarray) -> np.ndarray:
    """Descriptor rows of the catalog rows at ``positions`` (one matrix per
    variant, rows in catalog order within the variant)."""
    variants = catalog["variant"].to_numpy()
    rank = catalog.groupby("variant", sort=False).cumcount().to_numpy()
    needed = pd.unique(variants[positions])
    first = None
    for v in needed:
        if v not in matrices:
            raise ValueError(f"no descriptors for variant {v!r}")
        m = np.asarray(matrices[v])
        count = int((variants == v).sum())
        if m.shape[0] != count:
            raise ValueError(
                f"variant {v!r}: {m.shape[0]} descriptor rows for {count} catalog rows"
            )
        first = m if first is None else first
    out = np.empty((positions.size, *first.shape[1:]), dtype=first.dtype)
    for v in needed:
        m = np.asarray(matrices[v])
        if m.shape[1:] != first.shape[1:] or m.dtype != first.dtype:
            raise ValueError(f"variant {v!r}: descriptors differ in shape or dtype")
        where = np.flatnonzero(variants[positions] == v)
        out[where] = m[rank[positions[where]]]
    return out


def _looks_normalised(x: np.ndarray) -> bool:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return bool(np.all((np.abs(norms - 1) < 1e-3) | (norms == 0)))


def euclidean_max_radius(index: np.ndarray, queries: np.ndarray) -> float:
    """The default largest euclidean radius: 2 for L2-normalised vectors (every
    distance is then ≤ 2), else twice the largest norm over index and queries,
    a bound on every distance (|q - i| ≤ |q| + |i|), so the grid covers every
    pair and therefore the best radius. Deterministic."""
    if _looks_normalised(index) and _looks_normalised(queries):
        return 2.0
    largest = 0.0
    for x in (index, queries):
        if len(x):
            largest = max(
                largest, float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).max())
            )
    return 2.0 * largest if largest > 0 else 2.0


def _grid(distance, index, queries, bits, radius_step, radius_max) -> np.ndarray:
    """The radius grid of a protocol (see :func:`run`)."""
    if distance == "euclidean" and radius_max is None:
        radius_max = euclidean_max_radius(index, queries)
    if radius_max is not None and not math.isfinite(float(radius_max)):
        raise ValueError("radius_max must be finite")
    return metrics.radius_grid(distance, bits=bits, step=radius_step, max_radius=radius_max)


def sweep_inputs(
    catalog: pd.DataFrame,
    matrices: dict,
    protocol: str,
    distance: str,
    *,
    bits: int | None = None,
    radius_step: float | None = None,
    radius_max: float | None = None,
) -> dict:
    """The data arguments of :func:`risbench.metrics.sweep` for one protocol:
    ``index``, ``index_groups``, ``queries``, ``query_groups``, ``radii``,
    ``bits`` (hamming: 8 × bytes unless given) and ``query_self``."""
    chosen = select(catalog, protocol)
    index = gather(catalog, matrices, chosen["index"])
    same = chosen["queries"] is chosen["index"]
    queries = index if same else gather(catalog, matrices, chosen["queries"])
    groups = catalog["group"].to_numpy()
    if distance == "hamming" and bits is None:
        bits = 8 * index.shape[1]
    return {
        "index": index,
        "index_groups": groups[chosen["index"]],
        "queries": queries,
        "query_groups": catalogs.group_labels(groups[chosen["queries"]]),
        "radii": _grid(distance, index, queries, bits, radius_step, radius_max),
        "bits": bits,
        "query_self": chosen["query_self"],
    }


def run(
    catalog: pd.DataFrame, matrices: dict, protocol: str, distance: str, **options
) -> metrics.SweepResult:
    """Sweep one protocol for one descriptor and distance: :func:`run_many` of
    that protocol alone (``options``: its keyword arguments).

    The grid is :func:`risbench.metrics.radius_grid` with ``radius_step`` and
    ``radius_max``; for euclidean without ``radius_max`` its maximum is
    :func:`euclidean_max_radius` of the data, with the default step rounded to
    a power of two (about 1024 steps)."""
    return run_many(catalog, matrices, [protocol], distance, **options)[protocol]


def run_many(
    catalog: pd.DataFrame,
    matrices: dict,
    protocol_names,
    distance: str,
    *,
    bits: int | None = None,
    radius_step: float | None = None,
    radius_max: float | None = None,
    exclude_self: bool = False,
    tile_mb: float = 256,
    device: str = "auto",
    beta: float = 1.0,
    top_k: int = 10,
    per_query: bool = False,
) -> dict[str, metrics.SweepResult]:
    """Every protocol of ``protocol_names`` for one descriptor and distance:
    ``{protocol: result}`` in the order given, each result identical to a
    sweep of that protocol alone.

    ``all`` and ``distractors``, when both are asked, come out of one sweep:
    ``all``'s queries are the first queries of ``distractors`` against the same
    index (:func:`risbench.metrics.sweep` with ``query_sets``), unless their
    radius grids differ (euclidean without ``radius_max``, when a distractor
    has the largest norm): then each runs its own. ``single-*`` protocols run
    their own (small) sweeps. ``seconds``: the time of the sweep that produced
    the result, so the shared sweep's time is reported on both ``all`` and
    ``distractors``. ``per_query``: each result also records its queries'
    outcomes at its best radius (:func:`risbench.metrics.sweep`'s
    ``per_query``, the other radii dropped once its sweep is done: the
    records of one sweep at a time take O(queries × radii) memory)."""
    names = list(dict.fromkeys(protocol_names))
    if not names:
        raise ValueError("no protocol to run")
    for name in names:
        parse(name)
    grid = {"bits": bits, "radius_step": radius_step, "radius_max": radius_max}
    options = {"exclude_self": exclude_self, "tile_mb": tile_mb, "device": device}
    options.update(beta=beta, top_k=top_k, per_query=per_query)
    results = {}
    if "all" in names and "distractors" in names:
        results = _keep_best(_all_and_distractors(catalog, matrices, distance, grid, options))
    for name in names:
        if name not in results:
            inputs = sweep_inputs(catalog, matrices, name, distance, **grid)
            result = metrics.sweep(distance=distance, **inputs, **options)
            results.update(_keep_best({name: result}))
    return {name: results[name] for name in names}


def _keep_best(results: dict) -> dict:
    """The results of one sweep, their per-query records (if any) kept at the
    results' best radii only."""
    recorded = [r for r in results.values() if r.per_query is not None]
    if recorded:
        best = [r.best()["radius"] for r in recorded]
        recorded[0].per_query.recorder.keep(best)  # (one recorder a sweep)
    return results


def _all_and_distractors(catalog, matrices, distance, grid: dict, options: dict) -> dict:
    """``all`` and ``distractors`` from one sweep over ``distractors``' queries
    (``all``'s come first: see :func:`select`); empty when their grids differ."""
    inputs = sweep_inputs(catalog, matrices, "distractors", distance, **grid)
    index = inputs["index"]
    first = select(catalog, "distractors")["queries"][: len(index)]
    if not np.array_equal(select(catalog, "all")["queries"], first):
        return {}  # (select puts the distractor queries last: never here)
    all_grid = _grid(
        distance, index, index, inputs["bits"], grid["radius_step"], grid["radius_max"]
    )
    if not np.array_equal(all_grid, inputs["radii"]):
        return {}
    sets = {"all": np.arange(len(index)), "distractors": np.arange(len(inputs["queries"]))}
    return metrics.sweep(distance=distance, query_sets=sets, **inputs, **options)
