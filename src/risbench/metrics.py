"""The radius sweep: precision, recall and F-scores at every radius in one pass.

Definitions (design.md, "The paper's definitions"): for a query q and radius r
the result is {i in index : d(q, i) ≤ r}; relevant images share the query's
group. Per query: precision = tp/retrieved (1 when nothing is retrieved),
recall = tp/relevant (1 when nothing is relevant, e.g. distractor queries),
F1 = 2PR/(P+R) (0 when P+R = 0), Fβ = (1+β²)PR/(β²P+R) likewise. A table holds
the MEAN over queries of P, R, F1 and Fβ at each radius, and tp, fp, fn summed
over queries. The query itself, when it is in the index, is retrieved and
relevant (the paper's convention) unless ``exclude_self``, which makes it
neither.

How (design.md, "Computation"): the distances of a tile of queries against
the whole index are computed once (:mod:`risbench.distance`), each distance is
turned into the index of the first grid radius that retrieves it, and those
bin indices are counted per query (a sorted-run count on the CPU, a bincount
on the GPU; both exact). Cumulative sums over the bins give, for every radius
at once, each query's retrieved count; the relevant pairs (few: the members of
the query's group) give tp the same way. Never one pass per radius; memory is
O(tile × radii) for the per-query counts.

Exactness of the binning: a pair is retrieved at radius r exactly when the
computed distance d satisfies d ≤ r, with d as the kernel computes it (float32
for cosine, angular and euclidean, float64 for rv):

- default grids have a power-of-two step, so d / step is exact in floating
  point and the bin is ceil(d / step), no correction needed;
- other evenly spaced grids estimate ceil(d / step) and correct it by one
  comparison each way against the radii rounded down to the distance's dtype;
- any other increasing grid uses a binary search on those radii;
- hamming compares integer bit counts c: radius r retrieves c exactly when
  c ≤ floor(r·bits + 1e-9) (the 1e-9 absorbs the rounding of r·bits, so that a
  grid value k/bits retrieves distance k/bits).

From the same pass:

- distance distributions of similar pairs (same group, not the query itself)
  and dissimilar pairs, over the ordered (query, index) pairs seen: exact
  counts, min, max and grid histograms; the similar mean and quartiles are
  exact (all similar distances are kept: few); the dissimilar mean is the
  float32 row sums (a matrix-vector product per chunk) accumulated in float64,
  relative error < 1e-6; the dissimilar quartiles come from the histogram: the
  smallest grid radius r with a fraction ≥ p of the pairs at d ≤ r (so within
  one grid step above the exact quantile), None beyond the grid;
- the exact top k per query: the k-th nearest's bin comes from the per-query
  counts; every pair in a bin up to it is a candidate; the candidates are
  sorted exactly (distance, then irrelevant before relevant, then index).

Cost: one float32 matrix product per pair plus, on the CPU, about 2 ns per pair
of binning and counting (a sort of 16-bit bins per query row) and O(radii)
per query: measured with ``benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from risbench import distance as dist

DEFAULT_MAX_RADIUS = {"hamming": 0.5, "rv": 1.0, "cosine": 1.0, "angular": 0.5, "euclidean": 2.0}
# Upper bound of each distance (None: unbounded), used to size the bin dtype.
DISTANCE_BOUND = {"hamming": 1.0, "rv": 1.0, "cosine": 2.0, "angular": 1.0, "euclidean": None}
DEFAULT_STEPS = 1024
HAMMING_EPS = 1e-9
TABLE_COLUMNS = ["radius", "precision", "recall", "f1", "fbeta", "tp", "fp", "fn", "queries"]
# Elements of a CPU chunk (rows × index size) binned and counted while cache-resident.
CHUNK_ELEMENTS = 2**17


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
        top = math.floor(max_radius * bits + HAMMING_EPS)
        return np.arange(top + 1, dtype=np.float64) / bits
    if step is None:
        step = default_step(max_radius)
    step = float(step)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be positive and finite, not {step}")
    count = math.ceil(max_radius / step - 1e-9)
    radii = np.arange(count + 1, dtype=np.float64) * step
    if not _is_power_of_two(step):
        radii = np.round(radii, 12)
    return radii


def _is_power_of_two(x: float) -> bool:
    mantissa, _ = math.frexp(x)
    return x > 0 and mantissa == 0.5


# --------------------------------------------------------------------------- binning


def _down_to(radii: np.ndarray, dtype) -> np.ndarray:
    """The largest value of ``dtype`` ≤ each radius: d ≤ r ⟺ d ≤ that value for d
    of that dtype."""
    t = radii.astype(dtype)
    over = t.astype(np.float64) > radii
    t[over] = np.nextafter(t[over], dtype(-np.inf))
    return t


class _Binner:
    """Maps a raw distance tile to bin indices: bin = the index of the first
    radius that retrieves the pair (len(radii) or more: beyond the grid)."""

    def __init__(self, radii: np.ndarray, distance: str, bits: int | None, xp):
        self.xp = xp
        self.R = R = len(radii) - 1
        raw = np.dtype(dist.raw_dtype(distance, bits))
        self.raw = raw
        bound = DISTANCE_BOUND[distance]
        if distance == "hamming":
            thresholds = np.floor(radii * bits + HAMMING_EPS)
            lut = np.searchsorted(thresholds, np.arange(bits + 1), side="left")
            self.mode = "lut"
            self.dtype = np.int16 if R + 2 < 2**15 - 1 else np.int32
            self.sentinel = np.iinfo(self.dtype).max
            self.lut = xp.asarray(lut.astype(self.dtype))
            self.clamp = False
            self.limit = xp.asarray(np.append(thresholds, -1).astype(np.int64))
            return
        step = radii[1] - radii[0] if R >= 1 else 0.0
        uniform = (
            R >= 1
            and radii[0] == 0
            and step > 0
            and np.all(np.abs(radii - np.arange(R + 1) * step) <= 1e-6 * step)
            and R < 2**22
        )
        if uniform and _is_power_of_two(step) and np.array_equal(radii, np.arange(R + 1) * step):
            self.mode = "dyadic"
            self.scale = raw.type(1 / step)
        elif uniform:
            self.mode = "uniform"
            self.scale = raw.type(1 / step)
            t = _down_to(radii, raw.type)
            ext = np.concatenate([[-np.inf], t, [np.inf]]).astype(raw)
            self.hi = xp.asarray(ext[1:])  # hi[k] = t_k (t_{R+1} = +inf)
            self.lo = xp.asarray(ext[:-1])  # lo[k] = t_{k-1} (t_{-1} = -inf)
        else:
            self.mode = "search"
            self.thr = xp.asarray(_down_to(radii, raw.type))
        top = 2**15 - 2 if R + 2 < 2**15 - 2 else 2**31 - 2
        self.dtype = np.int16 if top < 2**15 else np.int32
        self.sentinel = top + 1  # larger than any bin
        # limit[j]: the largest raw value retrieved at radius j (limit[R+1]: none)
        self.limit = xp.asarray(np.append(_down_to(radii, raw.type), -np.inf).astype(raw))
        # Distances are bounded for all but euclidean: skip the clamp when the
        # largest possible bin fits the bin dtype (bins above R count as beyond).
        if self.mode == "search":
            self.clamp = False
        elif bound is not None and bound * (1 + 1e-6) * float(self.scale) + 2 < top:
            self.clamp = False
        else:
            self.clamp = True

    def bins(self, x):
        """Bins of a (small) array of raw distances, as int64."""
        out = self.xp.empty(x.shape, dtype=self.dtype)
        scratch = None if self.mode == "lut" else self.xp.empty(x.shape, dtype=self.raw)
        return self(x, out, scratch).astype(np.int64)

    def __call__(self, x, out, scratch):
        xp = self.xp
        numpy = dist.is_numpy(xp)
        if self.mode == "lut":
            if numpy:
                np.take(self.lut, x, out=out, mode="clip")
            else:
                out[...] = self.lut[x]
            return out
        if self.mode == "search":
            out[...] = xp.searchsorted(self.thr, x.ravel(), side="left").reshape(x.shape)
            return out
        u = scratch
        xp.multiply(x, self.scale, out=u)
        if self.clamp:
            xp.minimum(u, self.raw.type(self.R + 1), out=u)
        if self.mode == "dyadic":
            if numpy:
                np.ceil(u, out=out, casting="unsafe")
            else:
                out[...] = xp.ceil(u)
            return out
        # uniform: estimate, then one correction each way (the estimate is off by ≤ 1)
        k = xp.ceil(u).astype(np.int32)
        xp.minimum(k, self.R + 1, out=k)
        k += x > self.hi[k]
        k -= x <= self.lo[k]
        out[...] = k
        return out


# --------------------------------------------------------------------------- counting


def _cum_sort(buf, R: int):
    """(c, R+1) counts of bins ≤ j per row, from the runs of each sorted row (NumPy).

    ``buf`` is (c, n + 1): the bins then one sentinel column larger than any bin,
    so every row's last run ends where a value changes. Sorted in place."""
    c, n = buf.shape[0], buf.shape[1] - 1
    if n == 0 or c == 0:
        return np.zeros((c, R + 1), dtype=np.int32)
    buf.sort(axis=1)
    # flat positions, in the (c, n) array of neighbour comparisons, of run ends
    ends = np.flatnonzero(buf[:, 1:] != buf[:, :-1])
    lengths = np.diff(ends, prepend=-1)
    values = buf.ravel()[ends + ends // n]  # (c, n) -> (c, n + 1) positions
    keep = values <= R
    h = np.zeros((c, R + 1), dtype=np.int32)
    h[ends[keep] // n, values[keep]] = lengths[keep]
    return np.cumsum(h, axis=1, dtype=np.int32)


def _bincount(xp, values, length: int):
    """``bincount`` of non-negative integers with exactly ``length`` bins (CuPy's
    refuses empty input)."""
    if values.size == 0:
        return xp.zeros(length, dtype=np.int64)
    return xp.bincount(values, minlength=length)[:length]


def _first_at_least(cum, k, xp=np):
    """Per row, the first radius index j with cum[j] ≥ k (cum is non-decreasing
    along a row), or R + 1 when there is none."""
    reached = cum >= k
    j = xp.argmax(reached, axis=1)
    return xp.where(reached[:, -1], j, cum.shape[1])


def _cum_bincount(b, R: int, xp=np):
    """(c, R+1) counts of bins ≤ j per row, from one offset bincount."""
    c, n = b.shape
    v = xp.minimum(b, R + 1).astype(np.int64)
    v += (xp.arange(c, dtype=np.int64) * (R + 2))[:, None]
    h = xp.bincount(v.ravel(), minlength=c * (R + 2)).reshape(c, R + 2)[:, : R + 1]
    return xp.cumsum(h, axis=1).astype(np.int32)


@lru_cache(maxsize=1)
def _cpu_counter():
    """The sorted-run counter where NumPy sorts 16-bit integers with AVX-512
    (x86-simd-sort: about 2× faster than a bincount on clustered bins), else the
    bincount. Both give identical counts."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - other NumPy layouts
        features = {}
    if features.get("AVX512_ICL") or features.get("AVX512_SPR"):
        return _cum_sort
    return _cum_bincount


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


# --------------------------------------------------------------------------- the sweep


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


def _csr(rows: np.ndarray, nrows: int) -> np.ndarray:
    ptr = np.zeros(nrows + 1, dtype=np.int64)
    if rows.size:
        np.cumsum(np.bincount(rows, minlength=nrows), out=ptr[1:])
    return ptr


def _relevant_pairs(igc, qgc, query_self, n_groups):
    """(rows, cols) of the relevant (query, index) pairs other than the query
    itself, sorted by query then index position."""
    order = np.argsort(igc, kind="stable")
    size = np.bincount(igc, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    cnt = size[qgc]
    rows = np.repeat(np.arange(len(qgc)), cnt)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    pos = np.repeat(start[qgc] - first, cnt) + np.arange(rows.size)
    cols = order[pos].astype(np.int64)
    keep = cols != query_self[rows]
    return rows[keep], cols[keep]


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
) -> SweepResult:
    """Score fixed-radius retrieval of ``queries`` in ``index`` at every radius.

    ``index`` (n, ·) and ``queries`` (q, ·): descriptor matrices (uint8 codes for
    hamming and rv, floats otherwise); ``*_groups``: the group label of each
    row (relevant = same label); ``radii``: increasing radii; ``bits``: code
    bits for hamming (default 8 × bytes); ``query_self[i]``: the position of
    query i in the index or -1 (required for ``exclude_self``; queries not in
    the index have -1); ``tile_mb``: memory bound of a tile of distances
    (``tile_rows`` sets the rows directly); ``device``: auto, cpu or cuda;
    ``beta``: the β of Fβ (> 0); ``top_k``: depth of the ranked metrics.

    Also measured in the same pass: the exact distance distributions of
    similar and dissimilar pairs (:meth:`SweepResult.distance_stats`,
    :meth:`SweepResult.histogram`) and ranked metrics
    (:meth:`SweepResult.ranked`):

    - ``recall_at_1``, ``recall_at_10``: the fraction of queries with at least
      one relevant image that have one among their 1 (10) nearest index images
      (the query itself excluded under ``exclude_self``, included otherwise);
    - ``map_at_k``: mean over those queries of AP@k = Σ_{j ≤ k, rel j}
      precision@j / min(relevant, k), k = ``top_k``;
    - ``micro_ap``: ISC2021-style micro average precision: every (query,
      neighbour) of the top k of every query (distractors included) is one
      prediction with score −distance; sorted by score, equal scores with
      irrelevant before relevant (pessimistic), AP over that list with all
      relevant pairs (also those never predicted) as the denominator.

    Ranking ties: at equal distance irrelevant images rank before relevant
    ones, then by index position (pessimistic, for the top k as well).
    """
    started = time.perf_counter()
    dist._check_distance(distance)
    xp = dist.array_module(device)
    numpy = dist.is_numpy(xp)
    radii = np.asarray(radii, dtype=np.float64).ravel()
    if radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(np.diff(radii) <= 0):
        raise ValueError("radii must be a non-empty, finite, strictly increasing sequence")
    if not beta > 0:
        raise ValueError("beta must be positive")
    top_k = int(top_k)
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    R = len(radii) - 1

    qp, ip = dist.prepare_pair(queries, index, distance, bits=bits, xp=xp)
    nq, n = qp.n, ip.n
    if nq == 0:
        raise ValueError("no queries")
    bits = ip.bits
    index_groups = np.asarray(index_groups)
    query_groups = np.asarray(query_groups)
    if index_groups.shape != (n,) or query_groups.shape != (nq,):
        raise ValueError("one group label per index row and per query row")
    codes, _ = pd.factorize(np.concatenate([index_groups, query_groups]).astype(object))
    igc, qgc = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    if query_self is None:
        query_self = np.full(nq, -1, dtype=np.int64)
    query_self = np.asarray(query_self, dtype=np.int64)
    if query_self.shape != (nq,) or np.any(query_self >= n) or np.any(query_self < -1):
        raise ValueError("query_self must hold, per query, an index position or -1")
    has_self = query_self >= 0
    if np.any(igc[query_self[has_self]] != qgc[has_self]):
        raise ValueError("a query and its own index row must have the same group")

    rel_rows, rel_cols = _relevant_pairs(igc, qgc, query_self, n_groups)
    rel_ptr = _csr(rel_rows, nq)
    n_sim = np.diff(rel_ptr)
    self_counted = has_self & (not exclude_self)
    nrel = n_sim + self_counted
    ident = dist.identical_pairs(qp.host, ip.host)

    binner = _Binner(radii, distance, bits, xp)
    raw_size = np.dtype(binner.raw).itemsize
    if tile_rows is None:
        per_row = n * (raw_size + 2) + 64 * (R + 2)
        tile_rows = max(1, int(tile_mb * 2**20 // per_row))
        tile_rows = min(tile_rows, dist.kernel_rows(n, xp))
    tile_rows = int(max(1, min(tile_rows, nq)))
    chunk = max(1, CHUNK_ELEMENTS // max(1, n)) if numpy else tile_rows
    counter = _cpu_counter() if numpy else None
    scale = float(bits) if distance == "hamming" else 1.0
    integer = distance == "hamming"
    big = np.iinfo(binner.raw).max if integer else np.inf
    ones = None if integer else xp.ones(n, dtype=binner.raw)

    sums = {k: np.zeros(R + 1) for k in ("precision", "recall", "f1", "fbeta")}
    tp_sum = np.zeros(R + 1, dtype=np.int64)
    ret_sum = np.zeros(R + 1, dtype=np.int64)
    sim, dis = _Stats(R), _Stats(R)
    k_eff = min(top_k, n)
    topk_d = np.full((nq, top_k), np.inf)
    topk_rel = np.zeros((nq, top_k), dtype=bool)
    grid = xp.arange(R + 1)
    b2 = float(beta) ** 2

    rel_rows_x = xp.asarray(rel_rows)
    rel_cols_x = xp.asarray(rel_cols)
    query_self_x = xp.asarray(query_self)
    nrel_x = xp.asarray(nrel)
    # bins of one chunk, then a sentinel column (see _cum_sort)
    bins_buf = xp.full((chunk, n + 1), binner.sentinel, dtype=binner.dtype)
    cum_buf = xp.empty((tile_rows, R + 1), dtype=np.float64)  # counts, exact in float64
    tp_buf = xp.empty((tile_rows, R + 1), dtype=np.float64)
    tpi_buf = xp.empty((tile_rows, R + 1), dtype=np.int32)
    work_buf = xp.empty((tile_rows, R + 1), dtype=np.float64)
    rowsum_buf = xp.empty(tile_rows, dtype=np.int64 if integer else np.float64)
    u_buf = xp.empty((chunk, n), dtype=binner.raw) if binner.mode != "lut" else None

    tiles = dist.iter_raw_tiles(qp, ip, tile_rows, ident, deferred=True)
    for start, stop, tile, finish in tiles:
        rows = stop - start
        cum = cum_buf[:rows]
        rowsum = rowsum_buf[:rows]
        # 1. the per-pair work, on cache-sized chunks: bin, count per query, sum, max
        tile_max = -np.inf
        for c0 in range(0, rows, chunk):
            c1 = min(rows, c0 + chunk)
            finish(c0, c1)
            x = tile[c0:c1]
            b = bins_buf[: c1 - c0]
            binner(x, b[:, :n], None if u_buf is None else u_buf[: c1 - c0])
            cum[c0:c1] = counter(b, R) if numpy else _cum_bincount(b[:, :n], R, xp)
            # (a float32 matrix-vector product: twice as fast as sum(axis=1))
            rowsum[c0:c1] = x.sum(axis=1, dtype=np.int64) if integer else x @ ones
            tile_max = max(tile_max, float(x.max()))
        all_hist = np.diff(dist.to_numpy(cum.sum(axis=0)).astype(np.int64), prepend=0)
        all_hist = np.append(all_hist, rows * n - int(all_hist.sum()))  # + beyond the grid

        # 2. relevant pairs other than the query itself: tp per radius, similar pairs
        a, z = int(rel_ptr[start]), int(rel_ptr[stop])
        rr = rel_rows_x[a:z] - start
        rc = rel_cols_x[a:z]
        rx = tile[rr, rc]
        rb = xp.minimum(binner.bins(rx), R + 1)
        sim_hist = dist.to_numpy(_bincount(xp, rb, R + 2))
        # (integer cumulative sums: a float64 cumsum along rows is ~8x slower)
        tpi = tpi_buf[:rows]
        ok = rb <= R
        if numpy:
            tpi.fill(0)
            np.add.at(tpi, (rr[ok], rb[ok]), 1)
        else:
            tpi.ravel()[...] = _bincount(xp, rr[ok] * (R + 1) + rb[ok], rows * (R + 1))
        xp.cumsum(tpi, axis=1, out=tpi)
        tp = tp_buf[:rows]
        tp[...] = tpi
        # the query itself (at d = 0 when its row is the same, as in the protocols)
        srow_h = np.flatnonzero(has_self[start:stop])
        srow = xp.asarray(srow_h)
        scol = query_self_x[start:stop][srow]
        sx = tile[srow, scol]
        sb = dist.to_numpy(xp.minimum(binner.bins(sx), R + 1))
        if srow_h.size == rows and not sb.any():  # every query in the index, at d = 0
            if exclude_self:
                cum -= 1.0
            else:
                tp += 1.0
        elif srow_h.size:
            ind = grid[None, :] >= xp.asarray(sb)[:, None]
            if exclude_self:
                cum[srow] -= ind
            else:
                tp[srow] += ind
        self_hist = np.bincount(sb, minlength=R + 2)

        # 3. distance statistics: similar pairs exactly; dissimilar = all - similar - self
        sim.count += z - a
        near_max = -np.inf  # the largest similar or self distance of this tile
        if z > a:
            sim.sum += float(rx.sum(dtype=np.float64))
            sim.min = min(sim.min, float(rx.min()))
            near_max = float(rx.max())
            sim.max = max(sim.max, near_max)
            sim.values.append(dist.to_numpy(rx).astype(np.float64))
        if srow_h.size:
            near_max = max(near_max, float(sx.max()))
        sim.hist += sim_hist
        dis_hist = all_hist - sim_hist - self_hist
        dis.hist += dis_hist
        n_dis = rows * n - (z - a) - int(srow_h.size)
        dis.count += n_dis
        if n_dis:
            total = float(rowsum.sum())
            dis.sum += total - float(rx.sum(dtype=np.float64)) - float(sx.sum(dtype=np.float64))
        # the bin of the nearest dissimilar pair: its pairs join the candidates below
        lowest = int(np.argmax(dis_hist > 0)) if n_dis else R + 1

        # 4. candidates: every pair whose bin is at most that of the query's k-th
        # nearest (cum already leaves the query out under exclude_self) or that of
        # the nearest dissimilar pair of the tile
        kth = _first_at_least(cum, k_eff, xp)
        inside = kth <= R
        level = xp.maximum(kth, lowest) if lowest <= R else kth
        flat = xp.flatnonzero(tile <= binner.limit[level][:, None])
        cr, cc = flat // n, flat % n
        cand_q = [dist.to_numpy(cr) + start]
        cand_c = [dist.to_numpy(cc)]
        cand_x = [dist.to_numpy(tile[cr, cc])]
        low_limit = float(binner.limit[lowest]) if lowest <= R else -np.inf
        for r in np.flatnonzero(~dist.to_numpy(inside)):
            row = dist.to_numpy(tile[r]).astype(np.float64)
            if exclude_self and has_self[start + r]:
                row[query_self[start + r]] = np.inf
            finite = np.isfinite(row)
            if int(finite.sum()) <= k_eff:
                cols = np.flatnonzero(finite | (row <= low_limit))
            else:
                kth_value = np.partition(row, k_eff - 1)[k_eff - 1]
                cols = np.flatnonzero(row <= max(kth_value, low_limit))
            row = dist.to_numpy(tile[r]).astype(np.float64)
            cand_q.append(np.full(cols.size, start + r))
            cand_c.append(cols)
            cand_x.append(row[cols])
        q = np.concatenate(cand_q).astype(np.int64)
        c = np.concatenate(cand_c).astype(np.int64)
        v = np.concatenate(cand_x).astype(np.float64)
        rel = igc[c] == qgc[q]
        is_self = c == query_self[q]

        # 5. dissimilar min (among the candidates) and max (the tile's maximum when
        # no similar or self pair reaches it); else hide those pairs and reduce
        if n_dis:
            if lowest <= R:
                dis.min = min(dis.min, float(v[~rel & ~is_self].min()))
            if lowest > R or tile_max <= near_max:
                tile[rr, rc] = big
                tile[srow, scol] = big
                dis.min = min(dis.min, float(tile.min()))
                tile[rr, rc] = 0
                tile[srow, scol] = 0
                tile_max = float(tile.max())
            dis.max = max(dis.max, tile_max)

        # 6. per-query P, R, F1, Fβ at every radius, summed over this tile's queries
        # (from counts: P = tp/ret, R = tp/rel, F1 = 2tp/(ret+rel), Fβ =
        # (1+β²)tp/(ret+β²rel); the conventions only matter where ret or rel is 0:
        # P = 1 when ret = 0, R = 1 when rel = 0, F1 = Fβ = 1 when both are 0)
        nr = nrel_x[start:stop].astype(np.float64)
        first = _first_at_least(cum, 1, xp)  # the first radius retrieving anything
        none_ret = rows - xp.cumsum(_bincount(xp, first, R + 2))[: R + 1]
        nr0 = nr == 0
        any_nr0 = bool(nr0.any())
        none_both = 0.0
        if any_nr0:
            none_both = int(nr0.sum()) - xp.cumsum(_bincount(xp, first[nr0], R + 2))
            none_both = none_both[: R + 1]
        work = work_buf[:rows]
        xp.maximum(cum, 1.0, out=work)
        xp.divide(tp, work, out=work)
        sums["precision"] += dist.to_numpy(work.sum(axis=0) + none_ret)
        inv_nr = 1.0 / xp.maximum(nr, 1.0)
        sums["recall"] += dist.to_numpy(inv_nr @ tp + nr0.sum())
        xp.add(cum, nr[:, None], out=work)
        if any_nr0:
            xp.maximum(work, 1.0, out=work)
        xp.divide(tp, work, out=work)
        f1 = 2.0 * work.sum(axis=0) + none_both
        sums["f1"] += dist.to_numpy(f1)
        if b2 == 1.0:
            sums["fbeta"] += dist.to_numpy(f1)
        else:
            xp.add(cum, b2 * nr[:, None], out=work)
            if any_nr0:
                xp.maximum(work, 1.0, out=work)
            xp.divide(tp, work, out=work)
            sums["fbeta"] += dist.to_numpy((1.0 + b2) * work.sum(axis=0) + none_both)
        tp_sum += dist.to_numpy(tp.sum(axis=0)).astype(np.int64)
        ret_sum += dist.to_numpy(cum.sum(axis=0)).astype(np.int64)

        # 7. exact top k of this tile's queries, from the candidates
        keep = ~is_self if exclude_self else np.ones(q.size, dtype=bool)
        q, c, v, rel = q[keep], c[keep], v[keep], rel[keep]
        order = np.lexsort((c, rel, v, q))
        q, rel, v = q[order], rel[order], v[order]
        rank = np.arange(q.size) - np.searchsorted(q, q, side="left")
        keep = rank < top_k
        topk_d[q[keep], rank[keep]] = v[keep] / scale
        topk_rel[q[keep], rank[keep]] = rel[keep]

    fn_sum = int(nrel.sum()) - tp_sum
    result = SweepResult(
        distance=distance,
        radii=radii,
        precision=sums["precision"] / nq,
        recall=sums["recall"] / nq,
        f1=sums["f1"] / nq,
        fbeta=sums["fbeta"] / nq,
        tp=tp_sum,
        fp=ret_sum - tp_sum,
        fn=fn_sum,
        queries=nq,
        beta=float(beta),
        similar=sim.summary(radii, scale, keep_values=True),
        dissimilar=dis.summary(radii, scale, keep_values=False),
        similar_hist=sim.hist[: R + 1].copy(),
        dissimilar_hist=dis.hist[: R + 1].copy(),
        ranked_metrics=ranked_metrics(topk_d, topk_rel, nrel),
    )
    result.seconds = time.perf_counter() - started
    return result


def ranked_metrics(topk_d: np.ndarray, topk_rel: np.ndarray, nrel: np.ndarray) -> dict:
    """Ranked metrics from each query's top k (distances ascending, ``inf`` for
    missing entries; relevance flags) and its number of relevant images."""
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
    d = topk_d[found]
    r = rel[found]
    order = np.lexsort((r, d))  # distance ascending; at a tie irrelevant first
    r = r[order]
    total = int(nrel.sum())
    if total:
        hits = np.cumsum(r)
        precision = hits / np.arange(1, r.size + 1)
        out["micro_ap"] = float(precision[r].sum() / total)
    else:
        out["micro_ap"] = None
    return out
