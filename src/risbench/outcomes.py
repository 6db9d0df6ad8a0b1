"""Per-query outcomes at a radius (issue 12, "Per-image outcomes and failures"):
per query, its tp, fp and fn, the rank of its first relevant image, and its
nearest relevant and nearest non-relevant index images.

The same distances and rules as the sweep (:func:`risbench.metrics.sweep`), so
that the per-query counts summed over the queries are the sweep's table at that
radius: the distance tiles of :mod:`risbench.distance` (prepared matrices,
fixed matrix-product blocks, bit-identical rows at exactly 0), a pair retrieved
when its raw distance is at most the radius's limit
(:class:`risbench.binning.Binner`), relevance from
:func:`risbench.metrics.relevant_pairs`, and the query's own index row
retrieved and relevant unless ``exclude_self`` (then neither). Ranks and
nearest images leave the query itself out, as the ranked metrics do; at equal
distance a non-relevant image ranks before a relevant one (the ranked
metrics' pessimistic order), so the first relevant image's rank is 1 + the
non-relevant images at most as far; the nearest image of a kind is the first
in index order among equals.

Two ways to them, with the same answers (tested): a sweep records them
while its tiles pass (``metrics.sweep(..., per_query=True)``,
:class:`QueryRecorder`), to be read at any radius of its grid -- what a
benchmark job does (:func:`protocol_frames`); or :func:`query_outcomes`, a
pass of its own over the pairs at any radii. On the CPU both use one kernel
(:mod:`risbench.cpuoutcomes`) that handles a row at a time while it is in
cache; the GPU runs the array code of :class:`_Chunk` on the whole tile.
Memory: the sweep's, plus for a recording sweep 4 bytes a query and radius
(the retrieved pairs at every radius, until :meth:`QueryRecorder.keep` drops
the radii no one will read) and one raw distance a relevant pair;
for :func:`query_outcomes` the prepared index, one tile of at most
``tile_mb`` and per thread a mask of n bytes (on a GPU a float64 copy of
the tile). Time (``benchmarks/bench_engine.py``, n = 7,000, 2 threads):
recording adds 0.02 s to a cosine sweep at d = 512 (0.26 s), where the
separate pass the benchmark job used to run took 0.31 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from risbench import binning, metrics, protocols
from risbench import distance as dist
from risbench.results import QUERY_COLUMNS


def query_outcomes(
    index,
    index_groups,
    queries,
    query_groups,
    distance: str,
    at,
    *,
    bits: int | None = None,
    query_self=None,
    exclude_self: bool = False,
    tile_mb: float = 256,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Outcomes of ``queries`` against ``index`` (the arguments of
    :func:`risbench.metrics.sweep`) at each radius of ``at``.

    Returns per query: ``tp``, ``fp``, ``fn`` (int64, one column per radius of
    ``at``); ``first_relevant_rank`` (1-based, 0: no relevant image other than
    the query); ``nearest_relevant`` and ``nearest_nonrelevant`` (distance, NaN:
    none) with ``*_index`` (the index row, -1: none)."""
    xp = dist.array_module(device)
    qp, ip = dist.prepare_pair(queries, index, distance, bits=bits, xp=xp)
    nq, n = qp.n, ip.n
    rows, cols = metrics.relevant_pairs(index_groups, query_groups, query_self)
    query_self = np.full(nq, -1) if query_self is None else np.asarray(query_self, np.int64)
    ptr = metrics.csr_pointers(rows, nq)
    limits = [_limit(r, distance, ip.bits) for r in np.atleast_1d(np.asarray(at, np.float64))]
    out = _empty(nq, len(limits))
    raw = np.dtype(dist.raw_dtype(distance, ip.bits))
    tile_rows = min(
        dist.tile_rows_for(n, tile_mb, raw.itemsize), dist.block_rows(distance, n, xp, ip.bits)
    )
    ident = dist.pairs_to_zero(qp, ip)
    tiles = dist.iter_raw_tiles(qp, ip, tile_rows, ident, deferred=True)
    for start, stop, tile, finish in tiles:
        if dist.is_numpy(xp):  # one kernel, a row at a time (cpuoutcomes)
            from risbench import cpuoutcomes

            row_finish = finish(0, stop - start, in_kernel=True)
            found = cpuoutcomes.outcome_rows(
                tile, start, limits, (ptr, cols), query_self, row_finish
            )
        else:
            finish(0, stop - start)
            found = _Chunk(tile, start, stop, rows, cols, ptr, query_self, xp).found(limits)
        _write(out, start, stop, found, np.diff(ptr[start : stop + 1]), query_self, exclude_self)
    scale = dist.raw_scale(distance, ip.bits)
    out["nearest_relevant"] /= scale
    out["nearest_nonrelevant"] /= scale
    return out


