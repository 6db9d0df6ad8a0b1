"""The radius sweep: precision, recall and F-scores at every radius in one pass.

Definitions (design.md, "The paper's definitions"): for a query q and radius r
the result is {i in index : d(q, i) ≤ r}; relevant images share the query's
group. Per query: precision = tp/retrieved (1 when nothing is retrieved),
recall = tp/relevant (1 when nothing is relevant, e.g. distractor queries),
F1 = 2PR/(P+R) (0 when P+R = 0), Fβ = (1+β²)PR/(β²P+R) likewise. A table holds
the MEAN over queries of P, R, F1 and Fβ at each radius, and tp, fp, fn summed
over queries. The query itself, when it is in the index, is retrieved and
relevant (the paper's convention) unless ``exclude_self``, which makes it
neither. (The ranked metrics always leave it out: :func:`ranked_metrics`.)

How (design.md, "Computation"): the distances of a tile of queries against
the whole index are computed once (:mod:`risbench.distance`), each distance is
turned into the index of the first grid radius that retrieves it, exactly, and
those bin indices are counted per query (:mod:`risbench.binning`: on the CPU
one fused numba kernel per tile, each row handled while it is in cache, which
also turns the products into distances, on the GPU a bincount; both exact).
Cumulative sums over the bins give, for every radius at once, each query's
retrieved count; the relevant pairs (few: the members of the query's group)
give tp the same way. Never one pass per radius; memory is O(tile × radii)
for the per-query counts.

The steps on a tile are the methods of :class:`_TileAccumulator` (shared by
every query set: count, relevant pairs, candidates, top k) and of
:class:`_SetTotals` (per query set: distance statistics, dissimilar
extremes, P/R/F sums), so that one pass can score several query sets, e.g.
protocols ``all`` and ``distractors`` (``sweep(..., query_sets=...)``).

From the same pass:

- distance distributions of similar pairs (same group, not the query itself)
  and dissimilar pairs, over the ordered (query, index) pairs seen: exact
  counts, min, max and grid histograms; the similar mean and quartiles are
  exact (all similar distances are kept: few); the dissimilar mean comes from
  each query's sum of distances (CPU: summed in float64 by the counting
  kernel; GPU: a float32 matrix-vector product per tile, relative error
  < 1e-6) accumulated in float64; the dissimilar quartiles come from the histogram: the
  smallest grid radius r with a fraction ≥ p of the pairs at d ≤ r (so within
  one grid step above the exact quantile), None beyond the grid;
- the exact top k per query, the query itself left out (k = max(top_k, the
  most relevant images of any query)): the bin of the k-th nearest other
  image comes from the per-query counts; every pair in a bin up to it is a
  candidate; the candidates are sorted exactly (distance, then irrelevant
  before relevant, then index).

Cost: one float32 matrix product per pair plus, on the CPU, about 1 ns per
pair of finishing, binning, counting, summing, the row maximum and picking
the top-k candidates (a numba kernel over each tile, a row at a time while it
is in cache, :mod:`risbench.cpukernels`) and O(radii) per query (tp and the P/F
sums in one pass, ``cpukernels.score_rows``): measured with
``benchmarks/bench_engine.py``. The GPU runs the same steps as array code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from risbench import binning, cpukernels
from risbench import distance as dist

DEFAULT_MAX_RADIUS = {"hamming": 0.5, "rv": 1.0, "cosine": 1.0, "angular": 0.5, "euclidean": 2.0}
DEFAULT_STEPS = 1024
TABLE_COLUMNS = ["radius", "precision", "recall", "f1", "fbeta", "tp", "fp", "fn", "queries"]
# --------------------------------------------------------------------------- radius grid


def default_step(max_radius: float, steps: int = DEFAULT_STEPS) -> float:
    """The default step: the power of two that divides ``max_radius`` into at most
    ``steps`` steps (2⁻¹⁰ for [0, 1], 2⁻¹¹ for [0, 0.5], 2⁻⁹ for [0, 2]).

    A power of two makes d / step exact in floating point (fast, exact binning).
    ``tests/test_metrics.py::test_default_step_is_fine_enough`` shows that
    halving it moves the best mean F1 by < 0.001 on clustered synthetic data."""
    if not max_radius > 0:
        raise ValueError("max_radius must be positive")
    return 2.0 ** math.ceil(math.log2(max_radius / steps))


def radius_grid(
    distance: str,
    *,
    bits: int | None = None,
    step: float | None = None,
    max_radius: float | None = None,
) -> np.ndarray:
    """Radii evenly spaced from 0 to ``max_radius`` inclusive (float64).

    Defaults: hamming → every attainable value k/bits up to 0.5 (``bits``
    required; the radii are computed as k/bits, exactly as the distances are);
    rv and cosine → [0, 1], angular → [0, 0.5], euclidean → [0, 2] (for
    L2-normalised vectors; pass ``max_radius`` for raw ones), with the power-of-
    two step of :func:`default_step` (1025 radii for [0, 1]). A ``max_radius``
    that is not a whole number of steps is rounded up to one. A decimal
    ``step`` such as 0.0025 gives radii rounded to 12 decimals (0.3, not
    0.30000000000000004)."""
    dist._check_distance(distance)
    if max_radius is None:
        max_radius = DEFAULT_MAX_RADIUS[distance]
    max_radius = float(max_radius)
    if not (max_radius > 0 and math.isfinite(max_radius)):
        raise ValueError(f"max_radius must be positive and finite, not {max_radius}")
    if distance == "hamming" and step is None:
        if bits is None:
            raise ValueError("the hamming grid needs the number of bits")
        top = math.floor(max_radius * bits + binning.HAMMING_EPS)
        return np.arange(top + 1, dtype=np.float64) / bits
    if step is None:
        step = default_step(max_radius)
    step = float(step)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be positive and finite, not {step}")
    count = math.ceil(max_radius / step - 1e-9)
    radii = np.arange(count + 1, dtype=np.float64) * step
    if not binning.is_power_of_two(step):
        radii = np.round(radii, 12)
    return radii


# --------------------------------------------------------------------------- result


@dataclass
class SweepResult:
    """Everything one sweep measured. Arrays are per radius unless said otherwise."""

    distance: str
    radii: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    fbeta: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    queries: int
    beta: float
    similar: dict
    dissimilar: dict
    similar_hist: np.ndarray  # per radius bin (r[j-1], r[j]]; bin 0 is d ≤ r[0]
    dissimilar_hist: np.ndarray
    ranked_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    # the per-query outcomes of the set's queries (sweep(per_query=True):
    # outcomes.RecordedOutcomes), else None
    per_query: object = None

    def table(self) -> pd.DataFrame:
        """One row per radius: radius, mean precision, recall, f1, fbeta over the
        queries, tp, fp, fn summed over the queries, and the number of queries."""
        return pd.DataFrame(
            {
                "radius": self.radii,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "fbeta": self.fbeta,
                "tp": self.tp,
                "fp": self.fp,
                "fn": self.fn,
                "queries": np.full(len(self.radii), self.queries, dtype=np.int64),
            },
            columns=TABLE_COLUMNS,
        )

    def best(self) -> dict:
        """The radius that maximises mean F1 (ties: the smallest radius)."""
        i = int(np.argmax(self.f1))
        return {
            "radius": float(self.radii[i]),
            "precision": float(self.precision[i]),
            "recall": float(self.recall[i]),
            "f1": float(self.f1[i]),
            "fbeta": float(self.fbeta[i]),
            "tp": int(self.tp[i]),
            "fp": int(self.fp[i]),
            "fn": int(self.fn[i]),
        }

    def distance_stats(self) -> dict:
        """Distances of similar pairs (same group, query ≠ itself) and dissimilar
        pairs, over the (query, index) pairs the sweep saw: count, mean, min,
        q1, median, q3, max (None where there is no pair), ``beyond_grid`` (pairs
        farther than the last radius) and how the quartiles were obtained."""
        return {"similar": dict(self.similar), "dissimilar": dict(self.dissimilar)}

    def ranked(self) -> dict:
        """Ranked retrieval over the ``top_k`` nearest index images per query."""
        return dict(self.ranked_metrics)

    def histogram(self) -> pd.DataFrame:
        """Pair counts per grid bin: ``radius`` is the bin's upper edge (bin j holds
        r[j-1] < d ≤ r[j]; bin 0 holds d ≤ r[0]); pairs beyond the last radius
        are in ``distance_stats()[...]['beyond_grid']``."""
        return pd.DataFrame(
            {
                "radius": self.radii,
                "similar": self.similar_hist,
                "dissimilar": self.dissimilar_hist,
            }
        )


# --------------------------------------------------------------------------- statistics


class _Stats:
    """Exact count, sum, min, max and grid histogram of a set of distances."""

    def __init__(self, R: int):
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.hist = np.zeros(R + 2, dtype=np.int64)
        self.values: list[np.ndarray] = []

    def summary(self, radii: np.ndarray, scale: float, keep_values: bool) -> dict:
        R = len(radii) - 1
        out = {"count": int(self.count)}
        if self.count == 0:
            out.update({k: None for k in ("mean", "min", "q1", "median", "q3", "max")})
            out["beyond_grid"] = 0
            out["quartiles"] = None
            return out
        out["mean"] = self.sum / self.count / scale
        out["min"] = self.min / scale
        if keep_values:
            values = np.concatenate(self.values) / scale
            q = np.quantile(values, [0.25, 0.5, 0.75])
            out["quartiles"] = "exact (linear interpolation)"
        else:
            cum = np.cumsum(self.hist[: R + 1])
            q = []
            for p in (0.25, 0.5, 0.75):
                j = int(np.searchsorted(cum, p * self.count, side="left"))
                q.append(float(radii[j]) if j <= R else None)
            out["quartiles"] = "grid: smallest radius r with a fraction ≥ p of pairs at d ≤ r"
        out["q1"], out["median"], out["q3"] = (None if v is None else float(v) for v in q)
        out["max"] = self.max / scale
        out["beyond_grid"] = int(self.hist[R + 1])
        return out


def csr_pointers(rows: np.ndarray, nrows: int) -> np.ndarray:
    """The CSR pointer of entries sorted by row (``rows``: their rows): row i's
    entries are ptr[i]:ptr[i + 1]."""
    ptr = np.zeros(nrows + 1, dtype=np.int64)
    if rows.size:
        np.cumsum(np.bincount(rows, minlength=nrows), out=ptr[1:])
    return ptr


def _relevant_pairs(igc, qgc, query_self, n_groups, members=None):
    """(rows, cols) of the relevant (query, index) pairs other than the query
    itself, sorted by query then index position. ``members``: the (query,
    group code) memberships of a problem whose queries may have several groups
    (:func:`_group_codes`); None: query q has the one group ``qgc[q]``."""
    order = np.argsort(igc, kind="stable")
    size = np.bincount(igc, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    mq, mg = (np.arange(len(qgc)), qgc) if members is None else members[:2]
    cnt = size[mg]
    rows = np.repeat(mq, cnt)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    pos = np.repeat(start[mg] - first, cnt) + np.arange(rows.size)
    cols = order[pos].astype(np.int64)
    keep = cols != query_self[rows]
    rows, cols = rows[keep], cols[keep]
    if members is not None:  # a query's groups are disjoint runs of columns: merge them
        by_query = np.lexsort((cols, rows))
        rows, cols = rows[by_query], cols[by_query]
    return rows, cols


def _in_group(igc, qgc, members, n_groups: int, q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per pair (q[j], c[j]): whether index row c[j] is in a group of query q[j]."""
    if members is None:
        return igc[c] == qgc[q]
    keys = members[2]
    wanted = q.astype(np.int64) * n_groups + igc[c]
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    return (keys[at] == wanted) if keys.size else np.zeros(wanted.shape, dtype=bool)


