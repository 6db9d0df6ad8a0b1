"""Sublinear search: FAISS indexes over a descriptor matrix, measured against the exact sweep.

Indexes (:data:`INDEX_TYPES`), by descriptor kind:

- float (``cosine``, ``angular``, ``euclidean``): ``flat`` (exact: the reference),
  ``hnsw`` (graph) and ``ivf`` (inverted lists of flat vectors). Cosine and angular
  search normalised vectors by inner product (a zero row stays zero, as in
  :mod:`risbench.distance`); euclidean searches the stored vectors by L2.
- binary codes (``hamming``): ``flat`` (exact), ``hnsw`` (binary graph) and
  ``multihash`` (``IndexBinaryMultiHash``: hash tables over disjoint substrings).

Range search at a risbench radius r (d ≤ r, design.md) needs the radius in FAISS's
units, and FAISS's distances back in risbench's: :func:`faiss_radius` and
:func:`to_risbench` are the one owner of that conversion (squared L2, inner
product, bit counts). FAISS keeps a result when it is strictly inside its radius
(L2 and bit counts: ``<``; inner product: ``>``), so the radius is moved one
float32 step outward (or one bit up) to make the test ``≤``. Binary HNSW has no
range search in FAISS: it answers with its ``knn`` nearest codes, those within
the radius kept (so it can never return more than ``knn`` per query).

Float results are refined: FAISS's float32 distances cannot say "identical" (a
normalised row against itself gives an inner product of 0.99999994, an angular
distance of 1e-4), so FAISS searches a slightly wider radius (:data:`REFINE_MARGIN`)
and each candidate's distance is recomputed in float64 from the stored row, with
bit-identical rows at exactly 0 (as in :mod:`risbench.distance`); the candidates
within the radius are kept. So a photo finds its own copy at distance 0, also at
radius 0, and FAISS's rounding never decides a pair on the boundary.

:func:`measure` runs every index of a kind on the same queries and reports, for
each, the recall of the exact in-radius result sets (the fraction of the pairs
that risbench's own distance kernels, the sweep's, put within the radius that the
index also returns), queries per second, build seconds and index bytes
(``faiss.serialize_index``). The exact sets come from
:func:`risbench.distance.iter_distance_tiles`, which runs on CuPy when a CUDA
device is present (the same code path otherwise). The FAISS indexes run on the
CPU: FAISS's GPU indexes have no ``range_search`` (faiss.contrib's
``range_search_gpu`` emulates one with k-NN searches and a CPU fallback; not used).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from risbench import binning
from risbench import distance as dist

INDEX_TYPES = {"float": ("flat", "hnsw", "ivf"), "binary": ("flat", "hnsw", "multihash")}
# Build and search parameters (one place): HNSW graph degree and search breadth,
# IVF lists (LISTS_PER_ROOT x sqrt(n)) and lists probed, multi-hash tables, binary
# HNSW neighbours asked for.
HNSW_M = 32
HNSW_EF_SEARCH = 128
IVF_LISTS_PER_ROOT = 4
IVF_NPROBE = 16
MULTIHASH_TABLES = 8
BINARY_HNSW_KNN = 64
# Queries per FAISS call: faiss 1.15.1's IndexHNSWFlat.range_search aborts the whole
# process (RangeSearchResult::do_allocation) on 1,000 queries at once; 512 pass.
SEARCH_BATCH = 256
# Float candidates: FAISS searches this much wider (relative, in its units), then the
# float64 distances decide.
REFINE_MARGIN = 1e-5


def _faiss():
    import logging

    # faiss's loader logs each instruction set it tries at INFO (six lines a command)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def kind_of(distance: str) -> str:
    """``binary`` for hamming, ``float`` for the float distances; rv has no FAISS index."""
    dist._check_distance(distance)
    if distance == "rv":
        raise ValueError("FAISS has no index for rv digests (peak cross-correlation)")
    return "binary" if distance == "hamming" else "float"


def _check_type(distance: str, index_type: str) -> str:
    kind = kind_of(distance)
    if index_type not in INDEX_TYPES[kind]:
        raise ValueError(
            f"unknown {kind} index type {index_type!r}; valid: {', '.join(INDEX_TYPES[kind])}"
        )
    return kind


# --------------------------------------------------------------------------- units


def hamming_bits_within(radius: float, bits: int) -> int:
    """The most differing bits a pair within ``radius`` (a fraction of ``bits``) may
    have: the sweep's own rounding (:data:`risbench.binning.HAMMING_EPS`)."""
    return int(math.floor(radius * bits + binning.HAMMING_EPS))


