"""FAISS indexes against risbench's own distances and sweep (risbench.search)."""

import math

import numpy as np
import pytest

from risbench import distance, metrics, search

# --------------------------------------------------------------------------- units


def test_faiss_radius_by_hand():
    assert search.faiss_radius("hamming", 3 / 64, bits=64) == 4  # FAISS keeps d < 4 bits
    assert search.faiss_radius("hamming", 0.5, bits=42) == 22  # 21 bits kept, 21.0 = 0.5 x 42
    r2 = search.faiss_radius("euclidean", 2.0)
    assert 4.0 < r2 < 4.0 + 1e-6
    ip = search.faiss_radius("cosine", 0.25)
    assert 0.75 - 1e-6 < ip < 0.75
    ip = search.faiss_radius("angular", 0.25)  # arccos(s)/pi <= 1/4  <=>  s >= cos(pi/4)
    assert math.sqrt(0.5) - 1e-6 < ip < math.sqrt(0.5)
    with pytest.raises(ValueError, match="bits"):
        search.faiss_radius("hamming", 0.1)
    with pytest.raises(ValueError, match="rv"):
        search.faiss_radius("rv", 0.1)


def test_to_risbench_by_hand():
    assert search.to_risbench("hamming", [5], bits=40).tolist() == [0.125]
    assert search.to_risbench("euclidean", [9.0, -1e-7]).tolist() == [3.0, 0.0]
    assert search.to_risbench("cosine", [0.75, 1.0000001]).tolist() == [0.25, 0.0]
    np.testing.assert_allclose(search.to_risbench("angular", [0.0, -1.0]), [0.5, 1.0])


def test_pairs_exactly_at_the_radius_are_kept():
    codes = np.packbits(np.array([[0] * 64, [1, 1, 1] + [0] * 61], dtype=bool), axis=1)
    index = search.build(codes, "hamming")
    assert search.range_search(index, codes[:1], "hamming", 3 / 64, 64).pairs == 2
    assert search.range_search(index, codes[:1], "hamming", 2 / 64, 64).pairs == 1
    x = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    index = search.build(x, "euclidean")
    assert search.range_search(index, x[:1], "euclidean", 5.0).pairs == 2
    assert search.range_search(index, x[:1], "euclidean", 4.99).pairs == 1
    y = np.array([[2.0, 0.0], [0.0, 5.0]], dtype=np.float32)  # orthogonal: cosine 1, angular 1/2
    index = search.build(y, "cosine")
    assert search.range_search(index, y[:1], "cosine", 1.0).pairs == 2
    assert search.range_search(index, y[:1], "cosine", 0.999).pairs == 1


def test_hits_are_nearest_first_in_risbench_units():
    x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    index = search.build(x, "cosine")
    hits = search.range_search(index, x[:1], "cosine", 1.0)
    ids, d = hits.of(0)
    assert ids.tolist() == [0, 3, 1, 2]
    np.testing.assert_allclose(d, [0.0, 0.2, 0.4, 1.0], atol=1e-6)


@pytest.mark.parametrize("name", ["cosine", "angular", "euclidean"])
def test_identical_rows_at_exactly_zero_also_at_radius_zero(name):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((50, 33)).astype(np.float32)
    for kind in search.INDEX_TYPES["float"]:
        hits = search.range_search(search.build(x, name, kind), x, name, 0.0)
        assert hits.pairs == 50  # float32 gives 1 - 6e-8 (angular: 1e-4) without the refinement
        assert np.array_equal(hits.ids, np.arange(50)) and not hits.distances.any()
        assert distance.pairwise(x, x, name, device="cpu").diagonal().max() == 0.0


# --------------------------------------------------------------------------- against the sweep


def _gap_radius(d: np.ndarray, quantile: float) -> float:
    """A radius halfway between two neighbouring distances with a clear gap, near
    ``quantile``: no pair sits on the boundary, whatever the float rounding."""
    values = np.unique(d)
    start = int(quantile * len(values))
    for k in range(start, len(values) - 1):
        if values[k + 1] - values[k] > 1e-4:
            return float((values[k] + values[k + 1]) / 2)
    raise AssertionError("no gap")


@pytest.mark.parametrize("name", ["cosine", "angular", "euclidean"])
def test_flat_range_search_equals_the_sweep_float(name):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 24)).astype(np.float32)
    queries = np.concatenate([base[:40] + 0.3 * rng.standard_normal((40, 24)), base[40:50]])
    queries = queries.astype(np.float32)
    d = distance.pairwise(queries, base, name, device="cpu")
    radius = _gap_radius(d, 0.02)
    hits = search.range_search(search.build(base, name), queries, name, radius)
    swept = metrics.sweep(
        base, np.arange(300), queries, np.arange(50), name, [radius], device="cpu"
    )
    assert hits.pairs == swept.tp[0] + swept.fp[0] == int((d <= radius).sum())
    for i in range(len(queries)):  # the same pairs, query by query, at the same distances
        ids, dist_ = hits.of(i)
        assert sorted(ids.tolist()) == np.flatnonzero(d[i] <= radius).tolist()
        np.testing.assert_allclose(dist_, d[i, ids], atol=2e-5)