# --------------------------------------------------------------------------- the problem


@dataclass
class _Problem:
    """A sweep's validated inputs, on the host: what every tile needs."""

    distance: str
    radii: np.ndarray
    bits: int | None  # code bits (hamming), else None
    n: int  # index rows
    nq: int  # queries
    igc: np.ndarray  # group code of each index row
    qgc: np.ndarray  # group code of each query (-1: none or several, see members)
    members: tuple | None  # memberships when a query may have several groups (_group_codes)
    n_groups: int
    query_self: np.ndarray  # per query, its index position or -1
    has_self: np.ndarray  # per query, whether it is in the index
    rel_rows: np.ndarray  # relevant (query, index) pairs other than the query itself,
    rel_cols: np.ndarray  # sorted by query then index position
    rel_ptr: np.ndarray  # CSR: the pairs of query q are rel_ptr[q]:rel_ptr[q + 1]
    nrel: np.ndarray  # relevant images per query (the query itself unless excluded)
    exclude_self: bool
    beta: float
    top_k: int

    @property
    def R(self) -> int:
        return len(self.radii) - 1

    @property
    def scale(self) -> float:
        """Raw units per distance unit (:func:`risbench.distance.raw_scale`)."""
        return dist.raw_scale(self.distance, self.bits)


def _check_options(radii, beta: float, top_k: int) -> tuple[np.ndarray, int]:
    radii = np.asarray(radii, dtype=np.float64).ravel()
    if radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(np.diff(radii) <= 0):
        raise ValueError("radii must be a non-empty, finite, strictly increasing sequence")
    if not beta > 0:
        raise ValueError("beta must be positive")
    top_k = int(top_k)
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    return radii, top_k


def _several(label) -> bool:
    return isinstance(label, tuple | list | set | frozenset)


def _group_codes(index_groups, query_groups, n: int, nq: int):
    """Integer codes of the group labels (one code space for index and queries):
    (index codes, query codes, number of codes, memberships).

    A query label may be a tuple (list, set) of labels: the query is in each of
    those groups (``()``: in none, relevant to nothing). Then memberships is
    (query positions, group codes), one entry per (query, group), in query
    order, with their sorted keys (query × number of codes + group); a query
    code is -1 unless the query has exactly one group. Else memberships is None
    and every query has its one code (the fast path, unchanged)."""
    index_groups = np.asarray(index_groups)
    several = any(_several(g) for g in query_groups) if _object_like(query_groups) else False
    if not several:
        query_groups = np.asarray(query_groups)
    if (
        index_groups.shape != (n,)
        or len(query_groups) != nq
        or (not several and query_groups.shape != (nq,))
    ):
        raise ValueError("one group label per index row and per query row")
    if not several:
        codes, _ = pd.factorize(np.concatenate([index_groups, query_groups]).astype(object))
        n_groups = int(codes.max()) + 1 if codes.size else 0
        return codes[:n].astype(np.int64), codes[n:].astype(np.int64), n_groups, None
    lists = [list(dict.fromkeys(g)) if _several(g) else [g] for g in query_groups]
    counts = np.array([len(g) for g in lists], dtype=np.int64)
    flat = np.empty(n + int(counts.sum()), dtype=object)
    flat[:n] = index_groups
    flat[n:] = [label for g in lists for label in g]
    codes, _ = pd.factorize(flat)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    mq, mg = np.repeat(np.arange(nq), counts), codes[n:].astype(np.int64)
    qgc = np.full(nq, -1, dtype=np.int64)
    qgc[mq[counts[mq] == 1]] = mg[counts[mq] == 1]
    keys = np.sort(mq * n_groups + mg)  # one int64 per (query, group), for _in_group
    return codes[:n].astype(np.int64), qgc, n_groups, (mq, mg, keys)


