"""The benchmark job: one descriptor and one distance, every protocol.

The job reads the descriptor's stores once (checked: complete, and the
descriptor they claim to be), runs every requested protocol
(:func:`risbench.protocols.run_many`: ``all`` and ``distractors`` share one
sweep) and writes, per protocol, the per-radius table (parquet), the stats
(:class:`risbench.results.BenchmarkStats`, with the operating points of
``target_precisions``) and, where asked, the per-query outcomes at the best
radius (:mod:`risbench.outcomes`, recorded by the sweeps themselves), then a
run index naming them all
(:class:`risbench.results.RunIndex`), which is what the summary reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from risbench import catalog, operating, protocols, results, screening, store
from risbench import split as training_split
from risbench.jobtime import compute

log = logging.getLogger("risbench")


@dataclass(frozen=True)
class Outputs:
    """Where one protocol's results go."""

    table: str
    stats: str
    queries: str | None = None  # per-query outcomes at the best radius (none: not written)


def load(lists: dict[str, str], stores: dict[str, str], descriptor: str, bases: int | None):
    """The catalog of the listed variants and each variant's descriptor matrix, every
    store checked (complete, this descriptor, one kind and dim, its variant's row
    count). ``bases``: only the first N base groups and the distractors, reading
    only their rows (a screening stage).

    Returns (catalog, matrices, attrs of the first store)."""
    if set(lists) != set(stores):
        raise ValueError(
            f"variants with a list {sorted(lists)} and a store {sorted(stores)} differ"
        )
    images = catalog.assemble([pd.read_parquet(path) for path in lists.values()])
    if bases is not None:
        subset = screening.load_first_bases(
            images, stores, bases, descriptor=descriptor, check_variant=True
        )
        log.info("first %d base groups: %d images", bases, len(subset[0]))
        return subset
    counts = images["variant"].value_counts()
    matrices, attrs = store.read_stores(
        stores,
        descriptor=descriptor,
        rows={v: int(counts.get(v, 0)) for v in stores},
        check_variant=True,
    )
    return images, matrices, attrs


def run(
    descriptor: str,
    distance: str,
    lists: dict[str, str],
    stores: dict[str, str],
    outputs: dict[str, Outputs],
    spec: dict,
    *,
    bases: int | None = None,
    run_index: str | None = None,
) -> None:
    """Benchmarks ``descriptor`` under ``distance`` for every protocol in ``outputs``.

    ``bases``: only the first N base groups (and the distractors), read from the
    full stores: a screening stage (protocol ``all`` only)."""
    with compute("load, sweeps, write"):
        swept, attrs, width, data = _sweep(
            descriptor, distance, lists, stores, outputs, spec, bases
        )
        queries = _outcomes(swept, data[0], outputs)
        _write(swept, descriptor, distance, attrs, width, outputs, run_index, spec, queries)


def _sweep(descriptor, distance, lists, stores, outputs, spec, bases):
    images, matrices, attrs = load(lists, stores, descriptor, bases)
    # compress configured: no descriptor is benchmarked on the codes' training groups
    images, matrices = training_split.leave_out(images, matrices, spec.get("training_split"))
    radius = spec.get("radius", {}).get(distance) or {}
    swept = protocols.run_many(
        images,
        matrices,
        list(outputs),
        distance,
        bits=_code_bits(attrs),
        radius_step=radius.get("step"),
        radius_max=radius.get("max"),
        exclude_self=spec["exclude_self"],
        tile_mb=spec["tile_mb"],
        device=spec["device"],
        beta=spec["beta"],
        top_k=spec["top_k"],
        per_query=any(o.queries for o in outputs.values()),
    )
    return swept, attrs, next(iter(matrices.values())).shape[1], (images, matrices)


def _code_bits(attrs: dict) -> int | None:
    """The code bits of a binary or rv store (its ``dim``); None for floats."""
    return attrs["dim"] if attrs["kind"] != "float" else None


def _outcomes(swept, images, outputs) -> dict:
    """The per-query outcomes (:mod:`risbench.outcomes`) of the protocols with a
    ``queries`` output, each at its best radius, from what their sweeps
    recorded: protocol → frame."""
    wanted = {p: swept[p].best()["radius"] for p, o in outputs.items() if o.queries}
    if not wanted:
        return {}
    from risbench import outcomes  # lazily: only jobs that write outcomes

    return outcomes.protocol_frames(images, swept, wanted)


def _write(swept, descriptor, distance, attrs, width, outputs, run_index, spec, queries) -> None:
    """Every protocol's table, stats and per-query outcomes (where asked), then the
    run index naming them."""
    targets = spec.get("target_precisions", operating.TARGET_PRECISIONS)
    for protocol, result in swept.items():
        stats = results.BenchmarkStats.from_sweep(
            result,
            protocol=protocol,
            descriptor=descriptor,
            distance=distance,
            kind=attrs["kind"],
            dim=attrs["dim"],
            width=width,
            seconds=result.seconds,
            targets=targets,
        )
        result.table().to_parquet(outputs[protocol].table, index=False)
        stats.write(outputs[protocol].stats)
        if protocol in queries:
            queries[protocol].to_parquet(outputs[protocol].queries, index=False)
        _log_best(stats)
    if run_index:
        index = {}
        for protocol, out in outputs.items():
            index[protocol] = {"table": out.table, "stats": out.stats}
            if out.queries:
                index[protocol]["queries"] = out.queries
        results.RunIndex(descriptor, distance, index).write(run_index)


def _log_best(stats) -> None:
    best = stats.best
    log.info(
        "%s %s %s: best F1 %.4f at radius %.4f (P %.4f, R %.4f), %d queries, %.2f s",
        stats.protocol,
        stats.descriptor,
        stats.distance,
        best["f1"],
        best["radius"],
        best["precision"],
        best["recall"],
        stats.queries,
        stats.seconds,
    )