def test_flat_range_search_equals_the_sweep_hamming():
    rng = np.random.default_rng(2)
    bits = 42  # colorhash-like: the last byte half used, padding bits zero
    raw = rng.integers(0, 2, (250, bits)).astype(bool)
    base = np.packbits(raw, axis=1)
    flips = rng.random((60, bits)) < 0.1
    queries = np.packbits(raw[:60] ^ flips, axis=1)
    d = distance.pairwise(queries, base, "hamming", bits=bits, device="cpu")
    index = search.build(base, "hamming")
    for k in (0, 4, 9, 15):
        radius = k / bits  # a grid radius: pairs sit exactly on it
        hits = search.range_search(index, queries, "hamming", radius, bits)
        swept = metrics.sweep(
            base, np.arange(250), queries, np.arange(60), "hamming", [radius], bits=bits
        )
        assert hits.pairs == swept.tp[0] + swept.fp[0] == int((d <= radius).sum())
        ids, dist_ = hits.of(0)
        assert sorted(ids.tolist()) == np.flatnonzero(d[0] <= radius).tolist()
        assert np.array_equal(dist_, np.sort(d[0, ids]))


def test_exact_pairs_are_the_brute_force_pairs():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((120, 8)).astype(np.float32)
    queries = base[:30] + 0.2 * rng.standard_normal((30, 8)).astype(np.float32)
    d = distance.pairwise(queries, base, "euclidean", device="cpu")
    radius = _gap_radius(d, 0.05)
    rows, cols = np.nonzero(d <= radius)
    expected = np.sort(rows.astype(np.int64) * 120 + cols)
    got = search.exact_pairs(queries, base, "euclidean", radius, device="cpu")
    assert np.array_equal(got, expected)


# --------------------------------------------------------------------------- measurement


def test_measure_flat_is_exact_and_multihash_within_its_tables():
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 2, (400, 64)).astype(bool)
    flips = np.zeros((100, 64), dtype=bool)
    for i, k in enumerate(rng.integers(0, 7, 100)):  # 0..6 flipped bits per query
        flips[i, rng.choice(64, k, replace=False)] = True
    base, queries = np.packbits(raw, axis=1), np.packbits(raw[:100] ^ flips, axis=1)
    # 8 tables of 8 bits: a pair within 7 bits agrees on one table (pigeonhole)
    rows = search.measure(base, queries, "hamming", 7 / 64, bits=64, device="cpu")
    by = {row["index"]: row for row in rows}
    assert set(by) == {"flat", "hnsw", "multihash"}
    d = distance.pairwise(queries, base, "hamming", bits=64, device="cpu")
    exact = int((d <= 7 / 64).sum())
    assert by["flat"]["exact_pairs"] == by["flat"]["found_pairs"] == exact
    assert by["flat"]["recall"] == 1.0
    assert by["multihash"]["recall"] == 1.0
    for row in rows:
        assert 0.0 <= row["recall"] <= 1.0 and row["bytes"] > 0 and row["queries_per_s"] > 0
    assert by["flat"]["bytes"] >= 400 * 8  # the codes themselves


def test_approximate_indexes_never_return_pairs_outside_the_radius():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = base[:200] + 0.5 * rng.standard_normal((200, 16)).astype(np.float32)
    d = distance.pairwise(queries, base, "cosine", device="cpu")
    radius = _gap_radius(d, 0.002)
    exact = set(search.exact_pairs(queries, base, "cosine", radius, device="cpu").tolist())
    for kind in ("hnsw", "ivf"):
        hits = search.range_search(search.build(base, "cosine", kind), queries, "cosine", radius)
        found = set(search.hit_keys(hits, len(base)).tolist())
        assert found <= exact  # misses only: every returned pair is truly within the radius


def test_serialize_round_trip_and_add_without_rebuild():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((500, 8)).astype(np.float32)
    index = search.build(base[:400], "euclidean", "ivf")
    copy = search.deserialize(search.serialize(index), binary=False)
    search.add(copy, base[400:], "euclidean")
    assert copy.ntotal == 500 and copy.is_trained
    fresh = search.build(base, "euclidean", "flat")
    radius = 2.0
    a = search.range_search(copy, base[400:410], "euclidean", radius)
    b = search.range_search(fresh, base[400:410], "euclidean", radius)
    assert set(search.hit_keys(a, 500).tolist()) <= set(search.hit_keys(b, 500).tolist())
    assert all(i in a.of(k)[0] for k, i in enumerate(range(400, 410)))  # added rows found
    codes = np.packbits(rng.integers(0, 2, (50, 64)).astype(bool), axis=1)
    binary = search.build(codes, "hamming", "multihash")
    again = search.deserialize(search.serialize(binary), binary=True)
    assert again.ntotal == 50


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="unknown float index type 'multihash'"):
        search.build(np.zeros((2, 4), np.float32), "cosine", "multihash")
    with pytest.raises(ValueError, match="uint8"):
        search.build(np.zeros((2, 8), np.float32), "hamming")
    with pytest.raises(ValueError, match="FAISS has no index for rv"):
        search.build(np.zeros((2, 40), np.uint8), "rv")


def test_queries_in_several_faiss_calls_keep_their_rows():
    rng = np.random.default_rng(8)
    base = rng.standard_normal((400, 6)).astype(np.float32)
    queries = base[rng.integers(0, 400, 3 * search.SEARCH_BATCH + 17)]
    queries = queries + 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    d = distance.pairwise(queries, base, "euclidean", device="cpu")
    radius = _gap_radius(d, 0.01)
    hits = search.range_search(search.build(base, "euclidean"), queries, "euclidean", radius)
    assert len(hits.lims) == len(queries) + 1
    for i in (0, search.SEARCH_BATCH - 1, search.SEARCH_BATCH, len(queries) - 1):
        assert sorted(hits.of(i)[0].tolist()) == np.flatnonzero(d[i] <= radius).tolist()
    assert hits.pairs == int((d <= radius).sum())