def _object_like(labels) -> bool:
    """Whether ``labels`` may hold tuples: pandas' type inference (compiled, about
    5 ms per million labels) says "mixed" only for labels of several Python types,
    so labels all strings or all numbers take the fast path without a Python scan."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        return False
    return pd.api.types.infer_dtype(labels, skipna=False) == "mixed"


def _self_positions(query_self, n: int, igc, qgc, members=None, n_groups: int = 0) -> np.ndarray:
    nq = len(qgc)
    if query_self is None:
        return np.full(nq, -1, dtype=np.int64)
    query_self = np.asarray(query_self, dtype=np.int64)
    if query_self.shape != (nq,) or np.any(query_self >= n) or np.any(query_self < -1):
        raise ValueError("query_self must hold, per query, an index position or -1")
    has_self = np.flatnonzero(query_self >= 0)
    if not np.all(_in_group(igc, qgc, members, n_groups, has_self, query_self[has_self])):
        raise ValueError("a query and its own index row must have the same group")
    return query_self


def relevant_pairs(index_groups, query_groups, query_self=None) -> tuple[np.ndarray, np.ndarray]:
    """The relevant (query, index) pairs of a sweep's inputs, other than each
    query itself: (query rows, index columns), sorted by query then index
    position. The one definition of relevance that the sweep and every
    per-query report share."""
    n, nq = len(index_groups), len(query_groups)
    igc, qgc, n_groups, members = _group_codes(index_groups, query_groups, n, nq)
    query_self = _self_positions(query_self, n, igc, qgc, members, n_groups)
    return _relevant_pairs(igc, qgc, query_self, n_groups, members)


def _problem(qp, ip, index_groups, query_groups, query_self, radii, **options) -> _Problem:
    """The validated problem of prepared queries ``qp`` against the index ``ip``;
    ``options``: distance, exclude_self, beta, top_k."""
    nq, n = qp.n, ip.n
    if nq == 0:
        raise ValueError("no queries")
    igc, qgc, n_groups, members = _group_codes(index_groups, query_groups, n, nq)
    query_self = _self_positions(query_self, n, igc, qgc, members, n_groups)
    rel_rows, rel_cols = _relevant_pairs(igc, qgc, query_self, n_groups, members)
    rel_ptr = csr_pointers(rel_rows, nq)
    has_self = query_self >= 0
    return _Problem(
        radii=radii,
        bits=ip.bits,
        n=n,
        nq=nq,
        igc=igc,
        qgc=qgc,
        members=members,
        n_groups=n_groups,
        query_self=query_self,
        has_self=has_self,
        rel_rows=rel_rows,
        rel_cols=rel_cols,
        rel_ptr=rel_ptr,
        nrel=np.diff(rel_ptr) + (has_self & (not options["exclude_self"])),
        **options,
    )


def _query_masks(query_sets, nq: int) -> dict[str, np.ndarray]:
    """One boolean mask over the queries per named set (given as a mask or as
    query positions)."""
    if not query_sets:
        raise ValueError("query_sets names no set")
    masks = {}
    for name, chosen in query_sets.items():
        chosen = np.asarray(chosen)
        if chosen.dtype == bool:
            if chosen.shape != (nq,):
                raise ValueError(f"query set {name!r}: a mask needs {nq} flags, not {chosen.shape}")
            mask = chosen.copy()
        else:
            if chosen.size and not np.issubdtype(chosen.dtype, np.integer):
                raise ValueError(f"query set {name!r}: positions must be integers")
            chosen = chosen.astype(np.int64).ravel()
            if np.any((chosen < 0) | (chosen >= nq)):
                raise ValueError(f"query set {name!r}: positions must lie in 0..{nq - 1}")
            mask = np.zeros(nq, dtype=bool)
            mask[chosen] = True
            if int(mask.sum()) != chosen.size:
                raise ValueError(f"query set {name!r} repeats a query")
        if not mask.any():
            raise ValueError(f"query set {name!r} has no queries")
        masks[name] = mask
    return masks


# --------------------------------------------------------------------------- the accumulator


def _all_hist(cum_sum: np.ndarray, pairs: int) -> np.ndarray:
    """Every pair's bin count (R+2: the last is beyond the grid) from the sum
    of the rows' cumulative counts and the number of pairs."""
    h = np.diff(cum_sum, prepend=0)
    return np.append(h, pairs - int(h.sum()))


def _pick(array, sel, xp):
    """``array[sel]`` for a slice or host positions, on the array's backend."""
    if isinstance(sel, slice) or isinstance(array, np.ndarray):
        return array[sel]
    return array[xp.asarray(sel)]


@dataclass
class _Tile:
    """A tile of queries against the whole index, and what the shared steps found.

    Device arrays: ``raw`` (rows, n) distances in raw units; ``cum`` and ``tp``
    (rows, R+1) per query and radius, pairs retrieved and relevant pairs
    retrieved (float64, exact); ``rowsum``: per query, the sum of its distances;
    ``rr, rc, rx``: the relevant pairs other than the queries themselves (tile
    row, index column, distance) and ``rb`` their bins; ``srow, scol, sx``: the
    pairs of each query with itself, ``sb`` their bins (host). Host: ``rel_rows``
    and ``self_rows``, the tile rows of those pairs."""

    start: int
    stop: int
    raw: object
    cum: object = None
    tp: object = None
    rowsum: object = None
    rr: object = None
    rc: object = None
    rx: object = None
    rb: object = None
    rel_rows: np.ndarray | None = None
    srow: object = None
    scol: object = None
    sx: object = None
    sb: np.ndarray | None = None
    self_rows: np.ndarray | None = None
    first: np.ndarray | None = None  # CPU: per row, the first radius retrieving anything
    picked: tuple | None = None  # CPU: (rows, cols, values) picked in step 1
    pick_level: np.ndarray | None = None  # CPU: per row, the bin up to which they were
    kth: np.ndarray | None = None  # CPU: per row, the first radius reaching k others

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class _Part:
    """One query set's rows within one tile, and what the steps found on them.

    ``sel`` indexes the tile's per-query arrays: a slice when the rows are
    contiguous, so that a set that is a prefix of the queries (``all`` within
    ``distractors``) reduces views of the same shapes as a separate sweep of
    that set, and its float sums come out bit for bit the same."""

    rows: np.ndarray  # the set's rows of the tile (host, increasing)
    sel: object  # the same as a slice when contiguous
    pairs: object = None  # the set's entries among the tile's relevant pairs
    selfs: object = None  # the set's entries among the tile's self pairs
    rowsum: object = None  # per row of the set, the sum of its distances
    max: float = -math.inf  # the largest distance of the set's rows
    near_max: float = -math.inf  # the largest similar or self distance
    all_hist: np.ndarray | None = None  # every pair's bin (R+2: the last is beyond)
    sim_hist: np.ndarray | None = None
    self_hist: np.ndarray | None = None
    n_dis: int = 0  # dissimilar pairs
    lowest: int = 0  # bin of the nearest dissimilar pair (R + 1: none or beyond)
    scores: tuple | None = None  # CPU: the score kernel's (sums, counts) of the set's rows

    @classmethod
    def of(cls, mask: np.ndarray, start: int, stop: int) -> _Part | None:
        rows = np.flatnonzero(mask[start:stop])
        if rows.size == 0:
            return None
        if rows[-1] - rows[0] + 1 == rows.size:
            return cls(rows, slice(int(rows[0]), int(rows[-1]) + 1))
        return cls(rows, rows)

    def within(self, entry_rows: np.ndarray):
        """The entries (sorted by tile row) whose row is in the set."""
        if isinstance(self.sel, slice):
            lo, hi = np.searchsorted(entry_rows, [self.sel.start, self.sel.stop])
            return slice(int(lo), int(hi))
        return np.flatnonzero(np.isin(entry_rows, self.rows))

    def add_rows(self, tile_rows: int, rowsum, tile_max: float, sums_of) -> None:
        """Step 1 for this set: its rows' distance sums and maximum (``rowsum``,
        ``tile_max``: the whole tile's; ``sums_of(rows)``: those of some rows)."""
        if len(self.rows) == tile_rows:
            self.rowsum, top = rowsum, tile_max
        else:
            self.rowsum, top = sums_of(self.rows)
        self.max = max(self.max, top)


