"""Array backends and tiled all-pairs distance kernels.

Every kernel is written once against an array module ``xp``: NumPy on the CPU,
CuPy on a CUDA device (:func:`array_module`). A descriptor matrix is *prepared*
once per store (:func:`prepare_pair`: rows normalised, norms and packed words
computed), then the distances of the queries against the whole index come out
in row tiles (:func:`iter_distance_tiles`), so memory stays
O(n·d + tile·n) whatever the number of queries.

Distances (the paper's definitions):

- ``hamming``: differing bits / bits, on bit-packed uint8 codes (``bits`` given
  explicitly: colorhash and friends do not fill their last byte; the padding
  bits must be equal in every row, as ``np.packbits`` makes them). Rows are
  zero-padded to whole uint64 words and compared with XOR and popcount.
- ``cosine``: 1 − cos similarity, ``angular``: arccos(cos similarity)/π. Rows
  are L2-normalised once (in float64, stored float32) and compared with one
  float32 matrix product; the similarity is clamped into [-1, 1], so cosine is
  in [0, 2] and angular in [0, 1]. **Zero vectors**: a zero row stays zero, so
  its similarity with anything is 0: cosine distance 1, angular distance 0.5
  (except against an identical zero row, see below).
- ``euclidean``: on the stored vectors, sqrt(|q|² + |i|² − 2 q·i) with one
  float32 matrix product; both sides are first centred on the index mean (the
  distance does not change, the cancellation in the formula shrinks) and the
  squared distance is floored at 0. The formula's absolute error is about
  1e-3 × the largest (centred) norm, so distances much smaller than that (two
  tiny vectors next to large ones) are not resolved; descriptors of one scale,
  as CNN features are, are not affected.
- ``rv``: 1 − peak cross-correlation of 40-byte Radial Variance digests
  (:func:`risbench.rvcompare.rv_peak`, pHash's ``ph_crosscorr``), computed on the
  host in float64.

**Identical rows are at distance exactly 0.** A float32 product of a
normalised row with itself is 0.99999994 or 1.0000001, not 1; rather than snap
small distances to 0 (which would also merge distinct near-duplicates), the
kernels find the (query, index) pairs whose stored rows are *bit-identical*
(hash of the row bytes, confirmed byte by byte) and set exactly those to 0.
So d(x, x) = 0 for every distance, two different images with bit-identical
descriptors are at distance 0, and every other pair keeps its computed value.
(Rows equal in value but not in bits, such as 0.0 and -0.0, are not merged.)
The one exception: **degenerate RV digests** (constant rows,
:func:`risbench.rvcompare.rv_degenerate`; pHash gives all zeros for images taller
than about 2.02x their width or wider than about 3.04x their height, and for
images constant after its blur) correlate with nothing, themselves included:
pHash's peak is 0, so their distance stays 1, also against an identical
digest. Otherwise all such images would be perfect matches of one another.

**Determinism.** BLAS results depend on the shape of the call (OpenBLAS and
cuBLAS pick different kernels for 1, 7 or 512 rows), so the float kernels
always multiply fixed-size blocks of ``kernel_rows(n)`` query rows (the last
one zero-padded), aligned on multiples of that size. A query's distances are
therefore bitwise the same whatever tile size the caller asks for; the tile
size only changes how the rows are handed out. They also depend on the
BLAS's threads (OpenBLAS's AVX2 sgemm): on the CPU each block is single-threaded
products of fixed panels (:func:`panel_width`), shared by the job's threads,
so the distances are the same bits on any thread count too.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FLOAT_DISTANCES = ("cosine", "angular", "euclidean")
# The distances of each descriptor kind: the one list the config, the schema
# check and the workflow's wildcards read.
DISTANCES_BY_KIND = {"binary": ("hamming",), "rv": ("rv",), "float": FLOAT_DISTANCES}
DISTANCES = ("hamming", *FLOAT_DISTANCES, "rv")
RV_BYTES = 40

# Fixed GEMM block: at most this many query rows, and at most KERNEL_MB of
# output per block, per backend. Depends on the index size only, never on tiles.
_KERNEL_ROWS = {"numpy": 512, "cupy": 4096}
_KERNEL_MB = {"numpy": 64, "cupy": 1024}


# --------------------------------------------------------------------------- backends


def array_module(device: str = "auto"):
    """The array module for ``device``: ``cpu`` → NumPy; ``cuda`` → CuPy (a
    RuntimeError when CuPy or a CUDA device is missing); ``auto`` → CuPy when it
    imports and sees a CUDA device, else NumPy."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cpu":
        return np
    try:
        import cupy

        available = cupy.cuda.runtime.getDeviceCount() > 0
        reason = "no CUDA device visible to CuPy"
    except Exception as error:  # ImportError, CUDA driver errors
        cupy, available, reason = None, False, f"CuPy unavailable ({error})"
    if available:
        return cupy
    if device == "cuda":
        raise RuntimeError(
            f"device 'cuda' requested but {reason}; install cupy-cuda12x on a CUDA machine "
            "or use device 'cpu'/'auto'"
        )
    return np


