"""Numba kernel of the per-query outcomes pass (:mod:`risbench.outcomes`) on the CPU.

Per query row of a tile, while the row is in cache (threads over rows, as
:func:`risbench.cpukernels.count_rows`): the row is finished into distances
(the sweep kernel's own code: cosine and euclidean products, angular angles,
hamming XOR + popcount), then one pass per radius counts the retrieved pairs, the
relevant pairs and the query's own pair are read at their columns, the
relevant and own columns are hidden, and two more passes find the nearest
other image and count those at most as far as the nearest relevant one (the
hidden values are then put back: a sweep that records its queries' outcomes
runs this on its finished tiles, with no radius, and reads them on).
The array code it replaces (kept for the GPU, ``outcomes._Chunk``) took a
float64 copy of the tile and about six passes over it; the tests hold both
to the same answers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from numba import prange

from risbench import cpukernels as ck


def _hidden_value(dtype):
    """What a row holds at its hidden columns (the relevant and own pairs) while
    its nearest other image is searched: beyond every distance (floats: inf, as
    in the array code's float64 copy; counts: the type's largest value)."""
    dtype = np.dtype(dtype)
    return dtype.type(np.inf if dtype.kind == "f" else np.iinfo(dtype).max)


@numba.njit(cache=True)
def _min_bits(bits):
    """The bits of the smallest of a non-empty row given as its bits (a float
    row's as signed integers; an unsigned integer row as itself), found as the
    smallest order key: an integer minimum vectorises where a float one does
    not (0.05 against 0.49 ns a value on float32 rows)."""
    low = np.iinfo(bits.dtype).max
    m = ck._order_key(bits[0], low)
    for j in range(bits.shape[0]):  # vectorised
        m = min(m, ck._order_key(bits[j], low))
    return ck._order_key(m, low)


@numba.njit(cache=True)
def _first_equal(a, v, hidden):
    """The first j with a[j] == v and not hidden[j] (-1: none), 64 columns at
    a time: a vectorised count finds the blocks that hold one."""
    for s in range(0, a.shape[0], 64):
        blk = a[s : s + 64]
        hits = 0
        for j in range(blk.shape[0]):  # vectorised
            hits += blk[j] == v
        if hits:
            for j in range(blk.shape[0]):
                if blk[j] == v and not hidden[s + j]:
                    return s + j
    return -1


@numba.njit(cache=True)
def _at_most(row, v):
    """How many entries of ``row`` are at most ``v``."""
    c = 0
    for j in range(row.shape[0]):  # vectorised
        c += row[j] <= v
    return c


@numba.njit(cache=True)
def _outcome_row(row, bits, limits, rel, own, top, scratch, counts, near, near_at, before):
    """One finished row: ``counts`` (3, K): per limit the retrieved pairs, the
    relevant ones among them (columns ``rel``) and whether the own pair
    (column ``own``, -1: none) is; ``near`` (2,), ``near_at`` (2,): the nearest
    relevant and nearest other (neither relevant nor own) image, first in
    index order among equals (-1: none; the value NaN); ``before`` (1,): the
    others at most as far as the nearest relevant one. ``top``:
    :func:`_hidden_value`; ``scratch``: the thread's (mask of n, all False,
    left so; room for the hidden values). The row is left as it came."""
    K = limits.shape[0]
    for k in range(K):
        counts[0, k] = _at_most(row, limits[k])
    best, at = row.dtype.type(0), -1
    for c in rel:
        v = row[c]
        for k in range(K):
            counts[1, k] += v <= limits[k]
        if at < 0 or v < best or (v == best and c < at):
            best, at = v, c
    if own >= 0:
        for k in range(K):
            counts[2, k] = row[own] <= limits[k]
    hidden, kept = scratch
    hidden_cols = _hide(row, rel, own, top, hidden, kept)
    near_at[0] = at
    near[0] = np.float64(best) if at >= 0 else np.nan
    _nearest_other(row, bits, hidden, top, near, near_at)
    if at >= 0:  # (floats: hidden at inf, counted when the nearest is inf, as in the
        # array code; counts: never, where the array code hides them at inf too)
        counted = hidden_cols if top <= best and not np.isinf(top) else 0
        before[0] = _at_most(row, best) - counted
    if own >= 0:  # (in the reverse order: a column hidden twice gets its value back)
        row[own], hidden[own] = kept[rel.shape[0]], False
    for m in range(rel.shape[0] - 1, -1, -1):
        row[rel[m]], hidden[rel[m]] = kept[m], False


@numba.njit(cache=True)
def _hide(row, rel, own, top, hidden, kept):
    """The columns ``rel`` and ``own`` (-1: none) set to ``top`` and marked in
    ``hidden``, their values kept in order; returns how many columns that is."""
    count = 0
    for m in range(rel.shape[0]):
        c = rel[m]
        count += not hidden[c]
        kept[m], hidden[c], row[c] = row[c], True, top
    if own >= 0:
        count += not hidden[own]
        kept[rel.shape[0]], hidden[own], row[own] = row[own], True, top
    return count


@numba.njit(cache=True)
def _nearest_other(row, bits, hidden, top, near, near_at):
    """The first column of the row's smallest value not hidden into
    ``near_at[1]`` and its value into ``near[1]``; none (-1, NaN) when every
    column is hidden, or (floats) when the smallest is infinite, as an
    argmin over the row with the hidden columns at inf finds (-0.0 and 0.0
    alike). ``bits``: as :func:`_min_bits` takes the row."""
    near_at[1], near[1] = -1, np.nan
    if row.shape[0] == 0:
        return
    j = _first_equal(bits, _min_bits(bits), hidden)
    if j < 0:  # (the smallest is ``top``, at hidden columns only)
        return
    m = row[j]
    if np.isinf(top) and not np.isfinite(m):
        return
    j = _first_equal(row, m, hidden)  # (the first of the equal values: -0.0 and 0.0)
    near_at[1], near[1] = j, np.float64(row[j])


@numba.njit(cache=True)
def _query_row(row, bits, i, limits, queries, scratch, out):
    """Row i of a finished tile; ``queries``: (first query row, relevant pairs'
    CSR pointer and columns, own columns, :func:`_hidden_value`); ``out``:
    (counts, near, near_at, before) of the tile's rows."""
    q0, ptr, cols, own, top = queries
    counts, near, near_at, before = out
    g = q0 + i
    rel = cols[ptr[g] : ptr[g + 1]]
    args = (limits, rel, own[g], top, scratch)
    _outcome_row(row, bits, *args, counts[i], near[i], near_at[i], before[i:])