class _SetTotals:
    """The sums of one query set over the tiles: P, R, F1, Fβ per radius, tp and
    retrieved counts, and the similar and dissimilar distance statistics."""

    def __init__(self, mask: np.ndarray, problem: _Problem, xp):
        R = problem.R
        self.mask = mask
        self.p = problem
        self.xp = xp
        self.sums = {k: np.zeros(R + 1) for k in ("precision", "recall", "f1", "fbeta")}
        self.tp_sum = np.zeros(R + 1, dtype=np.int64)
        self.ret_sum = np.zeros(R + 1, dtype=np.int64)
        self.sim, self.dis = _Stats(R), _Stats(R)

    def add_distances(self, t: _Tile, part: _Part) -> None:
        """Step 3: similar pairs exactly; dissimilar = all − similar − self; the bin
        of the set's nearest dissimilar pair (its pairs join the candidates)."""
        xp, sim, dis = self.xp, self.sim, self.dis
        rx, sx = _pick(t.rx, part.pairs, xp), _pick(t.sx, part.selfs, xp)
        n_sim, n_self = int(rx.size), int(sx.size)
        sim.count += n_sim
        if n_sim:
            sim.sum += float(rx.sum(dtype=np.float64))
            sim.min = min(sim.min, float(rx.min()))
            part.near_max = float(rx.max())
            sim.max = max(sim.max, part.near_max)
            sim.values.append(dist.to_numpy(rx).astype(np.float64))
        if n_self:
            part.near_max = max(part.near_max, float(sx.max()))
        sim.hist += part.sim_hist
        dis_hist = part.all_hist - part.sim_hist - part.self_hist
        dis.hist += dis_hist
        part.n_dis = len(part.rows) * self.p.n - n_sim - n_self
        dis.count += part.n_dis
        if part.n_dis:
            total = float(part.rowsum.sum())
            dis.sum += total - float(rx.sum(dtype=np.float64)) - float(sx.sum(dtype=np.float64))
        part.lowest = int(np.argmax(dis_hist > 0)) if part.n_dis else self.p.R + 1

    def add_scores(self, t: _Tile, part: _Part, nr, work) -> None:
        """Step 6: per-query P, R, F1, Fβ at every radius, summed over the set's
        queries of the tile, from the counts: P = tp/ret, R = tp/rel, F1 =
        2tp/(ret+rel), Fβ = (1+β²)tp/(ret+β²rel). The conventions only matter
        where ret or rel is 0: P = 1 when ret = 0, R = 1 when rel = 0, F1 = Fβ = 1
        when both are 0. ``nr``: relevant images per query of the tile (float64);
        ``work``: a (rows, R+1) float64 buffer (the array code's; None on the
        CPU, whose score kernel made the sums)."""
        xp, b2 = self.xp, self.p.beta**2
        cum, nr = _pick(t.cum, part.sel, xp), _pick(nr, part.sel, xp)
        first = None if t.first is None else t.first[part.sel]
        none_ret, nr0, any_nr0, none_both = self._empty_counts(cum, nr, first)
        if part.scores is not None:  # CPU: the score kernel's sums (step 2)
            (p_sum, f1_sum, fb_sum, r_sum), (tp_sum, ret_sum, _) = part.scores
        else:
            tp, work = _pick(t.tp, part.sel, xp), work[: len(part.rows)]
            p_sum, f1_sum, fb_sum = self._ratio_sums(cum, tp, nr, work, any_nr0)
            # (summed query after query, as the CPU kernel does: no BLAS order)
            xp.multiply(tp, (1.0 / xp.maximum(nr, 1.0))[:, None], out=work)
            r_sum = work.sum(axis=0)
            tp_sum = dist.to_numpy(tp.sum(axis=0)).astype(np.int64)
            ret_sum = dist.to_numpy(cum.sum(axis=0)).astype(np.int64)
        self.sums["precision"] += dist.to_numpy(p_sum + none_ret)
        self.sums["recall"] += dist.to_numpy(r_sum + nr0.sum())
        f1 = 2.0 * f1_sum + none_both
        self.sums["f1"] += dist.to_numpy(f1)
        if b2 == 1.0:
            self.sums["fbeta"] += dist.to_numpy(f1)
        else:
            self.sums["fbeta"] += dist.to_numpy((1.0 + b2) * fb_sum + none_both)
        self.tp_sum += tp_sum
        self.ret_sum += ret_sum

    def _ratio_sums(self, cum, tp, nr, work, any_nr0: bool):
        """Σ over the queries of tp/ret, tp/(ret + rel) and tp/(ret + β²·rel)
        per radius (NumPy or CuPy; the last None when β = 1)."""
        xp, b2 = self.xp, self.p.beta**2
        xp.maximum(cum, 1.0, out=work)
        xp.divide(tp, work, out=work)
        p_sum = work.sum(axis=0)
        f1_sum = self._f_ratio_sum(cum, tp, nr, 1.0, work, any_nr0)
        fb_sum = None if b2 == 1.0 else self._f_ratio_sum(cum, tp, nr, b2, work, any_nr0)
        return p_sum, f1_sum, fb_sum

    def _empty_counts(self, cum, nr, first=None):
        """Per radius: the queries that retrieve nothing, and those that also have
        nothing relevant (0.0 when every query has something relevant).
        ``first``: per query the first radius retrieving anything, if known."""
        xp, R = self.xp, self.p.R
        if first is None:
            first = binning.first_at_least(cum, 1, xp)
        none_ret = len(cum) - xp.cumsum(binning.bincount(xp, first, R + 2))[: R + 1]
        nr0 = nr == 0
        any_nr0 = bool(nr0.any())
        none_both = 0.0
        if any_nr0:
            none_both = int(nr0.sum()) - xp.cumsum(binning.bincount(xp, first[nr0], R + 2))
            none_both = none_both[: R + 1]
        return none_ret, nr0, any_nr0, none_both

    def _f_ratio_sum(self, cum, tp, nr, b2: float, work, any_nr0: bool):
        """Σ over the queries of tp / (ret + β²·rel) per radius (0/0 read as 0)."""
        xp = self.xp
        xp.add(cum, nr[:, None] if b2 == 1.0 else b2 * nr[:, None], out=work)
        if any_nr0:
            xp.maximum(work, 1.0, out=work)
        xp.divide(tp, work, out=work)
        return work.sum(axis=0)

    def result(self, topk_d: np.ndarray, topk_rel: np.ndarray, rank_nrel) -> SweepResult:
        """The set's result; ``topk_d``, ``topk_rel``: every query's top k (the
        query itself left out), ``rank_nrel``: its relevant images other than itself."""
        p, R = self.p, self.p.R
        nq = int(self.mask.sum())
        nrel = p.nrel[self.mask]
        return SweepResult(
            distance=p.distance,
            radii=p.radii,
            precision=self.sums["precision"] / nq,
            recall=self.sums["recall"] / nq,
            f1=self.sums["f1"] / nq,
            fbeta=self.sums["fbeta"] / nq,
            tp=self.tp_sum,
            fp=self.ret_sum - self.tp_sum,
            fn=int(nrel.sum()) - self.tp_sum,
            queries=nq,
            beta=float(p.beta),
            similar=self.sim.summary(p.radii, p.scale, keep_values=True),
            dissimilar=self.dis.summary(p.radii, p.scale, keep_values=False),
            similar_hist=self.sim.hist[: R + 1].copy(),
            dissimilar_hist=self.dis.hist[: R + 1].copy(),
            ranked_metrics=ranked_metrics(
                topk_d[self.mask], topk_rel[self.mask], rank_nrel[self.mask]
            ),
        )