def is_numpy(xp) -> bool:
    return xp is np


def to_numpy(array) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else np.asarray(array)


def kernel_rows(n_index: int, xp=np) -> int:
    """Query rows per matrix-product block: a function of the index size and the
    backend only, so that results never depend on the caller's tile size."""
    name = "numpy" if is_numpy(xp) else "cupy"
    budget = _KERNEL_MB[name] * 2**20 // (4 * max(1, n_index))
    return int(max(1, min(_KERNEL_ROWS[name], budget)))


def block_rows(distance: str, n_index: int, xp=np, bits: int | None = None) -> int:
    """Query rows per block of a distance's raw tiles (tiles are whole blocks
    or lie within one): a matrix-product block (:func:`kernel_rows`), and on the
    CPU, for hamming, whose counts are exact whatever the block, the rows of
    as many bytes as such a block holds (fewer tiles, each still within the
    caches the block is sized for: n = 7,000, 64 bits, the sweep over the
    floor 1.6 with 512-row tiles, 1.4 with 1,024 or 2,048, 1.7 with 4,096)."""
    rows = kernel_rows(n_index, xp)
    if distance == "hamming" and is_numpy(xp):
        rows = max(1, rows * 4 // np.dtype(raw_dtype(distance, bits)).itemsize)
    return rows


def tile_rows_for(n_index: int, tile_mb: float, bytes_per_entry: int = 4) -> int:
    """Rows of a (rows, n_index) tile that fit in ``tile_mb`` megabytes (at least 1)."""
    if tile_mb <= 0:
        raise ValueError("tile_mb must be positive")
    return int(max(1, tile_mb * 2**20 // (bytes_per_entry * max(1, n_index))))


# --------------------------------------------------------------------------- preparation


@dataclass
class Prepared:
    """A descriptor matrix made ready for one distance (on the backend ``xp``).

    ``data``: float32 rows (normalised for cosine/angular, centred for
    euclidean), uint64 words for hamming, or the raw uint8 digests (host) for
    rv. ``words_t``: hamming words transposed (index side). ``sqnorm``:
    squared norms (euclidean). ``host``: the rows as given (for identity tests).
    """

    distance: str
    xp: object
    n: int
    data: object
    host: np.ndarray
    bits: int | None = None
    sqnorm: object = None
    words_t: object = None
    center: np.ndarray | None = None


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; one of {', '.join(DISTANCES)}")


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {x.shape}")
    return x


def hamming_bits(width: int, bits: int | None) -> int:
    """The number of code bits: ``bits`` when given (checked against the byte width),
    else 8 × width."""
    if bits is None:
        return 8 * width
    bits = int(bits)
    if not 0 < bits <= 8 * width or (bits + 7) // 8 != width:
        raise ValueError(f"hamming: {bits} bits do not fit rows of {width} bytes")
    return bits


def omp_threads() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` asks for (as Snakemake sets it to a
    job's threads, and as BLAS reads it), None when unset."""
    # (OpenMP allows a list, one count per nesting level: the first is ours)
    wanted = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if not wanted:
        return None
    try:
        return max(1, int(wanted))
    except ValueError:
        raise ValueError(f"OMP_NUM_THREADS must be a whole number, not {wanted!r}") from None


def in_chunks(work, n: int, step: int) -> None:
    """``work(a, b)`` on the rows a:b of ``n`` in chunks of ``step``, on the
    job's threads (NumPy releases the GIL in its loops; each chunk's result is
    the same whichever thread computes it). ``work`` must not call in_chunks:
    the threads are a pool shared by the process."""
    starts = range(0, n, step)
    threads = omp_threads() or os.cpu_count() or 1
    if min(len(starts), threads) <= 1:
        for a in starts:
            work(a, min(n, a + step))
        return
    pool = _pool(threads)
    for done in [pool.submit(work, a, min(n, a + step)) for a in starts]:
        done.result()


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` workers (made once: a sweep hands its
    threads work at every block)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="risbench")


def _prepare(x, distance: str, xp, *, bits=None, center=None) -> Prepared:
    _check_distance(distance)
    x = _as_2d(x, distance)
    n = x.shape[0]
    if distance == "hamming":
        if x.dtype != np.uint8:
            raise ValueError(f"hamming needs bit-packed uint8 codes, got {x.dtype}")
        bits = hamming_bits(x.shape[1], bits)
        width = -(-x.shape[1] // 8) * 8
        padded = np.zeros((n, width), dtype=np.uint8)
        padded[:, : x.shape[1]] = x
        words = padded.view(np.uint64)
        return Prepared(
            distance,
            xp,
            n,
            xp.asarray(words),
            x,
            bits=bits,
            words_t=xp.asarray(np.ascontiguousarray(words.T)),
        )
    if distance == "rv":
        if x.dtype != np.uint8 or x.shape[1] != RV_BYTES:
            raise ValueError(f"rv needs (rows, {RV_BYTES}) uint8 digests, got {x.dtype} {x.shape}")
        return Prepared(distance, xp, n, x, x)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{distance} needs numeric vectors, got {x.dtype}")
    d = x.shape[1]
    if distance == "euclidean" and center is None:
        center = x.mean(axis=0, dtype=np.float64) if n else np.zeros(d)
    data = np.empty((n, d), dtype=np.float32)
    sq = np.empty(n, dtype=np.float32)

    def prepare_rows(a: int, b: int) -> None:
        """Rows a:b in float64: norms, normalised or centred rows in float32."""
        c = x[a:b].astype(np.float64)
        if not np.isfinite(c).all():
            raise ValueError(f"{distance}: descriptors contain NaN or infinity")
        if distance == "euclidean":
            c -= center
            c32 = c.astype(np.float32)
            data[a:b] = c32
            c = c32.astype(np.float64)
            sq[a:b] = np.einsum("ij,ij->i", c, c)
        else:
            norm = np.sqrt(np.einsum("ij,ij->i", c, c))
            data[a:b] = c / np.where(norm > 0, norm, 1.0)[:, None]

    in_chunks(prepare_rows, n, max(1, 2**19 // max(1, d)))  # (cache-sized)
    if distance == "euclidean":
        return Prepared(distance, xp, n, xp.asarray(data), x, sqnorm=xp.asarray(sq), center=center)
    return Prepared(distance, xp, n, xp.asarray(data), x)


def prepare_pair(queries, index, distance: str, *, bits=None, xp=np) -> tuple[Prepared, Prepared]:
    """Prepare the query and index matrices for ``distance`` (once per store).

    Passing the same object twice prepares it once."""
    _check_distance(distance)
    ip = _prepare(index, distance, xp, bits=bits)
    if queries is index:
        return ip, ip
    q = _as_2d(queries, "queries")
    if q.shape[1] != ip.host.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} columns, the index {ip.host.shape[1]}")
    qp = _prepare(q, distance, xp, bits=ip.bits, center=ip.center)
    return qp, ip


# --------------------------------------------------------------------------- identical rows


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (wrapping polynomial hash, then mixed)."""
    b = np.ascontiguousarray(x).reshape(x.shape[0], -1).view(np.uint8)
    n, width = b.shape
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    words = -(-width // 8)
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=words, dtype=np.uint64) | np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    step = max(1, 2**22 // max(1, words * 8))
    with np.errstate(over="ignore"):
        for a in range(0, n, step):
            block = b[a : a + step]
            if width % 8:
                pad = np.zeros((len(block), words * 8), dtype=np.uint8)
                pad[:, :width] = block
                block = pad
            w = np.ascontiguousarray(block).view(np.uint64)
            h = np.einsum("ij,j->i", w, mult)  # (wrapping: the same in any order)
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
            out[a : a + step] = h
    return out


def pairs_to_zero(qp: Prepared, ip: Prepared) -> tuple[np.ndarray, np.ndarray] | None:
    """The pairs the tiles set to exactly 0 (:func:`identical_pairs`); None for
    hamming, whose bit counts are 0 there already."""
    return None if qp.distance == "hamming" else identical_pairs(qp.host, ip.host)


def identical_pairs(queries: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, cols) of the index rows bit-identical to each query row.

    Candidates come from a hash of the row bytes and are confirmed byte by byte,
    so the answer is exact."""
    queries = np.asarray(queries)
    index = np.asarray(index)
    nq = queries.shape[0]
    if nq == 0 or index.shape[0] == 0:
        return np.zeros(nq + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    hi = _row_hashes(index)
    hq = hi if queries is index else _row_hashes(queries)
    order = np.argsort(hi, kind="stable")
    sorted_h = hi[order]
    lo = np.searchsorted(sorted_h, hq, side="left")
    up = np.searchsorted(sorted_h, hq, side="right")
    counts = up - lo
    rows = np.repeat(np.arange(nq), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    cols = order[starts + np.arange(rows.size)] if rows.size else np.zeros(0, np.int64)
    qb = np.ascontiguousarray(queries).reshape(nq, -1).view(np.uint8)
    ib = np.ascontiguousarray(index).reshape(index.shape[0], -1).view(np.uint8)
    keep = np.ones(rows.size, dtype=bool)
    check = np.flatnonzero(rows != cols) if queries is index else np.arange(rows.size)
    step = max(1, 2**24 // max(1, qb.shape[1]))
    for a in range(0, check.size, step):
        sl = check[a : a + step]
        keep[sl] = (qb[rows[sl]] == ib[cols[sl]]).all(axis=1)
    rows, cols = rows[keep], cols[keep].astype(np.int64)
    indptr = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=nq), out=indptr[1:])
    return indptr, cols


def skip_degenerate_rv(
    identical: tuple[np.ndarray, np.ndarray], digests: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``identical`` (CSR from :func:`identical_pairs`) without the pairs whose
    query row ``digests[q]`` is a degenerate (constant) RV digest.

    Its identical index rows are the same constant digest, whose cross-correlation
    with anything is undefined: pHash's peak stays 0 (distance 1), so the pair must
    not become a perfect match."""
    from risbench.rvcompare import rv_degenerate

    ptr, cols = identical
    skip = rv_degenerate(digests)
    if not skip.any():
        return ptr, cols
    counts = np.diff(ptr)
    keep = np.repeat(~skip, counts)
    counts[skip] = 0
    new_ptr = np.zeros_like(ptr)
    np.cumsum(counts, out=new_ptr[1:])
    return new_ptr, cols[keep]


# --------------------------------------------------------------------------- kernels


@lru_cache(maxsize=1)
def _cupy_popcount():
    import cupy

    return cupy.ElementwiseKernel("uint64 x", "uint8 y", "y = __popcll(x)", "risbench_popcount")


def _hamming_block(qp: Prepared, q0: int, q1: int, ip: Prepared, out) -> None:
    """Differing-bit counts of query rows q0:q1 against the index, into ``out``
    (uint16, (q1 - q0, n)): on the CPU one numba kernel (XOR and popcount,
    threads over rows; imported here, not when the workflow parses), on the
    GPU XOR then popcount per word."""
    if is_numpy(qp.xp):
        from risbench import cpukernels

        cpukernels.hamming_counts(qp.data[q0:q1], ip.words_t, out)
        return
    xp, it = qp.xp, ip.words_t
    qw = qp.data[q0:q1]
    tmp = xp.empty((q1 - q0, ip.n), dtype=np.uint64)
    cnt = xp.empty((q1 - q0, ip.n), dtype=np.uint8)
    popcount = xp.bitwise_count if hasattr(xp, "bitwise_count") else _cupy_popcount()
    for w in range(it.shape[0]):
        xp.bitwise_xor(qw[:, w, None], it[w][None, :], out=tmp)
        popcount(tmp, cnt)
        if w == 0:
            out[...] = cnt
        else:
            xp.add(out, cnt, out=out)


def _gemm_block(qp: Prepared, q0: int, q1: int, ip: Prepared, rows: int, out, scratch):
    """``out[:q1-q0] = Q[q0:q1] @ I.T`` computed as one fixed-shape (rows, n) product.

    Blocks shorter than ``rows`` (the last one) are zero-padded, so every product
    has the same shape and a row's result does not depend on where tiles start."""
    xp = qp.xp
    product = _cpu_product if is_numpy(xp) else xp.matmul
    q = qp.data[q0:q1]
    if q1 - q0 == rows:
        product(q, ip.data.T, out=out)
        return out
    pad = scratch["pad"]
    pad[: q1 - q0] = q
    pad[q1 - q0 :] = 0
    full = scratch["full"]
    product(pad, ip.data.T, out=full)
    out[...] = full[: q1 - q0]
    return out


# On the CPU a block's products are panels of index rows, each one
# single-threaded BLAS product whose shape depends on the index size only.
# OpenBLAS's AVX2 (Haswell) sgemm rounds some products differently with 2
# threads than with 1 (3 % of a 512 × 7,000 block at d = 512; its AVX-512
# kernels did not in that test), so a job's tables depended on its thread count (n = 7,000:
# precision, F1 and fp at 63 of 1,025 radii, the ranked metrics). A panel has
# the same bits whichever thread computes it. Each product packs the query
# block again, so panels are few and wide: a multiple of 4 of them (the job's
# threads share them evenly), about 2,048 index rows each.
_PANELS_PER = 4
_PANEL_ROWS = 2048


def panel_width(n: int) -> int:
    """Index rows per product panel for an index of ``n`` rows (a multiple of 16)."""
    panels = _PANELS_PER * max(1, -(-n // (_PANELS_PER * _PANEL_ROWS)))
    return max(16, -(-n // (panels * 16)) * 16)


def _cpu_product(q, index_t, out) -> None:
    """``out = q @ index_t`` (``index_t``: the index rows, transposed) as
    single-threaded products of :func:`panel_width` columns, on the job's
    threads."""

    def panel(a: int, b: int) -> None:
        np.matmul(q, index_t[:, a:b], out=out[:, a:b])

    n = index_t.shape[1]
    with one_blas_thread():
        in_chunks(panel, n, panel_width(n))


_BLAS_HOLD = threading.Lock()
_blas_hold = {"holders": 0, "limiter": None}


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread (threadpoolctl) while any caller is inside:
    the first one in sets it, the last one out gives the BLAS its threads
    back. Its thread count is the process's, so a sweep in another Python
    thread cannot give it back midway; a sweep holds it from its first block
    to its last (setting it around each block cost 5-10 ms a sweep; finding
    the libraries, 0.15 ms, is done once a hold)."""
    with _BLAS_HOLD:
        if not _blas_hold["holders"]:
            from threadpoolctl import ThreadpoolController  # (the BLAS libraries loaded now)

            limiter = ThreadpoolController().limit(limits=1, user_api="blas")
            _blas_hold["limiter"] = limiter
        _blas_hold["holders"] += 1
    try:
        yield
    finally:
        with _BLAS_HOLD:
            _blas_hold["holders"] -= 1
            if not _blas_hold["holders"]:
                _blas_hold["limiter"].restore_original_limits()


# Rows a thread turns into distances at a time (:func:`_to_distance`): 32 rows
# of 7,000 columns, 0.9 MB, stay in cache through the passes over them.
_FINISH_ROWS = 32


def _to_distance(qp: Prepared, ip: Prepared, s, q0: int) -> None:
    """Turn the matrix products ``s`` of query rows q0:q0+len(s) into float32
    distances, in place: on the CPU, chunks of rows on the job's threads
    (NumPy releases the GIL; each operation is elementwise, and NumPy's
    float32 arccos gives each value the same whatever the chunk)."""
    if is_numpy(qp.xp):  # (in_chunks runs a single chunk in this thread)
        in_chunks(lambda a, b: _rows_to_distance(qp, ip, s[a:b], q0 + a), len(s), _FINISH_ROWS)
    else:
        _rows_to_distance(qp, ip, s, q0)


def _angles(xp, s) -> None:
    """Cosine similarities to angles, in place: NumPy's (CuPy's) float32 arccos
    of the similarities clipped to [-1, 1] (|s| > 1 by rounding)."""
    xp.clip(s, np.float32(-1), np.float32(1), out=s)
    xp.arccos(s, out=s)


def _rows_to_distance(qp: Prepared, ip: Prepared, s, q0: int) -> None:
    xp = qp.xp
    if qp.distance == "cosine":
        xp.subtract(np.float32(1), s, out=s)
        if float(s.min()) < 0:  # |s| > 1 by rounding (near-identical rows)
            xp.maximum(s, np.float32(0), out=s)
    elif qp.distance == "angular":
        _angles(xp, s)
        xp.multiply(s, np.float32(1 / math.pi), out=s)
    else:  # euclidean
        xp.multiply(s, np.float32(-2), out=s)
        xp.add(s, ip.sqnorm[None, :], out=s)
        xp.add(s, qp.sqnorm[q0 : q0 + len(s), None], out=s)
        if float(s.min()) < 0:
            xp.maximum(s, np.float32(0), out=s)
        xp.sqrt(s, out=s)


def _rv_peak():
    from risbench.rvcompare import rv_peak

    return rv_peak


def _rv_block(qp: Prepared, q0: int, q1: int, ip: Prepared, rows: int, out) -> None:
    xp = qp.xp
    q = qp.host[q0:q1]
    if q1 - q0 < rows:  # fixed shape, as for the float kernels
        q = np.concatenate([q, np.zeros((rows - (q1 - q0), RV_BYTES), np.uint8)])
    peak = np.asarray(_rv_peak()(q, ip.host), dtype=np.float64)[: q1 - q0]
    d = np.maximum(1.0 - peak, 0.0)
    out[...] = xp.asarray(d)


def raw_dtype(distance: str, bits: int | None = None):
    """dtype of the raw tiles: bit counts for hamming, float64 for rv, else float32."""
    if distance == "hamming":
        return np.uint16 if (bits or 0) < 2**16 else np.uint32
    return np.float64 if distance == "rv" else np.float32


def raw_scale(distance: str, bits: int | None = None) -> float:
    """Raw tile units per distance unit: hamming tiles hold bit counts (``bits``
    of them make distance 1), the others hold the distance itself."""
    return float(bits) if distance == "hamming" else 1.0


class _RawTiles:
    """The state of :func:`iter_raw_tiles`: the fixed blocks the kernels fill, the
    tiles cut from them, and the finishing step (distances, identical pairs)."""

    def __init__(self, qp: Prepared, ip: Prepared, tile_rows: int, identical) -> None:
        xp = self.xp = qp.xp
        self.qp, self.ip, n = qp, ip, ip.n
        dtype = raw_dtype(qp.distance, qp.bits)
        self.block = block = block_rows(qp.distance, n, xp, qp.bits)
        tile_rows = int(min(tile_rows, max(qp.n, 1)))
        if tile_rows >= block:
            tile_rows -= tile_rows % block  # whole blocks: computed in place, no copies
        self.tile_rows = tile_rows
        self.is_float = qp.distance in FLOAT_DISTANCES
        # CPU hamming counts are exact and cheap: computed by ``finish`` (the
        # counting kernel, row by row), so that each row is counted in cache.
        self.counts_in_finish = qp.distance == "hamming" and is_numpy(xp)
        self.scratch = {}
        if self.is_float:
            self.scratch["pad"] = xp.zeros((block, qp.data.shape[1]), dtype=np.float32)
            self.scratch["full"] = xp.empty((block, n), dtype=np.float32)
        if identical is not None and qp.distance == "rv":
            identical = skip_degenerate_rv(identical, qp.host)
        self.identical = identical
        if identical is not None:
            self.id_cols_x = xp.asarray(identical[1])
        self.tile_buf = xp.empty((tile_rows, n), dtype=dtype)
        partial = tile_rows < block and not self.counts_in_finish  # (computed in place)
        self.block_buf = xp.empty((block, n), dtype=dtype) if partial else None
        self.cached = -1

    def compute(self, b0: int, b1: int, out) -> None:
        qp, ip = self.qp, self.ip
        if qp.distance == "hamming":
            _hamming_block(qp, b0, b1, ip, out)
        elif qp.distance == "rv":
            _rv_block(qp, b0, b1, ip, self.block, out)
        else:
            _gemm_block(qp, b0, b1, ip, self.block, out, self.scratch)

    def _cached_block(self, k: int) -> tuple[int, int]:
        """Fills the block buffer with block k (unless it holds it); its rows."""
        b0, b1 = k * self.block, min(self.qp.n, (k + 1) * self.block)
        if self.cached != k:
            self.compute(b0, b1, self.block_buf[: b1 - b0])
            self.cached = k
        return b0, b1

    def tile(self, start: int, stop: int):
        """The raw products or counts of query rows start:stop (CPU hamming:
        not yet computed, see :meth:`finish`)."""
        block = self.block
        if self.counts_in_finish:
            return self.tile_buf[: stop - start]
        if self.block_buf is None:  # tile = whole blocks
            tile = self.tile_buf[: stop - start]
            for b0 in range(start, stop, block):
                b1 = min(stop, b0 + block)
                self.compute(b0, b1, tile[b0 - start : b1 - start])
            return tile
        first, last = start // block, (stop - 1) // block
        if first == last:
            self._cached_block(first)
            return self.block_buf[start - first * block : stop - first * block]
        tile = self.tile_buf[: stop - start]
        for k in range(first, last + 1):
            b0, b1 = self._cached_block(k)
            lo, hi = max(start, b0), min(stop, b1)
            tile[lo - start : hi - start] = self.block_buf[lo - b0 : hi - b0]
        return tile

    def finish(self, tile, start: int, a: int, b: int, in_kernel: bool = False):
        """Rows a:b of a tile starting at query row ``start`` become distances.

        ``in_kernel``: when the CPU counting kernel can do it (CPU hamming, a
        NumPy float distance in ``cpukernels.FINISH``), do nothing and return
        the :class:`RowFinish` it needs, so that each row is finished while it
        is in cache; else finish here and return None."""
        if in_kernel and self.counts_in_finish:
            return self._row_finish(start + a, start + b)
        if in_kernel and self.is_float and is_numpy(self.xp):
            from risbench import cpukernels

            if self.qp.distance in cpukernels.FINISH:
                if self.qp.distance == "angular":  # (NumPy's arccos: see FINISH)
                    part = tile[a:b]
                    in_chunks(lambda c, d: _angles(np, part[c:d]), b - a, _FINISH_ROWS)
                return self._row_finish(start + a, start + b)
        part = tile[a:b]
        if self.counts_in_finish:
            _hamming_block(self.qp, start + a, start + b, self.ip, part)
        if self.is_float:
            _to_distance(self.qp, self.ip, part, start + a)
        if self.identical is not None:
            id_ptr = self.identical[0]
            i0, i1 = int(id_ptr[start + a]), int(id_ptr[start + b])
            if i1 > i0:
                counts = np.diff(id_ptr[start + a : start + b + 1])
                rows = np.repeat(np.arange(b - a), counts)
                part[self.xp.asarray(rows), self.id_cols_x[i0:i1]] = 0

    def _row_finish(self, q0: int, q1: int) -> RowFinish:
        qp, ip = self.qp, self.ip
        if qp.distance == "hamming":  # (bit-identical rows differ in no bit: 0 already)
            none = np.zeros(1, dtype=np.int64)
            return RowFinish("hamming", None, None, none, none[:0], qp.data[q0:q1], ip.words_t)
        if self.identical is None:
            ptr, cols = np.zeros(q1 - q0 + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        else:
            id_ptr, id_cols = self.identical
            ptr = np.asarray(id_ptr[q0 : q1 + 1], dtype=np.int64) - int(id_ptr[q0])
            cols = np.asarray(id_cols[int(id_ptr[q0]) : int(id_ptr[q1])], dtype=np.int64)
        euclidean = qp.distance == "euclidean"
        isq = ip.sqnorm if euclidean else None
        qsq = qp.sqnorm[q0:q1] if euclidean else None
        return RowFinish(qp.distance, isq, qsq, ptr, cols)


@dataclass
class RowFinish:
    """What turns the products of query rows q0:q1 into distances, for a kernel
    that does it row by row (:func:`risbench.cpukernels.count_rows`): the
    squared norms (euclidean; float32, index side and the rows' own) and the
    bit-identical pairs as a CSR local to the rows (``id_ptr`` (rows + 1,),
    int64, from 0; ``id_cols``), set to exactly 0 after the formula; for
    hamming the rows' words and the index words transposed (XOR and popcount)."""

    distance: str
    isq: np.ndarray | None
    qsq: np.ndarray | None
    id_ptr: np.ndarray
    id_cols: np.ndarray
    words: np.ndarray | None = None
    words_t: np.ndarray | None = None


def iter_raw_tiles(
    qp: Prepared,
    ip: Prepared,
    tile_rows: int,
    identical: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    deferred: bool = False,
) -> Iterator[tuple]:
    """Yield ``(start, stop, tile)``: the distances of query rows start:stop
    against every index row, ``tile`` of shape (stop - start, n) on ``qp.xp``.

    Raw units: differing-bit *counts* for hamming (integers, exact), distances
    for the others. Pairs listed in ``identical`` (CSR from
    :func:`identical_pairs`) are set to exactly 0, except degenerate RV digests
    (:func:`skip_degenerate_rv`). The tile buffer is reused between yields:
    copy what you keep.

    With ``deferred``, yields ``(start, stop, tile, finish)`` instead, where the
    tile still holds the matrix products (CPU hamming: nothing yet) and
    ``finish(a, b)`` turns its rows a:b into distances in place (so that a
    caller can do it row by row, while each row is in cache). Every row
    must be finished exactly once: ``finish(a, b, in_kernel=True)`` may
    instead return a :class:`RowFinish` for the CPU counting kernel, which
    then finishes those rows itself."""
    if tile_rows < 1:
        raise ValueError("tile_rows must be at least 1")
    tiles = _RawTiles(qp, ip, tile_rows, identical)
    cpu_products = tiles.is_float and is_numpy(qp.xp)
    with one_blas_thread() if cpu_products else contextlib.nullcontext():
        for start in range(0, qp.n, tiles.tile_rows):
            stop = min(qp.n, start + tiles.tile_rows)
            tile = tiles.tile(start, stop)
            if deferred:
                yield start, stop, tile, functools.partial(tiles.finish, tile, start)
            else:
                tiles.finish(tile, start, 0, stop - start)
                yield start, stop, tile


def iter_distance_tiles(
    queries,
    index,
    distance: str,
    *,
    bits: int | None = None,
    tile_mb: float = 256,
    tile_rows: int | None = None,
    device: str = "auto",
) -> Iterator[tuple[int, int, object]]:
    """Yield ``(start, stop, tile)``: distances (in the distance's units, hamming
    as a fraction of the bits, float64) of query rows start:stop against the
    whole index, ``tile`` on the chosen backend. The row count of a tile is
    derived from ``tile_mb`` (or given as ``tile_rows``); memory is
    O(n·d + tile·n). Identical rows are at exactly 0 (degenerate RV digests
    excepted: distance 1, see the module notes)."""
    xp = array_module(device)
    qp, ip = prepare_pair(queries, index, distance, bits=bits, xp=xp)
    ident = pairs_to_zero(qp, ip)
    if tile_rows is None:
        tile_rows = tile_rows_for(ip.n, tile_mb, np.dtype(raw_dtype(distance, qp.bits)).itemsize)
    for start, stop, tile in iter_raw_tiles(qp, ip, tile_rows, ident):
        if distance == "hamming":
            yield start, stop, tile.astype(np.float64) / qp.bits
        else:
            yield start, stop, tile.copy()


def pairwise(queries, index, distance: str, *, bits=None, tile_mb: float = 256, device="auto"):
    """All distances of ``queries`` against ``index`` as one NumPy matrix
    (float32 for the float distances, float64 for hamming and rv)."""
    q = _as_2d(queries, "queries")
    i = _as_2d(index, "index")
    dtype = np.float64 if distance in ("hamming", "rv") else np.float32
    out = np.empty((q.shape[0], i.shape[0]), dtype=dtype)
    src = index if queries is index else q
    for start, stop, tile in iter_distance_tiles(
        src, index, distance, bits=bits, tile_mb=tile_mb, device=device
    ):
        out[start:stop] = to_numpy(tile)
    return out


def hamming(a, b, bits: int | None = None, **kw) -> np.ndarray:
    """Differing bits / bits of bit-packed uint8 codes (all pairs)."""
    return pairwise(a, b, "hamming", bits=bits, **kw)


def cosine(a, b, **kw) -> np.ndarray:
    """1 − cosine similarity (all pairs)."""
    return pairwise(a, b, "cosine", **kw)


def angular(a, b, **kw) -> np.ndarray:
    """arccos(cosine similarity) / π (all pairs)."""
    return pairwise(a, b, "angular", **kw)


def euclidean(a, b, **kw) -> np.ndarray:
    """Euclidean distance on the stored vectors (all pairs)."""
    return pairwise(a, b, "euclidean", **kw)


def rv(a, b, **kw) -> np.ndarray:
    """1 − peak cross-correlation of Radial Variance digests (all pairs)."""
    return pairwise(a, b, "rv", **kw)