def _limit(radius: float, distance: str, bits: int | None) -> float:
    """The largest raw distance retrieved at ``radius`` (the sweep's rule)."""
    binner = binning.Binner(np.array([radius]), distance, bits, np)
    return float(binner.limit[0])


def _empty(nq: int, k: int) -> dict[str, np.ndarray]:
    return {
        "tp": np.zeros((nq, k), np.int64),
        "fp": np.zeros((nq, k), np.int64),
        "fn": np.zeros((nq, k), np.int64),
        "first_relevant_rank": np.zeros(nq, np.int64),
        "nearest_relevant": np.full(nq, np.nan),
        "nearest_relevant_index": np.full(nq, -1, np.int64),
        "nearest_nonrelevant": np.full(nq, np.nan),
        "nearest_nonrelevant_index": np.full(nq, -1, np.int64),
    }


def _write(out, q0: int, q1: int, found: dict, nrel, query_self, exclude_self: bool) -> None:
    """The outcomes of queries q0:q1 from their raw numbers (``found``: as
    :func:`risbench.cpuoutcomes.outcome_rows` returns them; ``nrel``: their
    relevant pairs other than themselves): the query's own index row is
    retrieved and relevant unless ``exclude_self`` (then neither)."""
    sl = slice(q0, q1)
    self_hit = found["self_hit"]
    retrieved, tp = found["retrieved"], found["tp"]
    if exclude_self:
        retrieved, relevant = retrieved - self_hit, nrel
    else:
        tp, relevant = tp + self_hit, nrel + (query_self[sl] >= 0)
    out["tp"][sl] = tp
    out["fp"][sl] = retrieved - tp
    out["fn"][sl] = relevant[:, None] - tp
    near, at = found["nearest"], found["nearest_at"]
    for j, kind in enumerate(("relevant", "nonrelevant")):
        out[f"nearest_{kind}"][sl] = near[:, j]
        out[f"nearest_{kind}_index"][sl] = at[:, j]
    out["first_relevant_rank"][sl] = np.where(at[:, 0] >= 0, found["before"] + 1, 0)


