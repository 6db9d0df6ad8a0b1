"""Numba kernels of the CPU sweep: fused bin-and-count, and XOR + popcount.

The radius sweep spends, beyond the unavoidable distance computation, one
visit per pair: bin the distance, count it, add it to its row's sum and
maximum. :func:`count_rows` does all of that in one pass over each row while
the row is in cache (threads over rows), where NumPy needed a pass per
operation. The bins are those of :class:`risbench.binning.Binner`, exactly (the
same float operations in the same dtype); ``tests/test_metrics.py`` checks the
kernel against a plain NumPy counter on random and boundary-heavy tiles.

Threads follow the job's thread request: Snakemake sets ``OMP_NUM_THREADS``
(and the BLAS variables) to a job's ``threads``, and :func:`job_threads` reads
the same variable, so a one-thread job stays on one core.

Compiled code is cached on disk (``cache=True``): the first call in a fresh
environment compiles (a few seconds per dtype); later processes load it.
Only jobs import this module (through :mod:`risbench.binning` and, lazily,
:mod:`risbench.distance`): the workflow's parse never pays for numba.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from risbench import distance as dist

# Numba's threading layer: OpenMP, its workers waiting passively. By default
# they spin after each kernel, taking the cores of the next matrix product's
# BLAS threads (sweeps of n = 7,000 at d = 512 on 2 cores: 3.1 s, up to 7.8 s,
# against 1.0 s when the machine was busy); passive, they sleep at once and a
# launch wakes them in microseconds. The workqueue layer's workers did not run
# side by side here: a 1.8 ms kernel took as long on 2 threads as on 1, and a
# sweep's counting kernel 29 ms against 19 on OpenMP. libgomp reads
# OMP_WAIT_POLICY when it loads (at the first parallel kernel); a value already
# set wins, and so do NUMBA_THREADING_LAYER(_PRIORITY). The workqueue is the fallback
# where numba has no OpenMP (numba wants every layer in the order; TBB last)...
if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# ... and would abort the process on launches from two Python threads at once
# (sweeps run from a thread pool): parallel launches take turns.
_LAUNCH = threading.Lock()

# Binner modes as the kernel sees them (risbench.binning.Binner.mode).
MODES = {"dyadic": 0, "uniform": 1, "search": 2}
# Distances whose products the float kernel turns into distances itself
# (_finish_row). Angular's arrive as angles: numba's float32 arccos (libm's)
# differs from NumPy's (SIMD) in the last bit for 6 % of inputs, so NumPy's
# runs first (distance._RawTiles.finish) and the kernel divides by π.
FINISH = {"cosine": 1, "angular": 2, "euclidean": 3}
# Columns binned per block: the block's bins stay in L1 between the (vectorised)
# binning loop and the (scalar) histogram loop.
_BLOCK = 512
# Sums and maxima: reassociation lets the row reductions vectorise (the order
# is fixed by the compiled code and the row length, never by the tile, so a
# row's sum is the same whatever rows are processed with it); distances are
# never NaN (inputs are checked finite).
_FAST = {"reassoc", "nnan", "nsz"}


def job_threads() -> int:
    """Threads for the kernels: ``OMP_NUM_THREADS`` when set (as Snakemake sets
    it to a job's threads, and as BLAS reads it), else every CPU numba sees;
    never more than numba's pool."""
    pool = numba.config.NUMBA_NUM_THREADS
    return max(1, min(dist.omp_threads() or pool, pool))


# A cache line that two threads write in turn moves between their cores at each
# write. The kernels' threads write their scratch at every row or block, so each
# thread's part is followed by a spare of at least _APART bytes (a 64-byte line
# and the line the adjacent-line prefetcher pairs with it). Adjacent parts made
# two threads' blocks of bins share a line: binning and counting took 0.33 ns a
# pair on 2 threads against 0.35 on one, 0.18 with the spare (d = 512 tiles).
_APART = 128


def thread_scratch(threads: int, shape: tuple, dtype) -> np.ndarray:
    """Zeroed scratch for the kernels' threads, of shape (threads, 1 + spare,
    *shape): thread t's part is ``[t, 0]``; ``[t, 1:]``, at least _APART bytes,
    keeps the next thread's part off its cache lines."""
    part = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return np.zeros((threads, 1 + -(-_APART // part), *shape), dtype=dtype)


def _use_job_threads() -> int:
    """Sets and returns the kernels' threads. (A kernel given its thread count as
    an argument can be cached: one calling numba.get_num_threads cannot.)"""
    threads = job_threads()
    numba.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------- bin and count
#
# Each kernel is a plain function over a range of rows, run on all rows when
# the job has one thread (no hand-over to a worker), else once per thread from
# a prange loop that does nothing else: numba's parallel transform hoists
# allocations and constants out of a prange body (threads, and rows, would
# share them), so the scratch is made by the caller, one per thread. Loops index
# from 0 over a row or a block slice: an index LLVM cannot prove non-negative
# keeps numba's wraparound and stops vectorisation.


@numba.njit
def _rows_of(t, threads, rows):
    """Thread t's share of ``rows`` rows among ``threads``: (first, stop)."""
    return t * rows // threads, (t + 1) * rows // threads


@numba.njit
def _first_at_least(a, v):
    """The first j with a[j] ≥ v in the non-decreasing ``a`` (len(a) when none):
    a binary search."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit
def _bin_block(blk, mode, scale, thr, bins):
    """Bins of a block of distances: the first j with v ≤ thr[j] (R + 1 when
    none), as Binner computes them (same float operations, same dtype). Every
    bin lies in 0..R+1, whatever the input: the histograms are indexed
    unchecked."""
    w = blk.shape[0]
    R = thr.shape[0] - 1
    if mode == 2:  # search: binary search on the thresholds
        for j in range(w):
            bins[j] = _first_at_least(thr, blk[j])
        return
    zero, top = blk.dtype.type(0), blk.dtype.type(R + 1)
    for j in range(w):  # ceil(v / step), exact for a power-of-two step (vectorised)
        k = np.int32(np.ceil(min(max(blk[j] * scale, zero), top)))
        bins[j] = min(max(k, 0), R + 1)  # (a NaN would convert to anything)
    if mode == 1:  # uniform: the estimate is off by at most one
        for j in range(w):
            v, k = blk[j], bins[j]
            if k <= R and v > thr[k]:
                k += 1
            if k >= 1 and v <= thr[k - 1]:
                k -= 1
            bins[j] = k


@numba.njit
def _order_key(bits, low):
    """A float's bits (a signed integer) to a key in the float's order (the
    negative floats' bits reversed); its own inverse. ``low``: the integer's
    largest value. Integer maxima vectorise where float ones do not."""
    return bits ^ ((bits >> 63) & low)


@numba.njit
def _histogram(bins, w, hists):
    """Add bins[:w] to four sub-histograms (by position mod 4): a run of equal
    bins then updates four counters in turn instead of waiting on one."""
    h0, h1, h2, h3 = hists[0], hists[1], hists[2], hists[3]
    for j in range(w >> 2):
        h0[bins[4 * j]] += 1
        h1[bins[4 * j + 1]] += 1
        h2[bins[4 * j + 2]] += 1
        h3[bins[4 * j + 3]] += 1
    for j in range(w & ~3, w):
        h0[bins[j]] += 1


@numba.njit
def _cumulate(hists, upto, cum_row):
    """cum_row[k] = the entries of the sub-histograms at positions ≤ upto[k]
    (none when upto[k] < 0; no ``upto``: ≤ k), exact in cum_row's type (int32
    in the sweep, float64 also serves); the sub-histograms are zeroed."""
    total = hists[0]
    for k in range(total.shape[0]):  # vectorised
        total[k] += hists[1, k] + hists[2, k] + hists[3, k]
    running = 0
    if upto.shape[0] == 0:  # (every bin its own radius: no lookup)
        for k in range(cum_row.shape[0]):
            running += total[k]
            cum_row[k] = running
    else:
        for k in range(total.shape[0]):
            running += total[k]
            total[k] = running
        for k in range(cum_row.shape[0]):
            cum_row[k] = total[upto[k]] if upto[k] >= 0 else 0
    hists[:] = 0


# (fastmath=False stated: a callee not stating it inherits its caller's flags)
@numba.njit(cache=True, fastmath=False)
def _finish_row(row, fin, isq, qsq, cols):
    """Matrix products (angular: their angles) to distances in place
    (``fin``: FINISH's codes), as ``distance._to_distance`` does with NumPy:
    the same float32 operations in the same order, no fast-math flags (no FMA
    contraction, no reassociation), then exactly 0 at the columns ``cols``
    (bit-identical rows)."""
    n = row.shape[0]
    zero, one, two = row.dtype.type(0), row.dtype.type(1), row.dtype.type(-2)
    if fin == 1:  # cosine: 1 - s, floored at 0 (|s| > 1 by rounding)
        for j in range(n):
            v = one - row[j]
            row[j] = v if v >= zero else zero
    elif fin == 2:  # angular: angle × float32(1/π)
        inv_pi = row.dtype.type(0.3183098861837907)
        for j in range(n):
            row[j] = row[j] * inv_pi
    elif fin == 3:  # euclidean: sqrt(max((s · -2 + |i|²) + |q|², 0))
        for j in range(n):
            v = (row[j] * two + isq[j]) + qsq
            row[j] = np.sqrt(v if v >= zero else zero)
    for c in cols:
        row[c] = zero


@numba.njit(fastmath=_FAST, cache=True)
def _float_rows(x, xi, mode, scale, thr, cum, rowsum, rowmax, hists, bins, i0, i1, fin, pick, t):
    """Rows i0:i1 of a float tile (thread t's share, or all rows on one
    thread); ``hists``, ``bins``: the thread's scratch; ``fin``: (code, index
    squared norms, query squared norms, identical pairs' CSR pointer and
    columns) of the products still to be turned into distances (code 0: none);
    ``pick``: :func:`_pick_row`'s arrays (no rows: no pick)."""
    n = x.shape[1]
    scale = x.dtype.type(scale)
    low = np.iinfo(xi.dtype).max
    upto = np.zeros(0, dtype=np.int64)  # (bin k: radius k)
    code, isq, qsq, id_ptr, id_cols = fin
    for i in range(i0, i1):
        row, bits = x[i], xi[i]
        if code:
            q = qsq[i] if code == 3 else x.dtype.type(0)
            _finish_row(row, code, isq, q, id_cols[id_ptr[i] : id_ptr[i + 1]])
        s, m = 0.0, _order_key(bits[0], low) if n else 0
        for a in range(0, n, bins.shape[0]):
            blk, blk_bits = row[a : a + bins.shape[0]], bits[a : a + bins.shape[0]]
            w = blk.shape[0]
            for j in range(w):  # vectorised
                s += blk[j]
                m = max(m, _order_key(blk_bits[j], low))
            _bin_block(blk, mode, scale, thr, bins)
            _histogram(bins, w, hists)
        _cumulate(hists, upto, cum[i])
        rowsum[i] = s
        rowmax[i] = _order_key(m, low)
        if pick[0].shape[0]:
            _pick_row(i, row, cum[i], pick, t)


@numba.njit(parallel=True, cache=True)
def _count_float(x, xi, mode, scale, thr, cum, rowsum, rowmax, hists, blocks, fin, pick):
    threads, rows = hists.shape[0], x.shape[0]
    for t in prange(threads):
        i0, i1 = _rows_of(t, threads, rows)
        h, b = hists[t, 0], blocks[t, 0]
        _float_rows(x, xi, mode, scale, thr, cum, rowsum, rowmax, h, b, i0, i1, fin, pick, t)


@numba.njit(cache=True)
def _count_rows(x, upto, cum, rowsum, rowmax, hists, bins, i0, i1, words, pick, t):
    """Rows i0:i1 of a tile of bit counts (thread t's share, or all rows on
    one thread); ``hists``, ``bins``: the thread's scratch; ``words``: (query
    words of the rows, index words transposed) when the counts are still to
    be computed, row by row (no rows: ``x`` holds them); ``pick``: as
    :func:`_float_rows`'s."""
    n = x.shape[1]
    top = hists.shape[1] - 1
    qw, iw_t = words
    for i in range(i0, i1):
        row = x[i]
        if qw.shape[0]:
            _popcount_row(qw[i], iw_t, row)
        s, m = 0, 0
        for j in range(n):  # vectorised
            s += row[j]
            m = max(m, row[j])
        if m <= top:  # (always, for counts made here: the row is its own bins)
            _histogram(row, n, hists)
        else:
            for a in range(0, n, bins.shape[0]):
                blk = row[a : a + bins.shape[0]]
                for j in range(blk.shape[0]):  # vectorised
                    bins[j] = min(blk[j], top)  # as Binner's lookup clips
                _histogram(bins, blk.shape[0], hists)
        _cumulate(hists, upto, cum[i])
        rowsum[i] = s
        rowmax[i] = m
        if pick[0].shape[0]:
            _pick_row(i, row, cum[i], pick, t)


@numba.njit(parallel=True, cache=True)
def _count_counts(x, upto, cum, rowsum, rowmax, hists, blocks, words, pick):
    threads, rows = hists.shape[0], x.shape[0]
    for t in prange(threads):
        i0, i1 = _rows_of(t, threads, rows)
        h, b = hists[t, 0], blocks[t, 0]
        _count_rows(x, upto, cum, rowsum, rowmax, h, b, i0, i1, words, pick, t)


def count_rows(binner, x, cum, rowsum, rowmax, finish=None, pick=None):
    """Per row of the distance tile ``x`` (raw units, rows contiguous): into
    ``cum`` (rows, R+1; int32 or float64) the pairs retrieved at each radius (bin ≤ j),
    into ``rowsum`` the sum of the row's distances (float64 sums of the
    distances; exact int64 bit counts for hamming), into ``rowmax`` its largest
    distance (``x``'s dtype). ``binner``: a NumPy :class:`risbench.binning.Binner`.

    ``finish``: None when ``x`` holds distances; else ``x`` holds float32
    matrix products (distances in FINISH) or nothing yet (hamming) and
    ``finish`` is the :class:`risbench.distance.RowFinish` that makes the
    distances, in place, row by row while each row is in cache.

    ``pick``: None, or (k, table, level) to also pick each row's candidates
    while it is in cache, as :func:`pick_candidates` does (same answer, same
    order); returns them as (rows, cols, values).

    Hamming counts are not binned one by one: a histogram of the counts
    (0..bits) and, per radius, the pairs with at most its count threshold."""
    threads = min(_use_job_threads(), max(1, len(x)))
    size = binner.top + 1 if binner.mode == "lut" else cum.shape[1] + 1
    # Per thread scratch, made here: numba's parallel transform would hoist an
    # allocation in a prange body out of the loop, shared by the threads. The
    # bins are unsigned: an index numba cannot prove non-negative gets a
    # wraparound test (signed int32 bins: 0.68 ns a pair, unsigned: 0.53).
    hists = thread_scratch(threads, (4, size), np.int32)
    blocks = thread_scratch(threads, (_BLOCK,), np.uint32)
    picks = _pick_buffers(pick, x, threads, binner.limit)
    if binner.mode == "lut":
        args = (x, binner.upto, cum, rowsum, rowmax)
        tail = (_words_args(finish, x.shape[1]), picks)
        serial, parallel = _count_rows, _count_counts
    else:
        ints = np.dtype(f"i{x.dtype.itemsize}")
        scale = float(getattr(binner, "scale", 1.0))
        args = (x, x.view(ints), MODES[binner.mode], scale, binner.thr, cum, rowsum)
        args += (rowmax.view(ints),)
        tail = (_finish_args(finish, x.dtype), picks)
        serial, parallel = _float_rows, _count_float
    if threads == 1:  # no hand-over to a worker thread
        serial(*args, hists[0, 0], blocks[0, 0], 0, len(x), *tail, 0)
    else:
        with _LAUNCH:
            parallel(*args, hists, blocks, *tail)
    return None if pick is None else _picked(x, cum, pick, picks)


# Room for each row's candidates in the counting kernel's buffers, beyond the k
# it must reach: the pairs tied with the k-th in its bin. A row with more (many
# identical images) is picked again on its own.
_PICK_SLACK = 64


def _pick_buffers(pick, x, threads: int, limit) -> tuple:
    """The counting kernel's pick arrays: (k, table, level, found, per thread
    columns and values, per thread positions); no rows when ``pick`` is None
    (``limit``: the Binner's, whose type the table has either way)."""
    if pick is None:
        k, table, level = np.zeros(0, np.int64), limit, np.zeros(0, np.int64)
        cap = 0
    else:
        k, table, level = pick
        share = -(-len(x) // threads)  # the most rows a thread takes
        reach = np.where(k <= x.shape[1], k, 0)  # (a k beyond the row: nothing)
        cap = share * (int(reach.max(initial=0)) + _PICK_SLACK)
    if table.dtype != x.dtype:  # (hamming: int64 limits, -1 for none; compared in
        info = np.iinfo(x.dtype)  # x's type they vectorise 4 times wider)
        table = np.clip(table, info.min, info.max).astype(x.dtype)
    found = np.empty(len(k), dtype=np.int64)
    cols = np.empty((threads, cap), dtype=np.int64)
    vals = np.empty((threads, cap), dtype=x.dtype)
    used = thread_scratch(threads, (), np.int64)
    return k, table, level, found, cols, vals, used


def _picked(x, cum, pick, picks) -> tuple:
    """The candidates the kernel picked, thread after thread (row-major), then
    those of the rows its buffers could not hold, picked alone; a ValueError
    when a row holds another number of them than ``cum`` says."""
    k, _, level, found, cols, vals, used = picks
    width = cum.shape[1]
    kept = found >= 0
    rows = np.arange(len(x))
    expected = np.where(level < width, cum[rows, np.minimum(level, width - 1)], 0)
    if not np.array_equal(found[kept], expected[kept]):
        raise ValueError("pick_candidates: the counts do not match the distances")
    out = [
        np.repeat(rows[kept], found[kept]),
        np.concatenate([cols[t, : used[t, 0]] for t in range(len(used))]),
        np.concatenate([vals[t, : used[t, 0]] for t in range(len(used))]),
    ]
    alone = rows[~kept]
    if alone.size:
        scratch = np.empty(alone.size, dtype=np.int64)  # (their levels are set)
        more = pick_candidates(x[alone], cum[alone], k[alone], pick[1], scratch)
        more = (alone[more[0]], *more[1:])
        out = [np.concatenate([a, b]) for a, b in zip(out, more, strict=True)]
    return tuple(out)


def _words_args(finish, n: int) -> tuple:
    """The hamming kernel's view of a RowFinish: (query words, index words
    transposed), no rows when ``x`` holds the counts already."""
    if finish is None:
        return np.zeros((0, 1), dtype=np.uint64), np.zeros((1, n), dtype=np.uint64)
    if finish.distance != "hamming":
        raise ValueError(f"hamming counts, not {finish.distance}")
    return finish.words, finish.words_t


def _finish_args(finish, dtype) -> tuple:
    """The kernel's view of a RowFinish (one tuple type whatever the distance,
    so that one compiled kernel serves all)."""
    none = np.zeros(0, dtype=dtype), np.zeros(1, dtype=np.int64)
    if finish is None:
        return (0, none[0], none[0], none[1], none[1][:0])
    if finish.distance not in FINISH:
        raise ValueError(f"the CPU kernel cannot finish {finish.distance} distances")
    isq = none[0] if finish.isq is None else finish.isq
    qsq = none[0] if finish.qsq is None else finish.qsq
    return (FINISH[finish.distance], isq, qsq, finish.id_ptr, finish.id_cols)


# --------------------------------------------------------------------------- scores
#
# After counting, the sweep needs per query and radius the relevant pairs
# retrieved (tp) and, per query set, the sums over its queries of P = tp/ret,
# tp/(ret + rel) and tp/(ret + β²·rel), with NumPy's rounding: the same float64
# divisions, summed query after query in row order (as NumPy's sum along axis
# 0 does). One thread: the radii split over 2 threads (on OpenMP; a split over
# the queries would change the order) took 0.30 against 0.32 ms a tile of 512
# × 1,025, a row's own work (its relevant bins, sorted) being done by both
# threads and the threads' sums merged after.


@numba.njit(cache=True)
def _score_cols(cum, rel_ptr, rel_bins, self_bins, excl, nr, b2, member, sums, counts, steps):
    """:func:`score_rows`'s loop; ``steps``: scratch for one row's relevant bins."""
    rows, parts, w = cum.shape[0], member.shape[0], cum.shape[1]
    trow = np.empty(w)  # a row's tp (in cache: it is used at once)
    tp_steps = np.zeros((parts, w), dtype=np.int64)  # per set, the tp steps at each bin
    self_steps = np.zeros((parts, w), dtype=np.int64)  # and the queries taken out of ret
    for i in range(rows):
        # tp: a step up at each relevant pair's bin (and the query's own, counted
        # unless exclude_self, which takes it out of ret instead)
        m, sb = 0, self_bins[i]
        for p in range(rel_ptr[i], rel_ptr[i + 1]):
            if rel_bins[p] < w:
                steps[m] = rel_bins[p]
                m += 1
        if sb < w and not excl:
            steps[m] = sb
            m += 1
        row_steps = steps[:m]
        _sort_few(row_steps)
        crow = cum[i]
        lo = 0
        for k in range(m):  # (fills of constant runs, where a running sum took a
            trow[lo : row_steps[k]] = k  # dependent add per radius)
            lo = row_steps[k]
        trow[lo:] = m
        if excl:
            for j in range(sb, w):
                crow[j] -= 1
        nri, b2nr = nr[i], b2 * nr[i]
        inv_nr = 1.0 / (nri if nri >= 1.0 else 1.0)
        for p in range(parts):
            if not member[p, i]:
                continue
            _add_ratio(sums[p, 0], trow, crow, 0.0)
            _add_ratio(sums[p, 1], trow, crow, nri)
            if b2 != 1.0:
                _add_ratio(sums[p, 2], trow, crow, b2nr)
            for j in range(w):  # vectorised
                sums[p, 3, j] += trow[j] * inv_nr
            _add_counts(counts[p, 1], crow)
            for k in range(m):
                tp_steps[p, row_steps[k]] += 1
            if excl and sb < w:
                self_steps[p, sb] += 1
    for p in range(parts):  # Σ tp, and ret before exclude_self took the queries out
        tp_sum, taken = 0, 0
        for j in range(w):
            tp_sum += tp_steps[p, j]
            taken += self_steps[p, j]
            counts[p, 0, j] = tp_sum
            counts[p, 2, j] = counts[p, 1, j] + taken


@numba.njit
def _sort_few(a):
    """Sorts ``a`` in place: by insertion when it holds a few values, as a
    row's relevant bins do (numba's sort cost about 0.25 µs a row: 0.39 →
    0.27 ms a tile of 512 rows), else by numba's sort."""
    if a.shape[0] > 32:
        a.sort()
        return
    for i in range(1, a.shape[0]):
        _insert_sorted(a, i, i + 1, a[i])


@numba.njit
def _insert_sorted(buf, m, k, v):
    """Inserts v into the ascending buf[:m] (m ≤ k, room for k values), the
    k+1-th dropped; returns the new count."""
    i = m if m < k else k - 1
    while i > 0 and buf[i - 1] > v:
        buf[i] = buf[i - 1]
        i -= 1
    buf[i] = v
    return min(m + 1, k)


@numba.njit(cache=True)
def _add_ratio(acc, t, c, add):
    """acc += t / max(c + add, 1), one array per loop so that it vectorises (c
    + 0.0 is c: the counts are never -0.0)."""
    for j in range(acc.shape[0]):
        d = c[j] + add
        acc[j] += t[j] / (d if d >= 1.0 else 1.0)


@numba.njit(cache=True)
def _add_counts(cnt, x):
    for j in range(cnt.shape[0]):
        cnt[j] += np.int64(x[j])


def score_rows(cum, relevant, self_bins, exclude_self: bool, nr, b2: float, member):
    """The score sums of a tile: ``cum`` (rows, R+1), the pairs each query
    retrieves at each radius (the query itself taken out here under
    ``exclude_self``); tp, the relevant pairs retrieved (the query itself
    counted unless ``exclude_self``), made and used a row at a time.
    ``relevant``: (CSR pointer local to the rows, bins) of each row's
    relevant pairs other than itself; ``self_bins``: per row the bin of the
    query itself (R + 1 or more: not in the index); ``nr``: relevant images per
    row (float64); ``member`` (sets, rows) bool: the rows of each query set.

    Returns per set ``sums`` (sets, 4, R+1) float64, the sums over its rows of
    tp/max(ret, 1), tp/max(ret + rel, 1), tp/max(ret + β²·rel, 1) (the
    maximum only matters where the sum is 0, and then tp = 0; the third only
    when β² ≠ 1, else zeros) and tp × (1 / max(rel, 1)), and ``counts``
    (sets, 3, R+1) int64: the sums of tp, of ret and of ret before
    ``exclude_self`` took the query out (every pair's cumulative histogram)."""
    rel_ptr, rel_bins = relevant
    width = cum.shape[1]
    sums = np.zeros((len(member), 4, width))
    counts = np.zeros((len(member), 3, width), dtype=np.int64)
    most = int(np.diff(rel_ptr).max(initial=0)) + 1  # (relevant pairs of a row, itself)
    steps = np.empty(most, dtype=np.int64)
    args = (cum, rel_ptr, rel_bins, self_bins, bool(exclude_self), nr, float(b2), member)
    _score_cols(*args, sums, counts, steps)
    return sums, counts


@numba.njit(cache=True)
def first_at_least(cum, k, out):
    """Per row, the first j with cum[i, j] ≥ k[i] (rows non-decreasing), else
    the row length (binning.first_at_least's answer)."""
    for i in range(cum.shape[0]):
        out[i] = _first_at_least(cum[i], k[i])


# --------------------------------------------------------------------------- candidates


@numba.njit
def _scan_row(row, lim, cols, vals, pos, end):
    """The pairs of ``row`` at most ``lim``, written from ``pos`` (never at or
    beyond ``end``); returns the position after the last one, counting those
    beyond ``end`` too."""
    n = row.shape[0]
    for a in range(0, n, 64):
        blk = row[a : a + 64]
        hits = 0
        for j in range(blk.shape[0]):  # vectorised: most blocks hold none
            hits += blk[j] <= lim
        if hits == 0:
            continue
        for j in range(blk.shape[0]):
            if blk[j] <= lim:
                if pos < end:
                    cols[pos] = a + j
                    vals[pos] = blk[j]
                pos += 1
    return pos


@numba.njit
def _pick_row(i, row, cum_row, pick, t):
    """Row i's candidates, while the row is in cache (:func:`count_rows` with a
    pick): its level (the first radius reaching ``want[i]`` pairs) and every
    pair up to that level's limit, appended to thread t's buffers; a row whose
    pairs would not fit is left out (found -1: the caller picks it alone)."""
    want, table, level, found, cols, vals, used = pick
    lvl = _first_at_least(cum_row, want[i])
    level[i] = lvl
    expected = np.int64(cum_row[lvl]) if lvl < cum_row.shape[0] else 0
    pos, cap = used[t, 0], cols.shape[1]
    if pos + expected > cap:
        found[i] = -1
        return
    if expected == 0:  # (nothing to scan for: the limit may be a sentinel)
        found[i] = 0
        return
    end = _scan_row(row, table[lvl], cols[t], vals[t], pos, cap)
    found[i] = end - pos
    used[t, 0] = min(end, cap)


@numba.njit(cache=True)
def _pick(x, cum, k, table, level):
    """:func:`pick_candidates` in one compiled call."""
    rows, width = cum.shape
    start = np.zeros(rows + 1, dtype=np.int64)
    for i in range(rows):
        level[i] = _first_at_least(cum[i], k[i])
        start[i + 1] = start[i] + (np.int64(cum[i, level[i]]) if level[i] < width else 0)
    cols = np.empty(start[rows], dtype=np.int64)
    vals = np.empty(start[rows], dtype=x.dtype)
    owner = np.empty(start[rows], dtype=np.int64)
    ok = True
    for i in range(rows):
        end = _scan_row(x[i], table[level[i]], cols, vals, start[i], start[i + 1])
        ok = ok and end == start[i + 1]
        owner[start[i] : start[i + 1]] = i
    return owner, cols, vals, ok


def pick_candidates(x, cum, k, table, level):
    """Per row of the distances ``x``, every pair up to the bin of its
    k-th nearest: into ``level`` the first radius j with ``cum[i, j]`` ≥
    ``k[i]`` (R + 1: none), and the pairs with distance ≤ ``table[level]``
    (``Binner.limit``: exactly those of bin ≤ level, ``cum[i, level]`` of
    them) as (rows, columns, values) in row-major order. A ValueError when a
    row holds another number of them than ``cum`` says (nothing is written out
    of bounds). One thread: :func:`count_rows` picks while it counts; this
    serves the rows its buffers could not hold."""
    rows, cols, vals, ok = _pick(x, cum, k, table, level)
    if not ok:
        raise ValueError("pick_candidates: the counts do not match the distances")
    return rows, cols, vals


# A row whose k-th nearest lies beyond the grid has no bin to pick up to: its k
# nearest come from a pass of their own. Up to _FEW_NEAREST, a sorted buffer
# that a value enters only when it beats the k-th so far, 64 columns at a time
# (a block with nothing below the k-th is skipped after one vectorised test);
# beyond, numba's np.partition on a copy of the row.
_FEW_NEAREST = 64


@numba.njit
def _kth_nearest(row, own, k, buf):
    """The k-th smallest finite value of ``row`` without its column ``own``
    (-1: none), in float64; inf when the row has fewer than k. ``buf``:
    scratch of at least min(k, _FEW_NEAREST) values."""
    if k > row.shape[0]:
        return np.inf
    if k > _FEW_NEAREST:
        copy = row.astype(np.float64)
        if own >= 0:
            copy[own] = np.inf
        return np.partition(copy, k - 1)[k - 1]
    m = 0  # values in buf[:m], ascending
    for a in range(0, row.shape[0], 64):
        blk = row[a : a + 64]
        if m == k:
            below = False
            for j in range(blk.shape[0]):  # vectorised
                below |= blk[j] < buf[k - 1]
            if not below:
                continue
        for j in range(blk.shape[0]):
            v = np.float64(blk[j])
            if a + j != own and v < np.inf and (m < k or v < buf[k - 1]):
                m = _insert_sorted(buf, m, k, v)
    return buf[k - 1] if m == k else np.inf


@numba.njit(cache=True)
def _nearest_rows(x, rows, own, k, low, found, out, buf, i0, i1):
    """Rows i0:i1 of :func:`nearest_beyond_grid`. First pass (``out`` without
    rows): each row's limit (its k-th nearest, or its ``low`` beyond) into
    ``found[0]``, and its pairs up to it, its own included, into
    ``found[1][i + 1]``; second pass: those pairs into ``out`` from
    ``found[1][i]`` (the counts summed)."""
    lim, start = found
    cols, vals = out
    for i in range(i0, i1):
        row = x[rows[i]]
        if cols.shape[0] == 0:
            kth = _kth_nearest(row, own[i], k, buf)
            # (fewer than k: every finite value, as the largest float keeps them)
            lim[i] = max(kth if kth < np.inf else np.finfo(np.float64).max, low[i])
            start[i + 1] = _scan_row(row, lim[i], cols, vals, 0, 0)
        else:
            _scan_row(row, lim[i], cols, vals, start[i], start[i + 1])


@numba.njit(parallel=True, cache=True)
def _nearest_shares(x, rows, own, k, low, found, out, bufs):
    threads = bufs.shape[0]
    for t in prange(threads):
        i0, i1 = _rows_of(t, threads, rows.shape[0])
        _nearest_rows(x, rows, own, k, low, found, out, bufs[t, 0], i0, i1)


def nearest_beyond_grid(x, rows, own, k: int, low) -> tuple:
    """For the rows ``rows`` of the distances ``x`` (raw units) whose k-th
    nearest lies beyond the grid: their k nearest other pairs (ties
    included) and their pairs at most ``low`` (per row, float64; -inf: none),
    ``own`` (per row) the query's own column, never kept (-1: none). Returns
    (positions in ``rows``, columns ascending within a row, float64 values)."""
    if k < 1:
        raise ValueError(f"nearest_beyond_grid: k must be at least 1, not {k}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    own = np.ascontiguousarray(own, dtype=np.int64)
    low = np.ascontiguousarray(low, dtype=np.float64)
    threads = min(_use_job_threads(), max(1, rows.size))
    bufs = thread_scratch(threads, (min(k, _FEW_NEAREST),), np.float64)
    found = (np.empty(rows.size), np.zeros(rows.size + 1, dtype=np.int64))

    def run(out: tuple) -> None:
        if threads == 1:
            _nearest_rows(x, rows, own, k, low, found, out, bufs[0, 0], 0, rows.size)
        else:
            with _LAUNCH:
                _nearest_shares(x, rows, own, k, low, found, out, bufs)

    run((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=x.dtype)))
    start = np.cumsum(found[1], out=found[1])
    cols, vals = np.empty(start[-1], dtype=np.int64), np.empty(start[-1], dtype=x.dtype)
    if start[-1]:
        run((cols, vals))
    at = np.repeat(np.arange(rows.size), np.diff(start))
    keep = cols != own[at]  # (the query itself)
    return at[keep], cols[keep], vals[keep].astype(np.float64)


@numba.njit(cache=True)
def _before(v, rel, c, a, b):
    """Whether candidate a ranks before b: distance, then irrelevant first,
    then index position (the sweep's ranking, a total order within a query)."""
    if v[a] != v[b]:
        return v[a] < v[b]
    if rel[a] != rel[b]:
        return not rel[a]
    return c[a] < c[b]


@numba.njit(cache=True)
def top_ranks(q, c, v, rel, k, rank):
    """Per candidate pair (query ``q``, sorted; index ``c``; distance ``v``;
    relevant ``rel``) its rank among its query's pairs when below ``k``, else
    -1, into ``rank``: the k best of each query kept in order by insertion
    (O(pairs × k), where sorting all pairs, as np.lexsort did, was O(pairs log
    pairs) and most pairs lose to the k-th at once)."""
    best = np.empty(k, dtype=np.int64)
    rank[:] = -1
    a, m = 0, q.shape[0]
    while a < m:
        b, held = a, 0
        while b < m and q[b] == q[a]:
            if held < k or _before(v, rel, c, b, best[held - 1]):
                pos = min(held, k - 1)  # the last one held falls out when full
                while pos > 0 and _before(v, rel, c, b, best[pos - 1]):
                    best[pos] = best[pos - 1]
                    pos -= 1
                best[pos] = b
                held = min(held + 1, k)
            b += 1
        for r in range(held):
            rank[best[r]] = r
        a = b


# --------------------------------------------------------------------------- hamming


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop: one instruction (vectorised with AVX-512 VPOPCNTDQ)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@numba.njit(cache=True)
def _popcount_row(q, iw_t, row):
    """Differing bits of one query's words ``q`` against every index row."""
    words, n = iw_t.shape
    first = iw_t[0]
    for j in range(n):  # vectorised (VPOPCNTQ)
        row[j] = _popcount(q[0] ^ first[j])
    for w in range(1, words):
        qword, word = q[w], iw_t[w]
        for j in range(n):
            row[j] += _popcount(qword ^ word[j])


@numba.njit(cache=True)
def _hamming_rows(qw, iw_t, out, i0, i1):
    """Rows i0:i1 of :func:`hamming_counts` (one thread's share, or all)."""
    for i in range(i0, i1):
        _popcount_row(qw[i], iw_t, out[i])


@numba.njit(parallel=True, cache=True)
def _hamming_shares(qw, iw_t, out, threads):
    rows = qw.shape[0]
    for t in prange(threads):
        _hamming_rows(qw, iw_t, out, *_rows_of(t, threads, rows))


def hamming_counts(qw: np.ndarray, iw_t: np.ndarray, out: np.ndarray) -> None:
    """Differing bits of each query row (uint64 words ``qw``, (rows, words))
    against every index row (the words transposed, ``iw_t`` (words, n)), into
    ``out`` (rows, n), an unsigned integer array."""
    threads = min(_use_job_threads(), max(1, len(qw)))
    if threads == 1:
        _hamming_rows(qw, iw_t, out, 0, len(qw))
    else:
        with _LAUNCH:
            _hamming_shares(qw, iw_t, out, threads)