def faiss_radius(distance: str, radius: float, bits: int | None = None, margin: float = 0.0):
    """A risbench radius in the units of a FAISS range search that keeps d ≤ radius:
    a bit count (hamming; FAISS keeps ``<``), a squared L2 distance (euclidean;
    ``<``) or an inner-product floor on normalised vectors (cosine, angular; ``>``).
    ``margin`` (float distances) widens it by that much, relative."""
    kind_of(distance)
    radius = float(radius)
    if distance == "hamming":
        if bits is None:
            raise ValueError("a hamming radius needs the number of bits")
        return hamming_bits_within(radius, bits) + 1
    if distance == "euclidean":
        wide = radius * radius * (1 + margin) + margin
        return float(np.nextafter(np.float32(wide), np.float32(np.inf)))
    similarity = 1.0 - radius if distance == "cosine" else math.cos(math.pi * radius)
    return float(np.nextafter(np.float32(similarity - margin), np.float32(-np.inf)))


def to_risbench(distance: str, values, bits: int | None = None) -> np.ndarray:
    """FAISS distances (bit counts, squared L2, inner products) in risbench's units
    (float64), clamped into each distance's range as the sweep's kernels clamp."""
    kind_of(distance)
    values = np.asarray(values, dtype=np.float64)
    if distance == "hamming":
        return values / bits
    if distance == "euclidean":
        return np.sqrt(np.maximum(values, 0.0))
    similarity = np.clip(values, -1.0, 1.0)
    return 1.0 - similarity if distance == "cosine" else np.arccos(similarity) / math.pi