class QueryRecorder:
    """The per-query outcomes of a sweep, recorded while its tiles pass
    (``metrics.sweep(..., per_query=True)``) and read at any radius of its
    grid (:meth:`at`): the numbers :func:`query_outcomes` computes on the same
    inputs, without its second pass over the pairs (and their matrix
    products). Per tile, once its rows are distances: each query's retrieved
    pairs at every radius (the sweep's counts, the query itself counted), the
    raw distances of its relevant and own pairs, and its nearest relevant and
    other images (the CPU kernel, or the GPU's array code).

    Memory: 4 bytes a query and radius (4 KB a query on the default 1,025
    radii: 0.7 GB at 175,000 queries) until :meth:`keep` drops the radii no
    one will read, one raw distance a relevant pair and O(queries) more."""

    def __init__(self, problem, limits: np.ndarray, raw) -> None:
        p = self.p = problem
        self.limits = np.asarray(limits)  # (host; the grid's, Binner.limit)
        self.kept = np.arange(p.R + 1)  # the grid positions of cum's columns
        self.cum = np.empty((p.nq, p.R + 1), dtype=np.int32)
        self.rel_raw = np.empty(len(p.rel_cols), dtype=raw)
        self.self_raw = np.zeros(p.nq, dtype=raw)
        self.nearest = np.full((p.nq, 2), np.nan)
        self.nearest_at = np.full((p.nq, 2), -1, dtype=np.int64)
        self.before = np.zeros(p.nq, dtype=np.int64)

    def add(self, start: int, stop: int, raw, cum, pair_raw, own_raw, xp) -> None:
        """Queries start:stop: ``raw`` their distances (raw units, on ``xp``;
        left as they are), ``cum`` their retrieved pairs per radius with the
        query itself counted, ``pair_raw`` the distances of their relevant
        pairs (in the problem's order), ``own_raw`` those of the queries in
        the index with their own rows (the sweep's step 2 reads both)."""
        p, sl = self.p, slice(start, stop)
        self.cum[sl] = dist.to_numpy(cum)
        self.rel_raw[int(p.rel_ptr[start]) : int(p.rel_ptr[stop])] = dist.to_numpy(pair_raw)
        self.self_raw[start + np.flatnonzero(p.has_self[sl])] = dist.to_numpy(own_raw)
        if dist.is_numpy(xp):
            from risbench import cpuoutcomes

            relevant = (p.rel_ptr, p.rel_cols)
            found = cpuoutcomes.outcome_rows(raw, start, [], relevant, p.query_self)
        else:
            chunk = _Chunk(raw, start, stop, p.rel_rows, p.rel_cols, p.rel_ptr, p.query_self, xp)
            found = chunk.found([])
        self.nearest[sl], self.nearest_at[sl] = found["nearest"], found["nearest_at"]
        self.before[sl] = found["before"]

    def view(self, rows: np.ndarray) -> RecordedOutcomes:
        """The records of the queries ``rows`` (a query set's)."""
        return RecordedOutcomes(self, np.asarray(rows, dtype=np.int64))

    def keep(self, radii) -> None:
        """Keeps the counts at ``radii`` (of the grid) and drops the others:
        O(queries) memory from then on, and :meth:`at` reads those radii only."""
        col = np.unique(self._columns(radii))
        self.cum, self.kept = np.ascontiguousarray(self.cum[:, col]), self.kept[col]

    def _columns(self, radii) -> np.ndarray:
        """The columns of ``cum`` that hold ``radii`` (a ValueError when one is
        not a radius of the grid, or one :meth:`keep` dropped)."""
        p = self.p
        radii = np.atleast_1d(np.asarray(radii, dtype=np.float64))
        j = np.minimum(np.searchsorted(p.radii, radii), p.R)
        col = np.minimum(np.searchsorted(self.kept, j), len(self.kept) - 1)
        if not (np.array_equal(p.radii[j], radii) and np.array_equal(self.kept[col], j)):
            raise ValueError(
                f"outcomes are recorded at the sweep's radii {p.radii[self.kept]} only, "
                f"not at {radii}"
            )
        return col

    def at(self, radii, rows) -> dict[str, np.ndarray]:
        """:func:`query_outcomes`'s outcomes of the queries ``rows`` at each
        radius of ``radii`` (recorded ones: :meth:`_columns`)."""
        p, col = self.p, self._columns(radii)
        j = self.kept[col]
        limits = self.limits[j]
        found = {"retrieved": self.cum[rows[:, None], col[None, :]].astype(np.int64)}
        found["tp"] = np.empty((len(rows), len(j)), dtype=np.int64)
        for k, limit in enumerate(limits):
            hit = self.rel_raw <= limit
            found["tp"][:, k] = np.bincount(p.rel_rows[hit], minlength=p.nq)[rows]
        found["self_hit"] = p.has_self[rows, None] & (self.self_raw[rows, None] <= limits[None, :])
        found["nearest"], found["nearest_at"] = self.nearest[rows], self.nearest_at[rows]
        found["before"] = self.before[rows]
        out = _empty(len(rows), len(j))
        nrel = np.diff(p.rel_ptr)[rows]
        _write(out, 0, len(rows), found, nrel, p.query_self[rows], p.exclude_self)
        out["nearest_relevant"] /= p.scale
        out["nearest_nonrelevant"] /= p.scale
        return out


@dataclass(frozen=True, eq=False)
class RecordedOutcomes:
    """A query set's view of a :class:`QueryRecorder` (a sweep result's
    ``per_query``): :meth:`at` reads its queries' outcomes."""

    recorder: QueryRecorder
    rows: np.ndarray

    def at(self, radii) -> dict[str, np.ndarray]:
        return self.recorder.at(radii, self.rows)