@numba.njit(cache=True)
def _float_outcomes(x, xi, fin, limits, queries, scratch, i0, i1, out):
    """Rows i0:i1 of a float tile (``fin``: as ``cpukernels._float_rows``'s)."""
    code, isq, qsq, id_ptr, id_cols = fin
    for i in range(i0, i1):
        if code:
            q = qsq[i] if code == 3 else x.dtype.type(0)
            ck._finish_row(x[i], code, isq, q, id_cols[id_ptr[i] : id_ptr[i + 1]])
        _query_row(x[i], xi[i], i, limits, queries, scratch, out)


@numba.njit(cache=True)
def _count_outcomes(x, words, limits, queries, scratch, i0, i1, out):
    """Rows i0:i1 of a tile of bit counts (``words``: as ``cpukernels._count_rows``'s)."""
    qw, iw_t = words
    for i in range(i0, i1):
        if qw.shape[0]:
            ck._popcount_row(qw[i], iw_t, x[i])
        _query_row(x[i], x[i], i, limits, queries, scratch, out)


@numba.njit(parallel=True, cache=True)
def _float_shares(x, xi, fin, limits, queries, hidden, kept, out):
    threads, rows = hidden.shape[0], x.shape[0]
    for t in prange(threads):
        i0, i1 = ck._rows_of(t, threads, rows)
        _float_outcomes(x, xi, fin, limits, queries, (hidden[t, 0], kept[t, 0]), i0, i1, out)