def prepare(x, distance: str) -> np.ndarray:
    """A descriptor matrix as FAISS takes it: contiguous uint8 codes (hamming),
    float32 rows normalised in float64 (cosine, angular; zero rows stay zero, as
    in :mod:`risbench.distance`) or the float32 rows as stored (euclidean)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d descriptor matrix, got shape {x.shape}")
    if kind_of(distance) == "binary":
        if x.dtype != np.uint8:
            raise ValueError(f"hamming needs bit-packed uint8 codes, got {x.dtype}")
        return np.ascontiguousarray(x)
    x = x.astype(np.float64)
    if distance in ("cosine", "angular"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- indexes


def build(x, distance: str, index_type: str = "flat"):
    """A FAISS index of type ``index_type`` over the rows of ``x`` (prepared here)."""
    faiss = _faiss()
    kind = _check_type(distance, index_type)
    data = prepare(x, distance)
    n, width = data.shape
    if kind == "binary":
        index = _binary_index(faiss, width * 8, index_type)
    else:
        index = _float_index(faiss, width, distance, index_type, n)
        if not index.is_trained:
            index.train(data)
    if index_type == "ivf":
        index.make_direct_map()  # rows can be read back (refinement)
    index.add(data)
    return index


def _binary_index(faiss, d: int, index_type: str):
    if index_type == "flat":
        return faiss.IndexBinaryFlat(d)
    if index_type == "hnsw":
        index = faiss.IndexBinaryHNSW(d, HNSW_M)
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, BINARY_HNSW_KNN)
        return index
    # disjoint substrings of at most 64 bits (FAISS's limit), covering every bit
    tables = max(MULTIHASH_TABLES, math.ceil(d / 64))
    return faiss.IndexBinaryMultiHash(d, tables, d // tables)


def _float_index(faiss, d: int, distance: str, index_type: str, n: int):
    metric = faiss.METRIC_L2 if distance == "euclidean" else faiss.METRIC_INNER_PRODUCT
    if index_type == "flat":
        return faiss.IndexFlat(d, metric)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, metric)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    lists = max(1, min(n // 39, int(IVF_LISTS_PER_ROOT * math.sqrt(n))))  # >= 39 rows a list
    index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, lists, metric)
    index.nprobe = min(IVF_NPROBE, lists)
    return index


def is_binary(index) -> bool:
    return isinstance(index, _faiss().IndexBinary)


def serialize(index) -> bytes:
    faiss = _faiss()
    write = faiss.serialize_index_binary if is_binary(index) else faiss.serialize_index
    return write(index).tobytes()


def deserialize(data: bytes, binary: bool):
    faiss = _faiss()
    read = faiss.deserialize_index_binary if binary else faiss.deserialize_index
    return read(np.frombuffer(data, dtype=np.uint8))


def add(index, x, distance: str) -> None:
    """Appends rows to an index (no rebuild: IVF keeps its trained lists)."""
    index.add(prepare(x, distance))


@dataclass
class Hits:
    """Range-search results in CSR form: query i's index rows are
    ``ids[lims[i]:lims[i+1]]`` at ``distances`` (risbench units), nearest first
    (ties by row)."""

    lims: np.ndarray
    ids: np.ndarray
    distances: np.ndarray

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.lims[i], self.lims[i + 1]
        return self.ids[a:b], self.distances[a:b]

    @property
    def pairs(self) -> int:
        return int(self.lims[-1])


def range_search(index, queries, distance: str, radius: float, bits: int | None = None) -> Hits:
    """Every index row within ``radius`` of each query (rows of ``queries``, prepared here)."""
    faiss = _faiss()
    q = prepare(queries, distance)
    binary = kind_of(distance) == "binary"
    limit = faiss_radius(distance, radius, bits, 0.0 if binary else REFINE_MARGIN)
    search = _knn_within if isinstance(index, faiss.IndexBinaryHNSW) else _range
    parts = [search(index, q[a : a + SEARCH_BATCH], limit) for a in range(0, len(q), SEARCH_BATCH)]
    counts = np.concatenate([np.diff(lims) for lims, _, _ in parts] or [np.zeros(0, np.int64)])
    lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    d = np.concatenate([p[1] for p in parts] or [np.zeros(0)])
    ids = np.concatenate([p[2] for p in parts] or [np.zeros(0, np.int64)]).astype(np.int64)
    if binary:
        return _sorted_hits(lims, ids, to_risbench(distance, d, bits))
    exact = _float64_distances(index, q, lims, ids, distance)
    keep = exact <= radius
    kept = np.concatenate([[0], np.cumsum(keep)])
    return _sorted_hits(kept[lims], ids[keep], exact[keep])


def _float64_distances(index, q: np.ndarray, lims, ids, distance: str) -> np.ndarray:
    """Each candidate's distance in float64 from the stored rows; bit-identical
    rows at exactly 0 (as in risbench.distance)."""
    rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    a = q[rows]
    b = index.reconstruct_batch(ids) if len(ids) else np.zeros_like(a)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if distance == "euclidean":
        exact = np.sqrt(np.einsum("ij,ij->i", a64 - b64, a64 - b64))
    else:
        exact = to_risbench(distance, np.einsum("ij,ij->i", a64, b64))
    exact[(a.view(np.uint32) == b.view(np.uint32)).all(axis=1)] = 0.0
    return exact


def _range(index, q: np.ndarray, limit):
    return index.range_search(q, limit)


def _knn_within(index, q: np.ndarray, limit: int):
    """Binary HNSW: its ``BINARY_HNSW_KNN`` nearest codes, those under ``limit`` bits."""
    d, ids = index.search(q, min(BINARY_HNSW_KNN, index.ntotal))
    keep = (ids >= 0) & (d < limit)
    lims = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return lims, d[keep], ids[keep]


def _sorted_hits(lims, ids, distances) -> Hits:
    lims = np.asarray(lims, dtype=np.int64)
    query = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    order = np.lexsort((ids, distances, query))
    return Hits(lims, np.asarray(ids, dtype=np.int64)[order], distances[order])


# --------------------------------------------------------------------------- measurement


def exact_pairs(queries, base, distance: str, radius: float, *, bits=None, device="auto"):
    """The exact in-radius pairs as sorted int64 keys ``query * n + row``, computed
    with risbench's own distance kernels (the sweep's; CuPy when a CUDA device is
    present) tile by tile: memory O(n·d + 64 MB of distances)."""
    n = len(base)
    keys = []
    for start, _stop, tile in dist.iter_distance_tiles(
        queries, base, distance, bits=bits, tile_mb=64, device=device
    ):
        tile = dist.to_numpy(tile)
        if distance == "hamming":  # the sweep compares bit counts
            hits = np.rint(tile * bits) <= hamming_bits_within(radius, bits)
        else:
            hits = tile <= radius
        rows, cols = np.nonzero(hits)
        keys.append((rows + start).astype(np.int64) * n + cols)
    return np.sort(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)


def hit_keys(hits: Hits, n: int) -> np.ndarray:
    query = np.repeat(np.arange(len(hits.lims) - 1, dtype=np.int64), np.diff(hits.lims))
    return query * n + hits.ids


def measure(
    base,
    queries,
    distance: str,
    radius: float,
    *,
    bits: int | None = None,
    index_types=None,
    device: str = "auto",
    repeats: int = 1,
) -> list[dict]:
    """One row per index type: recall of the exact in-radius pairs, queries/s of
    the range search (the fastest of ``repeats`` runs: a shared machine's load
    only slows a run down), build seconds, index bytes, and the pair counts."""
    kind = kind_of(distance)
    if bits is None and kind == "binary":
        bits = np.asarray(base).shape[1] * 8
    exact = exact_pairs(queries, base, distance, radius, bits=bits, device=device)
    rows = []
    for index_type in index_types or INDEX_TYPES[kind]:
        started = time.perf_counter()
        index = build(base, distance, index_type)
        built = time.perf_counter() - started
        searched = math.inf
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            hits = range_search(index, queries, distance, radius, bits)
            searched = min(searched, time.perf_counter() - started)
        found = hit_keys(hits, len(base))
        common = np.intersect1d(found, exact, assume_unique=True).size
        rows.append(
            {
                "index": index_type,
                "distance": distance,
                "radius": float(radius),
                "recall": common / exact.size if exact.size else 1.0,
                "queries_per_s": len(queries) / searched if searched > 0 else math.inf,
                "build_s": built,
                "bytes": len(serialize(index)),
                "exact_pairs": int(exact.size),
                "found_pairs": int(found.size),
            }
        )
    return rows