@dataclass
class _Candidates:
    """Pairs that may be among their query's top k (host): query, index column,
    distance (raw units, float64), relevant, the query itself."""

    q: np.ndarray
    c: np.ndarray
    v: np.ndarray
    rel: np.ndarray
    is_self: np.ndarray


class _TileAccumulator:
    """The sweep's state between tiles; :meth:`add` runs its steps on one tile.

    Per query, shared by every query set: 1 :meth:`count` (bin and count every
    pair), 2 :meth:`relevant` (relevant and self pairs), 4 :meth:`candidates`
    and 7 :meth:`top` (the exact top k). Per query set, on its rows of the tile
    (:class:`_Part`): 3 :meth:`_SetTotals.add_distances` (distance statistics),
    5 :meth:`extremes` (dissimilar min and max) and 6
    :meth:`_SetTotals.add_scores` (P, R, F sums)."""

    def __init__(self, problem: _Problem, xp, tile_rows: int, masks: dict, per_query=False):
        p = self.p = problem
        self.xp = xp
        self.numpy = dist.is_numpy(xp)
        self.binner = binning.Binner(p.radii, p.distance, p.bits, xp)
        self.tile_rows = tile_rows
        self.integer = p.distance == "hamming"
        # Ranked lists leave the query itself out, always: relevant = the others
        # of its group; k = max(top_k, most relevant of any query).
        self.rank_nrel = np.diff(p.rel_ptr)
        self.k = max(p.top_k, int(self.rank_nrel.max(initial=0)))
        # pairs to reach per query in ``cum`` (which holds the query itself unless
        # exclude_self): k others (at most all of them), plus itself when counted
        counted_self = p.has_self & (not p.exclude_self)
        self.k_reach = np.minimum(self.k, p.n - p.has_self) + counted_self
        # CPU: candidates picked while counting, before exclude_self takes the
        # query out of cum: one pair more to reach then (a superset is harmless)
        self.k_pick = self.k_reach + (p.has_self & p.exclude_self)
        self.topk_d = np.full((p.nq, self.k), np.inf)
        self.topk_rel = np.zeros((p.nq, self.k), dtype=bool)
        self.sets = {name: _SetTotals(mask, p, xp) for name, mask in masks.items()}
        self.host_limit = dist.to_numpy(self.binner.limit)  # (the radii's raw limits)
        self.recorder = None
        if per_query:
            from risbench import outcomes  # (lazily: only jobs that write outcomes)

            self.recorder = outcomes.QueryRecorder(p, self.host_limit, self.binner.raw)
        self._allocate()

    def _allocate(self) -> None:
        """Device copies of the problem's arrays and the buffers reused by every tile."""
        p, xp, rows, raw = self.p, self.xp, self.tile_rows, self.binner.raw
        self.rel_rows_x = xp.asarray(p.rel_rows)
        self.rel_cols_x = xp.asarray(p.rel_cols)
        self.query_self_x = xp.asarray(p.query_self)
        self.nrel_x = xp.asarray(p.nrel)
        self.k_reach_x = xp.asarray(self.k_reach)
        self.grid = xp.arange(p.R + 1)
        if self.numpy:  # the fused kernel's row maxima
            self.rowmax_buf = np.empty(rows, dtype=raw)
        else:  # the bins of a tile (and the Binner's scratch), then a bincount
            self.ones = None if self.integer else xp.ones(p.n, dtype=raw)
            self.bins_buf = xp.empty((rows, p.n), self.binner.dtype)
            float_bins = self.binner.mode != "lut"
            self.u_buf = xp.empty((rows, p.n), dtype=raw) if float_bins else None
        # counts: int32 for the CPU kernels (half the bytes to move), float64 for the
        # array code (exact either way)
        counts = np.int32 if self.numpy else np.float64
        self.cum_buf = xp.empty((rows, p.R + 1), dtype=counts)
        self.tp_buf = self.tpi_buf = self.work_buf = None  # (the CPU's score kernel
        if not self.numpy:  # makes tp a row at a time)
            self.tp_buf = xp.empty((rows, p.R + 1), dtype=np.float64)
            self.tpi_buf = xp.empty((rows, p.R + 1), dtype=np.int32)
            self.work_buf = xp.empty((rows, p.R + 1), dtype=np.float64)
        self.rowsum_buf = xp.empty(rows, dtype=np.int64 if self.integer else np.float64)

    def add(self, start: int, stop: int, raw, finish) -> None:
        """Every step on the tile of queries start:stop (``raw``: their matrix
        products, turned into distances by ``finish``)."""
        t = _Tile(start, stop, raw)
        parts = {name: _Part.of(s.mask, start, stop) for name, s in self.sets.items()}
        parts = {name: part for name, part in parts.items() if part is not None}
        self.count(t, finish, parts)
        self.relevant(t, parts)
        for name, part in parts.items():
            self.sets[name].add_distances(t, part)
        cand = self.candidates(t, parts)
        self.extremes(t, parts, cand)
        nr = self.nrel_x[start:stop].astype(np.float64)
        for name, part in parts.items():
            self.sets[name].add_scores(t, part, nr, self.work_buf)
        self.top(cand)

    def _row_sums(self, x):
        # (GPU: a float32 matrix-vector product, twice as fast as sum(axis=1))
        return x.sum(axis=1, dtype=np.int64) if self.integer else x @ self.ones

    def count(self, t: _Tile, finish, parts: dict) -> None:
        """Step 1: bin every pair and count, per query and radius, the pairs
        retrieved (``t.cum``); sum each query's distances (``t.rowsum``); per
        set, its rows' sums and maximum. On the CPU one fused kernel
        (:func:`risbench.binning.count_rows`) does it a row at a time while the
        row is in cache, and picks the row's candidates for step 4 (every pair
        up to the bin of its k-th nearest other, as counted so far: cum still
        holds the query itself, so one more is reached under exclude_self)."""
        p, xp, x = self.p, self.xp, t.raw
        t.cum, t.rowsum = self.cum_buf[: t.rows], self.rowsum_buf[: t.rows]
        if self.numpy:  # products to distances in the kernel, where it can
            rowmax, spec = self.rowmax_buf[: t.rows], finish(0, t.rows, in_kernel=True)
            t.pick_level = np.empty(t.rows, dtype=np.int64)
            pick = (self.k_pick[t.start : t.stop], self.binner.limit, t.pick_level)
            t.picked = binning.count_rows(self.binner, x, t.cum, t.rowsum, rowmax, spec, pick)
            tile_max = float(rowmax.max())
        else:
            finish(0, t.rows)
            b = self.bins_buf[: t.rows]
            self.binner(x, b, None if self.u_buf is None else self.u_buf[: t.rows])
            t.cum[...] = binning.cum_bincount(b, p.R, xp)
            t.rowsum[...] = self._row_sums(x)
            tile_max, rowmax = float(x.max()), None
        sums_of = self._sums_of(t, x, rowmax)
        for part in parts.values():
            part.add_rows(t.rows, t.rowsum, tile_max, sums_of)
            if not self.numpy:  # (CPU: from the score kernel's counts, step 2)
                h = dist.to_numpy(_pick(t.cum, part.sel, xp).sum(axis=0)).astype(np.int64)
                part.all_hist = _all_hist(h, len(part.rows) * p.n)

    def _picked(self, t: _Tile, level):
        """CPU: the pairs at bin ≤ ``level`` (per row) from those picked in step 1,
        plus, for the rows whose level lies beyond their picked bin (a set's
        nearest dissimilar pair farther than the row's k-th nearest), the pairs
        between the two, from the tile: (rows, cols, values), a superset."""
        limit = self.binner.limit
        parts = list(t.picked)
        more = np.flatnonzero((level <= self.p.R) & (level > t.pick_level))
        if more.size:
            sub = t.raw[more]
            low, high = limit[t.pick_level[more]][:, None], limit[level[more]][:, None]
            r, c = np.nonzero((sub > low) & (sub <= high))
            parts = [
                np.concatenate([a, b]) for a, b in zip(parts, (more[r], c, sub[r, c]), strict=True)
            ]
        return parts

    def _sums_of(self, t: _Tile, x, rowmax):
        """For :meth:`_Part.add_rows`: the sums and maximum of some rows of the
        tile ``x``. On the CPU the kernel's own: it sums each row alone, so a
        row's sum does not depend on the rows beside it. On the GPU the rows
        summed on their own, as a separate sweep of the set sums them (a
        matrix-vector product's rows depend on its shape)."""
        if self.numpy:
            return lambda rows: (t.rowsum[rows], float(rowmax[rows].max()))

        def sums_of(rows):
            if rows[-1] - rows[0] + 1 == rows.size:
                sub = x[int(rows[0]) : int(rows[-1]) + 1]
            else:
                sub = _pick(x, rows, self.xp)
            return self._row_sums(sub).astype(t.rowsum.dtype), float(sub.max())

        return sums_of

    def relevant(self, t: _Tile, parts: dict) -> None:
        """Step 2: tp per query and radius from the relevant pairs; the query's
        own pair moves the counts (relevant, or neither retrieved nor relevant
        under ``exclude_self``); per set, the bins of its similar and self pairs.
        A recording sweep's records take the pairs' distances and the counts
        here, before the counts lose the queries themselves."""
        self._relevant_pairs_of(t)
        self._self_pairs_of(t)
        if self.recorder is not None:
            self.recorder.add(t.start, t.stop, t.raw, t.cum, t.rx, t.sx, self.xp)
        if self.numpy:
            self._score_rows(t, parts)
        else:
            self._relevant_counts(t)
            self._self_pairs(t)
        xp, R = self.xp, self.p.R
        for part in parts.values():
            part.pairs = part.within(t.rel_rows)
            part.selfs = part.within(t.self_rows)
            part.sim_hist = dist.to_numpy(binning.bincount(xp, _pick(t.rb, part.pairs, xp), R + 2))
            part.self_hist = np.bincount(t.sb[part.selfs], minlength=R + 2)

    def _relevant_pairs_of(self, t: _Tile) -> None:
        """The tile's relevant pairs other than the queries themselves, their
        distances and bins."""
        p, xp, R = self.p, self.xp, self.p.R
        a, z = int(p.rel_ptr[t.start]), int(p.rel_ptr[t.stop])
        t.rel_rows = p.rel_rows[a:z] - t.start
        t.rr, t.rc = self.rel_rows_x[a:z] - t.start, self.rel_cols_x[a:z]
        t.rx = t.raw[t.rr, t.rc]
        t.rb = xp.minimum(self.binner.bins(t.rx), R + 1)

    def _score_rows(self, t: _Tile, parts: dict) -> None:
        """CPU, steps 2 and 6 in one kernel pass over the tile's counts
        (:func:`risbench.cpukernels.score_rows`): tp, the query itself, and
        per set the sums that :meth:`_SetTotals.add_scores` adds; per row the
        first radius retrieving anything and the first reaching k others."""
        p, R = self.p, self.p.R
        ptr = p.rel_ptr[t.start : t.stop + 1] - p.rel_ptr[t.start]
        self_bins = np.full(t.rows, R + 1, dtype=np.int64)
        self_bins[t.self_rows] = t.sb
        member = np.zeros((len(parts), t.rows), dtype=bool)
        for k, part in enumerate(parts.values()):
            member[k, part.rows] = True
        nr = self.nrel_x[t.start : t.stop].astype(np.float64)
        sums, counts = cpukernels.score_rows(
            t.cum, (ptr, t.rb), self_bins, p.exclude_self, nr, p.beta**2, member
        )
        for k, part in enumerate(parts.values()):
            part.scores = sums[k], counts[k]
            part.all_hist = _all_hist(counts[k, 2], len(part.rows) * p.n)
        t.first, t.kth = np.empty(t.rows, np.int64), np.empty(t.rows, np.int64)
        cpukernels.first_at_least(t.cum, np.ones(t.rows, dtype=np.int64), t.first)
        cpukernels.first_at_least(t.cum, self.k_reach[t.start : t.stop], t.kth)

    def _relevant_counts(self, t: _Tile) -> None:
        """GPU: tp per query and radius from the relevant pairs' bins."""
        xp, R = self.xp, self.p.R
        # (integer cumulative sums: a float64 cumsum along rows is ~8x slower)
        tpi = self.tpi_buf[: t.rows]
        ok = t.rb <= R
        if self.numpy:
            tpi.fill(0)
            np.add.at(tpi, (t.rr[ok], t.rb[ok]), 1)
        else:
            tpi.ravel()[...] = binning.bincount(xp, t.rr[ok] * (R + 1) + t.rb[ok], t.rows * (R + 1))
        xp.cumsum(tpi, axis=1, out=tpi)
        t.tp = self.tp_buf[: t.rows]
        t.tp[...] = tpi

    def _self_pairs_of(self, t: _Tile) -> None:
        """The query itself (at d = 0 when its row is the same, as in the
        protocols): its pairs, distances and bins."""
        p, xp, R = self.p, self.xp, self.p.R
        t.self_rows = np.flatnonzero(p.has_self[t.start : t.stop])
        t.srow = xp.asarray(t.self_rows)
        t.scol = self.query_self_x[t.start : t.stop][t.srow]
        t.sx = t.raw[t.srow, t.scol]
        t.sb = dist.to_numpy(xp.minimum(self.binner.bins(t.sx), R + 1))

    def _self_pairs(self, t: _Tile) -> None:
        """GPU: the query itself counted as relevant, or taken out of ret."""
        p, xp = self.p, self.xp
        if t.self_rows.size == t.rows and not t.sb.any():  # every query in the index, at 0
            if p.exclude_self:
                t.cum -= 1.0
            else:
                t.tp += 1.0
        elif t.self_rows.size:
            ind = self.grid[None, :] >= xp.asarray(t.sb)[:, None]
            if p.exclude_self:
                t.cum[t.srow] -= ind
            else:
                t.tp[t.srow] += ind

    def candidates(self, t: _Tile, parts: dict) -> _Candidates:
        """Step 4: every pair whose bin is at most that of its query's k-th nearest
        other image (k = ``self.k``; cum counts the query itself unless
        exclude_self, so one more pair is reached then) or that of the nearest
        dissimilar pair of a set the query is in (for :meth:`extremes`)."""
        p, xp = self.p, self.xp
        lowest = np.full(t.rows, -1, dtype=np.int64)  # -1: no dissimilar pair in the grid
        for part in parts.values():
            if part.lowest <= p.R:
                lowest[part.rows] = np.maximum(lowest[part.rows], part.lowest)
        if t.kth is not None:
            kth = t.kth
        else:
            kth = binning.first_at_least(t.cum, self.k_reach_x[t.start : t.stop][:, None], xp)
        low = xp.asarray(lowest)
        level = xp.where(low >= 0, xp.maximum(kth, low), kth)
        if t.picked is not None:  # CPU: picked in step 1
            cr, cc, values = self._picked(t, level)
        else:
            flat = xp.flatnonzero(t.raw <= self.binner.limit[level][:, None])
            cr, cc = flat // p.n, flat % p.n
            values = t.raw[cr, cc]
        qs, cs = [dist.to_numpy(cr) + t.start], [dist.to_numpy(cc)]
        vs = [dist.to_numpy(values)]
        beyond = np.flatnonzero(dist.to_numpy(kth) > p.R)
        if beyond.size:
            rows, cols, values = self._nearest_beyond_grid(t, beyond, lowest[beyond])
            qs.append(rows + t.start)
            cs.append(cols)
            vs.append(values)
        q = np.concatenate(qs).astype(np.int64)
        c = np.concatenate(cs).astype(np.int64)
        v = np.concatenate(vs).astype(np.float64)
        rel = _in_group(p.igc, p.qgc, p.members, p.n_groups, q, c)
        return _Candidates(q, c, v, rel, c == p.query_self[q])

    def _nearest_beyond_grid(self, t: _Tile, rows: np.ndarray, lowest: np.ndarray):
        """Candidates of the tile rows ``rows``, whose k-th nearest lies beyond
        the grid: their k nearest other images (ties included) and their pairs
        at most the limit of bin ``lowest`` (their sets' nearest dissimilar
        pair; -1: none). The query itself is neither a ranked nor a dissimilar
        candidate. (A kernel on the host: the GPU sends it those rows.)"""
        p, queries = self.p, rows + t.start
        own = np.where(p.has_self[queries], p.query_self[queries], -1)
        low = np.where(lowest >= 0, self.host_limit[np.maximum(lowest, 0)], -np.inf)
        if self.numpy:
            x, at = t.raw, rows
        else:
            x, at = dist.to_numpy(t.raw[self.xp.asarray(rows)]), np.arange(rows.size)
        r, cols, values = cpukernels.nearest_beyond_grid(x, at, own, self.k, low)
        return rows[r], cols, values

    def extremes(self, t: _Tile, parts: dict, cand: _Candidates) -> None:
        """Step 5, per set: the dissimilar minimum among the candidates, and the
        maximum (the set's largest distance when no similar or self pair reaches
        it); else hide those pairs and reduce over the set's rows."""
        scan = {}
        for name, part in parts.items():
            if part.n_dis and part.lowest <= self.p.R:
                mine = self.sets[name].mask[cand.q] & ~cand.rel & ~cand.is_self
                dis = self.sets[name].dis
                dis.min = min(dis.min, float(cand.v[mine].min()))
            if part.n_dis and (part.lowest > self.p.R or part.max <= part.near_max):
                scan[name] = part
        if scan:
            self._scan_dissimilar(t, scan)
        for name, part in parts.items():
            if part.n_dis:
                self.sets[name].dis.max = max(self.sets[name].dis.max, part.max)

    def _scan_dissimilar(self, t: _Tile, parts: dict) -> None:
        """Min and max over the dissimilar pairs of the sets' rows, with the similar
        and self pairs hidden (the tile is not read again as distances)."""
        xp = self.xp
        big = np.iinfo(self.binner.raw).max if self.integer else np.inf
        t.raw[t.rr, t.rc] = big
        t.raw[t.srow, t.scol] = big
        for name, part in parts.items():
            dis = self.sets[name].dis
            dis.min = min(dis.min, float(_pick(t.raw, part.sel, xp).min()))
        t.raw[t.rr, t.rc] = 0
        t.raw[t.srow, t.scol] = 0
        for part in parts.values():
            part.max = float(_pick(t.raw, part.sel, xp).max())

    def top(self, cand: _Candidates) -> None:
        """Step 7: the exact top k of the tile's queries, from the candidates,
        the query itself left out (whatever ``exclude_self``: see
        :func:`ranked_metrics`)."""
        p = self.p
        keep = ~cand.is_self
        q, c, v, rel = cand.q[keep], cand.c[keep], cand.v[keep], cand.rel[keep]
        if q.size and (q[1:] < q[:-1]).any():  # (the CPU's are in query order, mostly)
            order = np.argsort(q, kind="stable")
            q, c, v, rel = q[order], c[order], v[order], rel[order]
        rank = np.empty(q.size, dtype=np.int64)
        cpukernels.top_ranks(q, c, v, rel, self.k, rank)
        keep = rank >= 0
        self.topk_d[q[keep], rank[keep]] = v[keep] / p.scale
        self.topk_rel[q[keep], rank[keep]] = rel[keep]

    def results(self) -> dict:
        top = (self.topk_d, self.topk_rel, self.rank_nrel)
        results = {name: s.result(*top) for name, s in self.sets.items()}
        if self.recorder is not None:
            for name, result in results.items():
                result.per_query = self.recorder.view(np.flatnonzero(self.sets[name].mask))
        return results