@numba.njit(parallel=True, cache=True)
def _count_shares(x, words, limits, queries, hidden, kept, out):
    threads, rows = hidden.shape[0], x.shape[0]
    for t in prange(threads):
        i0, i1 = ck._rows_of(t, threads, rows)
        _count_outcomes(x, words, limits, queries, (hidden[t, 0], kept[t, 0]), i0, i1, out)


def outcome_rows(x, q0: int, limits, relevant, query_self, finish=None) -> dict:
    """The outcomes' raw numbers of the tile ``x`` (raw units, query rows
    q0:q0+len(x), rows contiguous; left as it came, or turned into distances
    by ``finish``): per row
    ``retrieved``, ``tp`` (relevant pairs retrieved, the own pair not counted)
    and ``self_hit`` (the own pair retrieved), each (rows, K) for the raw
    ``limits`` (``Binner.limit``'s values); ``nearest`` (rows, 2) float64 and
    ``nearest_at`` (rows, 2) int64: the nearest relevant and nearest other
    image (NaN, -1: none); ``before`` (rows,): the others at most as far as
    the nearest relevant one. ``relevant``: the CSR (pointer over all queries,
    columns) of each query's relevant pairs other than itself;
    ``query_self``: per query its own index row (-1: none); ``finish``: as
    :func:`risbench.cpukernels.count_rows`'s."""
    rows, n = x.shape
    ptr, cols = (np.ascontiguousarray(a, dtype=np.int64) for a in relevant)
    own = np.ascontiguousarray(query_self, dtype=np.int64)
    integer = x.dtype.kind in "iu"
    lims = np.asarray(limits, dtype=np.int64 if integer else x.dtype)  # (exact: raw values)
    threads = min(ck._use_job_threads(), max(1, rows))
    hidden = ck.thread_scratch(threads, (n,), np.bool_)
    kept = ck.thread_scratch(threads, (int(np.diff(ptr).max(initial=0)) + 1,), x.dtype)
    counts = np.zeros((rows, 3, len(lims)), dtype=np.int64)
    near = np.empty((rows, 2))
    at = np.empty((rows, 2), dtype=np.int64)
    before = np.zeros(rows, dtype=np.int64)
    if integer:
        args = (x, ck._words_args(finish, n))
        serial, parallel = _count_outcomes, _count_shares
    else:
        ints = np.dtype(f"i{x.dtype.itemsize}")  # (the bits _min_bits takes)
        args = (x, x.view(ints), ck._finish_args(finish, x.dtype))
        serial, parallel = _float_outcomes, _float_shares
    args += (lims, (q0, ptr, cols, own, _hidden_value(x.dtype)))
    out = (counts, near, at, before)
    if threads == 1:
        serial(*args, (hidden[0, 0], kept[0, 0]), 0, rows, out)
    else:
        with ck._LAUNCH:
            parallel(*args, hidden, kept, out)
    return {
        "retrieved": counts[:, 0],
        "tp": counts[:, 1],
        "self_hit": counts[:, 2].astype(bool),
        "nearest": near,
        "nearest_at": at,
        "before": before,
    }


def _stamp_caches_with_helpers() -> None:
    """numba keys a cached kernel on the file that defines it, yet these kernels
    compile cpukernels' helpers into themselves: after a change to
    cpukernels.py alone, they would load stale code (wrong answers, silently).
    Their cache's source stamp takes a digest of cpukernels.py too, so numba
    recompiles them then. (numba internals: skipped if they move.)"""
    helpers = hashlib.sha256(Path(ck.__file__).read_bytes()).digest()
    for kernel in list(globals().values()):
        try:
            cache_file = kernel._cache._cache_file
            cache_file._source_stamp = (cache_file._source_stamp, helpers)
        except AttributeError:
            continue


_stamp_caches_with_helpers()