class _Chunk:
    """Query rows q0:q1 of a distance tile (``x``, raw units, on ``xp``) and their
    relevant pairs (other than the query itself) and self pairs: the array code
    of the GPU (float64 copies of the tile), with the CPU kernel's answers."""

    def __init__(self, x, q0, q1, rows, cols, ptr, query_self, xp):
        self.x, self.q0, self.q1, self.xp = x, q0, q1, xp
        p0, p1 = int(ptr[q0]), int(ptr[q1])
        self.rr, self.rc = rows[p0:p1] - q0, cols[p0:p1]
        own = query_self[q0:q1]
        self.sr = np.flatnonzero(own >= 0)
        self.sc = own[self.sr]
        self.rx = dist.to_numpy(x[xp.asarray(self.rr), xp.asarray(self.rc)]).astype(np.float64)
        self.sx = dist.to_numpy(x[xp.asarray(self.sr), xp.asarray(self.sc)]).astype(np.float64)

    def found(self, limits) -> dict:
        """:func:`risbench.cpuoutcomes.outcome_rows`'s numbers."""
        m, k = self.q1 - self.q0, len(limits)
        found = {name: np.zeros((m, k), np.int64) for name in ("retrieved", "tp")}
        found["self_hit"] = np.zeros((m, k), bool)
        for j, limit in enumerate(limits):
            found["retrieved"][:, j] = dist.to_numpy((self.x <= limit).sum(axis=1))
            found["tp"][:, j] = np.bincount(self.rr[self.rx <= limit], minlength=m)
            found["self_hit"][self.sr, j] = self.sx <= limit
        self._nearest(found)
        return found

    def _nearest(self, found) -> None:
        """Nearest relevant (from the pairs), nearest non-relevant (the rows with
        the relevant and self pairs hidden) and the others before the first."""
        xp, m = self.xp, self.q1 - self.q0
        near, at = np.full((m, 2), np.nan), np.full((m, 2), -1, np.int64)
        if self.rr.size:
            order = np.lexsort((self.rc, self.rx, self.rr))  # per query: nearest, then index
            first = order[np.r_[True, self.rr[order][1:] != self.rr[order][:-1]]]
            near[self.rr[first], 0] = self.rx[first]
            at[self.rr[first], 0] = self.rc[first]
        hidden = self.x.astype(np.float64)
        hidden[xp.asarray(self.rr), xp.asarray(self.rc)] = np.inf
        hidden[xp.asarray(self.sr), xp.asarray(self.sc)] = np.inf
        col = hidden.argmin(axis=1)
        value = dist.to_numpy(hidden[xp.arange(m), col])
        nonrel = np.isfinite(value)
        near[:, 1] = np.where(nonrel, value, np.nan)
        at[:, 1] = np.where(nonrel, dist.to_numpy(col), -1)
        # NaN compares false: queries without a relevant image count nothing
        found["before"] = dist.to_numpy((hidden <= xp.asarray(near[:, 0])[:, None]).sum(axis=1))
        found["nearest"], found["nearest_at"] = near, at


def protocol_frames(catalog: pd.DataFrame, swept: dict, radii: dict) -> dict[str, pd.DataFrame]:
    """Per protocol of ``radii`` (protocol → a radius of its sweep's grid, its
    best), the per-query outcomes frame (:data:`risbench.results.QUERY_COLUMNS`,
    one row per query in the protocol's query order) from what its sweep
    recorded (``swept``: :func:`risbench.protocols.run_many`'s results, with
    ``per_query``)."""
    out = {}
    for name, radius in radii.items():
        recorded = swept[name].per_query
        if recorded is None:
            raise ValueError(f"the sweep of protocol {name} recorded no per-query outcomes")
        chosen = protocols.select(catalog, name)
        out[name] = frame(recorded.at([radius]), 0, catalog, chosen["index"], chosen["queries"])
    return out


def frame(found: dict, k: int, catalog, index_pos, query_pos) -> pd.DataFrame:
    """The outcomes at radius ``k`` of :func:`query_outcomes` (or
    :meth:`QueryRecorder.at`) as a table of :data:`risbench.results.QUERY_COLUMNS`;
    ``index_pos``, ``query_pos``: the catalog rows of the index and queries."""
    image_id = catalog["image_id"].to_numpy()
    variant = catalog["variant"].to_numpy()
    queries = np.asarray(query_pos)
    table = {
        "image_id": image_id[queries],
        "variant": variant[queries],
        "path": catalog["path"].to_numpy()[queries],
        "tp": found["tp"][:, k],
        "fp": found["fp"][:, k],
        "fn": found["fn"][:, k],
        "first_relevant_rank": pd.array(found["first_relevant_rank"], dtype="Int64"),
    }
    table["first_relevant_rank"][table["first_relevant_rank"] == 0] = pd.NA
    for kind in ("relevant", "nonrelevant"):
        at = found[f"nearest_{kind}_index"]
        rows_at = np.asarray(index_pos)[np.maximum(at, 0)]
        table[f"nearest_{kind}_distance"] = found[f"nearest_{kind}"]
        table[f"nearest_{kind}_image_id"] = np.where(at >= 0, image_id[rows_at], None)
        table[f"nearest_{kind}_variant"] = np.where(at >= 0, variant[rows_at], None)
    return pd.DataFrame(table, columns=list(QUERY_COLUMNS))