# --------------------------------------------------------------------------- the sweep


def _tile_rows(p: _Problem, tile_mb: float, tile_rows: int | None, xp) -> int:
    """Query rows per tile: ``tile_rows``, or what fits ``tile_mb`` (at most one
    block, ``distance.block_rows``), never more than the queries."""
    if tile_rows is None:
        raw_size = np.dtype(dist.raw_dtype(p.distance, p.bits)).itemsize
        per_row = p.n * (raw_size + 2) + 64 * (p.R + 2)
        tile_rows = max(1, int(tile_mb * 2**20 // per_row))
        tile_rows = min(tile_rows, dist.block_rows(p.distance, p.n, xp, p.bits))
    return int(max(1, min(tile_rows, p.nq)))


def sweep(
    index,
    index_groups,
    queries,
    query_groups,
    distance: str,
    radii,
    *,
    bits: int | None = None,
    query_self=None,
    exclude_self: bool = False,
    tile_mb: float = 256,
    device: str = "auto",
    beta: float = 1.0,
    top_k: int = 10,
    tile_rows: int | None = None,
    query_sets: dict | None = None,
    per_query: bool = False,
) -> SweepResult | dict[str, SweepResult]:
    """Score fixed-radius retrieval of ``queries`` in ``index`` at every radius.

    ``index`` (n, ·) and ``queries`` (q, ·): descriptor matrices (uint8 codes for
    hamming and rv, floats otherwise); ``*_groups``: the group label of each
    row (relevant = same label); ``radii``: increasing radii; ``bits``: code
    bits for hamming (default 8 × bytes); ``query_self[i]``: the position of
    query i in the index or -1 (required for ``exclude_self``; queries not in
    the index have -1); ``tile_mb``: memory bound of a tile of distances
    (``tile_rows`` sets the rows directly); ``device``: auto, cpu or cuda;
    ``beta``: the β of Fβ (> 0); ``top_k``: depth of the ranked metrics (at
    least; raised to the most relevant images of any query).

    ``query_sets``: several results from one pass, ``{name: queries}`` with
    each set's queries as a boolean mask or as positions in ``queries`` (in
    any order: a set is those queries, in the order of ``queries``); returns
    ``{name: SweepResult}``, each scoring just its set's queries on this pass's
    distances. A set that is a prefix of the queries (protocol ``all`` as the
    first queries of ``distractors``) gets, bit for bit, the result of a
    separate sweep over those queries: tiles, chunks and matrix-product blocks
    line up. A separate sweep over another set would put its queries in other
    blocks (products may round a distance differently in the last bit) and add
    the means in another order. ``seconds``: the shared pass's time, on every
    result.

    Also measured in the same pass: the exact distance distributions of
    similar and dissimilar pairs (:meth:`SweepResult.distance_stats`,
    :meth:`SweepResult.histogram`) and ranked metrics from each query's exact
    top k (:meth:`SweepResult.ranked`, defined in :func:`ranked_metrics`).
    ``per_query``: also record each query's outcomes
    (:class:`risbench.outcomes.QueryRecorder`, ``result.per_query.at(radii)``:
    those of :func:`risbench.outcomes.query_outcomes` at any radius of the
    grid), at 4 bytes a query and radius until ``result.per_query.recorder.keep``
    drops the radii no one will read.
    """
    started = time.perf_counter()
    acc, tiles = _setup(
        index,
        index_groups,
        queries,
        query_groups,
        distance,
        radii,
        bits=bits,
        query_self=query_self,
        exclude_self=exclude_self,
        tile_mb=tile_mb,
        device=device,
        beta=beta,
        top_k=top_k,
        tile_rows=tile_rows,
        query_sets=query_sets,
        per_query=per_query,
    )
    for start, stop, tile, finish in tiles:
        acc.add(start, stop, tile, finish)
    results = acc.results()
    seconds = time.perf_counter() - started
    for result in results.values():
        result.seconds = seconds
    return results[None] if query_sets is None else results


def _setup(index, index_groups, queries, query_groups, distance, radii, **kw):
    """The accumulator of a sweep (its sets: ``{None: every query}`` without
    ``query_sets``) and the iterator of its tiles; ``kw``: :func:`sweep`'s options."""
    dist._check_distance(distance)
    xp = dist.array_module(kw["device"])
    radii, top_k = _check_options(radii, kw["beta"], kw["top_k"])
    qp, ip = dist.prepare_pair(queries, index, distance, bits=kw["bits"], xp=xp)
    options = {"exclude_self": kw["exclude_self"], "beta": float(kw["beta"]), "top_k": top_k}
    problem = _problem(
        qp, ip, index_groups, query_groups, kw["query_self"], radii, distance=distance, **options
    )
    if kw["query_sets"] is None:
        masks = {None: np.ones(problem.nq, dtype=bool)}
    else:
        masks = _query_masks(kw["query_sets"], problem.nq)
    rows = _tile_rows(problem, kw["tile_mb"], kw["tile_rows"], xp)
    acc = _TileAccumulator(problem, xp, rows, masks, kw.get("per_query", False))
    ident = dist.pairs_to_zero(qp, ip)
    return acc, dist.iter_raw_tiles(qp, ip, rows, ident, deferred=True)


def ranked_metrics(topk_d: np.ndarray, topk_rel: np.ndarray, nrel: np.ndarray) -> dict:
    """Ranked metrics from each query's top k (distances ascending, ``inf`` for
    missing entries; relevance flags) and its number of relevant images.

    The query itself is never in its own ranked list nor counted in ``nrel``
    (as in ISC2021, where a query is never its own reference), whatever
    ``exclude_self`` says (that option governs the radius sweep only): else
    recall@1 is trivially 1 for every query in the index. :func:`sweep` takes
    k = max(``top_k``, the largest ``nrel``), so that AP can reach 1; the k
    used is reported as ``top_k``.

    - ``recall_at_1``, ``recall_at_10``: the fraction of queries with at least
      one relevant image that have one among their 1 (10) nearest other index
      images (present when k ≥ 1 (10));
    - ``map_at_k``: mean over those queries of AP@k = Σ_{j ≤ k, rel j}
      precision@j / min(nrel, k);
    - ``micro_ap``: ISC2021's micro average precision (facebookresearch/isc2021,
      ``isc/metrics.py``: ``precision_recall`` then ``average_precision``).
      Every (query, neighbour) of the top k of every query (distractor queries
      included) is one prediction with score −distance; the predictions sorted
      by score descending, at equal scores irrelevant before relevant (as the
      reference does: it sorts by (score, not relevant) and reverses, "the
      worst possible AP"); then μAP = Σ_i precision@i × Δrecall_i, where
      recall_i = (relevant among the first i) / P and P = Σ nrel, all the
      relevant pairs, predicted or not: Σ over the relevant predictions i of
      precision@i / P.

    Ranking ties: at equal distance irrelevant images rank before relevant
    ones, then by index position (pessimistic, for the top k as well)."""
    nq, k = topk_d.shape
    nrel = np.asarray(nrel, dtype=np.int64)
    found = np.isfinite(topk_d)
    rel = topk_rel & found
    has = nrel > 0
    out = {"top_k": int(k), "queries_with_relevant": int(has.sum())}
    for m in (1, 10):
        if m <= k:
            out[f"recall_at_{m}"] = float(rel[has, :m].any(axis=1).mean()) if has.any() else None
    prec = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    ap = (prec * rel).sum(axis=1) / np.maximum(np.minimum(nrel, k), 1)
    out["map_at_k"] = float(ap[has].mean()) if has.any() else None
    total = int(nrel.sum())
    out["micro_ap"] = _micro_ap(topk_d[found], rel[found], total) if total else None
    return out


def _micro_ap(d: np.ndarray, rel: np.ndarray, total: int) -> float:
    """ISC2021's μAP of predictions at distances ``d`` (relevant: ``rel``),
    ranked by distance, at a tie irrelevant first: Σ over the relevant ones of
    precision at their rank, / ``total``. Without sorting them all together:
    the j-th relevant (0-based, by distance) ranks after every irrelevant one
    at most as far and the j relevant before it, so its precision is
    (j + 1) / (irrelevant at ≤ its distance + j + 1), summed in that order
    (as a sort by (distance, relevant) would give them)."""
    all_d, rel_d = np.sort(d), np.sort(d[rel])
    hits = np.arange(1, rel_d.size + 1)
    at_most = np.searchsorted(all_d, rel_d, side="right")
    rel_at_most = np.searchsorted(rel_d, rel_d, side="right")
    precision = hits / (at_most - rel_at_most + hits)
    return float(precision.sum() / total)
