"""Distance kernels: values against float64 references, exact zeros, tiling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from risbench import distance as dist


def ref_rv_peak(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pHash ph_crosscorr, written out: the max over 40 circular shifts of the
    Pearson correlation, floored at 0 (a constant digest gives 0)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            xc, best = x - x.mean(), 0.0
            for d in range(40):
                yc = np.roll(y, d) - y.mean()
                den = np.sqrt((xc**2).sum() * (yc**2).sum())
                r = (xc * yc).sum() / den if den > 0 else 0.0
                best = max(best, r)
            out[i, j] = best
    return out


@pytest.fixture(autouse=True)
def _rv_reference(monkeypatch):
    """Use risbench.phash.rv_peak when it exists, else the reference above."""
    if importlib.util.find_spec("risbench.phash") is None:
        monkeypatch.setattr(dist, "_rv_peak", lambda: ref_rv_peak)


def test_array_module():
    assert dist.array_module("cpu") is np
    with pytest.raises(ValueError):
        dist.array_module("gpu")
    if importlib.util.find_spec("cupy") is None:
        assert dist.array_module("auto") is np
        with pytest.raises(RuntimeError, match="cuda"):
            dist.array_module("cuda")


def test_float_distances_match_float64_reference():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((13, 37)).astype(np.float32)
    i = rng.standard_normal((29, 37)).astype(np.float32)
    q64, i64 = q.astype(float), i.astype(float)
    cos = (q64 / np.linalg.norm(q64, axis=1)[:, None]) @ (
        i64 / np.linalg.norm(i64, axis=1)[:, None]
    ).T
    np.testing.assert_allclose(dist.cosine(q, i, device="cpu"), 1 - cos, atol=1e-6)
    np.testing.assert_allclose(
        dist.angular(q, i, device="cpu"), np.arccos(np.clip(cos, -1, 1)) / np.pi, atol=1e-4
    )
    eu = np.linalg.norm(q64[:, None] - i64[None], axis=2)
    np.testing.assert_allclose(dist.euclidean(q, i, device="cpu"), eu, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 42, 64, 144, 576])
def test_hamming_exact(bits):
    rng = np.random.default_rng(bits)
    qb = rng.integers(0, 2, (11, bits), dtype=np.uint8)
    ib = rng.integers(0, 2, (23, bits), dtype=np.uint8)
    expected = (qb[:, None, :] != ib[None, :, :]).sum(axis=2) / bits
    got = dist.hamming(np.packbits(qb, axis=1), np.packbits(ib, axis=1), bits, device="cpu")
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("words", [1, 4, 9])
def test_hamming_kernel_equals_bitwise_count(words, monkeypatch):
    """The CPU XOR + popcount kernel against NumPy's bitwise_count, on 1 and 2
    threads; and the deferred tiles, whose counts ``finish`` computes chunk by
    chunk, against the same reference."""
    from risbench import cpukernels

    rng = np.random.default_rng(words)
    codes = rng.integers(0, 256, (45, 8 * words), dtype=np.uint8)
    codes[3] = codes[5]  # identical rows: 0
    codes[4] = 255  # all bits set
    codes[6] = ~codes[7]  # all bits differ
    w = codes.view(np.uint64)
    expected = np.bitwise_count(w[:, None, :] ^ w[None, :, :]).sum(axis=2)
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        out = np.full((45, 45), 999, dtype=np.uint16)
        cpukernels.hamming_counts(w, np.ascontiguousarray(w.T), out)
        assert np.array_equal(out, expected)
    qp, ip = dist.prepare_pair(codes, codes, "hamming")
    for start, stop, tile, finish in dist.iter_raw_tiles(qp, ip, 20, deferred=True):
        for a in range(0, stop - start, 6):
            finish(a, min(a + 6, stop - start))
        assert np.array_equal(tile, expected[start:stop])


def test_hamming_bits_must_fit_the_bytes():
    codes = np.zeros((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError):
        dist.hamming(codes, codes, 42)  # 42 bits need 6 bytes, not 8


def test_rv_matches_ph_crosscorr():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (4, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 40), dtype=np.uint8)
    b[2] = 7  # a constant digest: peak 0, distance 1
    expected = 1 - ref_rv_peak(a, b)
    np.testing.assert_allclose(dist.rv(a, b, device="cpu"), expected, atol=1e-12)
    assert np.all(dist.rv(a, b, device="cpu")[:, 2] == 1.0)


def _random_rows(distance, rng, n):
    if distance == "hamming":
        return np.packbits(rng.integers(0, 2, (n, 100), dtype=np.uint8), axis=1), 100
    if distance == "rv":
        return rng.integers(0, 256, (n, 40), dtype=np.uint8), None
    # scales vary for the normalised distances; euclidean (|q|² + |i|² - 2q·i in
    # float32) resolves distances down to about 1e-3 of the norms only
    scale = 10.0 ** rng.integers(-3, 4, (n, 1)) if distance != "euclidean" else 1.0
    x = (rng.standard_normal((n, 300)) * scale).astype(np.float32)
    return x, None


@pytest.mark.parametrize("distance", dist.DISTANCES)
def test_self_distance_is_exactly_zero(distance):
    rng = np.random.default_rng(5)
    x, bits = _random_rows(distance, rng, 300 if distance != "rv" else 60)
    x[7] = 0  # a zero row (and a constant digest)
    x[8] = x[3]  # a different image with the same descriptor
    d = dist.pairwise(x, x, distance, bits=bits, device="cpu")
    diag = np.diag(d).copy()
    if distance == "rv":  # a constant digest correlates with nothing, itself included
        assert diag[7] == 1.0
        diag[7] = 0.0
    assert np.all(diag == 0.0)
    assert d[3, 8] == 0.0 and d[8, 3] == 0.0
    assert np.all(d >= 0)
    off = d[~np.eye(len(x), dtype=bool)]
    # only the duplicate pair is at 0
    assert np.count_nonzero(off == 0) == 2


def test_self_zero_without_duplicate_detection_would_fail():
    """The reason for the identical-rows rule: a float32 product of a normalised
    row with itself is not always 1."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((200, 2048)).astype(np.float32)
    qp, ip = dist.prepare_pair(x, x, "cosine")
    raw = next(dist.iter_raw_tiles(qp, ip, 200))[2]
    assert np.any(np.diag(raw) != 0)  # without the identical pairs
    raw = next(dist.iter_raw_tiles(qp, ip, 200, dist.identical_pairs(x, x)))[2]
    assert np.all(np.diag(raw) == 0)


def test_zero_vectors():
    x = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    q = np.array([[0, 0, 0], [0, 2, 0]], dtype=np.float32)
    cos = dist.cosine(q, x, device="cpu")
    assert cos.tolist() == [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    ang = dist.angular(q, x, device="cpu")
    assert ang.tolist() == [[0.0, 0.5, 0.0], [0.5, 0.5, 0.5]]


def test_identical_pairs_is_exact_even_when_hashes_collide(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (40, 4)).astype(np.float32)
    truth = (x[:, None, :] == x[None, :, :]).all(axis=2)
    monkeypatch.setattr(dist, "_row_hashes", lambda a: np.zeros(len(a), np.uint64))
    ptr, cols = dist.identical_pairs(x, x.copy())
    got = np.zeros_like(truth)
    for r in range(len(x)):
        got[r, cols[ptr[r] : ptr[r + 1]]] = True
    assert np.array_equal(got, truth)


@pytest.mark.parametrize("distance", ["cosine", "angular", "euclidean", "hamming"])
def test_tile_size_does_not_change_a_bit(distance):
    """Fixed-shape matrix-product blocks: a row's distances are bitwise the same
    for every tile size (1, 7, all), although BLAS results depend on shapes."""
    rng = np.random.default_rng(8)
    x, bits = _random_rows(distance, rng, 150)
    q = x[:61]
    full = None
    for rows in (1, 7, 61):
        out = np.empty((61, 150))
        for start, stop, tile in dist.iter_distance_tiles(
            q, x, distance, bits=bits, tile_rows=rows, device="cpu"
        ):
            out[start:stop] = tile
        if full is None:
            full = out
        assert np.array_equal(out, full)


def test_tile_rows_from_memory_bound():
    assert dist.tile_rows_for(1000, 1) == 2**20 // 4000
    assert dist.tile_rows_for(10**9, 1) == 1
    assert dist.kernel_rows(14000) == 512
    assert dist.kernel_rows(175000) == 64 * 2**20 // (4 * 175000)
    # CPU hamming tiles: as many bytes of 2-byte bit counts as a block of products
    assert dist.block_rows("cosine", 14000) == dist.block_rows("rv", 14000) == 512
    assert dist.block_rows("hamming", 14000, bits=64) == 1024
    assert dist.block_rows("hamming", 175000, bits=64) == 2 * dist.kernel_rows(175000)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        dist.cosine(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(ValueError):
        dist.pairwise(np.ones((1, 2)), np.ones((1, 2)), "manhattan")
    with pytest.raises(ValueError):
        dist.rv(np.zeros((1, 39), np.uint8), np.zeros((1, 39), np.uint8))


def _degenerate_set() -> np.ndarray:
    """Digests of a 1x5 and a 100x10 image (pHash's all-zero digest: a radon line samples
    no pixel), a 64x64 image, and a bit-identical copy of the latter."""
    from PIL import Image

    from risbench import phash

    rng = np.random.default_rng(4)
    digests = [
        phash.rv_digest(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        for w, h in [(1, 5), (100, 10), (64, 64)]
    ]
    x = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(3, 40)
    return np.concatenate([x, x[2:]])


def test_degenerate_rv_digests_do_not_match():
    """Issue 14: two degenerate digests, even bit-identical ones, are at distance 1
    (pHash's peak 0), not 0; identical normal digests stay at 0."""
    x = _degenerate_set()
    assert not x[:2].any() and x[2].any()
    expected = np.ones((4, 4))
    expected[2:, 2:] = 0.0
    assert np.array_equal(dist.rv(x, x, device="cpu"), expected)
    assert np.array_equal(dist.rv(x[:1], x[:1].copy(), device="cpu"), [[1.0]])
    assert np.array_equal(1 - ref_rv_peak(x[:2], x), expected[:2])
    ptr, cols = dist.skip_degenerate_rv(dist.identical_pairs(x, x), x)
    assert ptr.tolist() == [0, 0, 0, 2, 4] and cols.tolist() == [2, 3, 2, 3]


def test_degenerate_rv_digests_in_the_sweep():
    """The same through the radius sweep (protocol ``all``: every image queries the
    index it is part of). Groups: a, b (degenerate), x (the 64x64 digest and its copy).
    At radius 0 only the x pair retrieves each other and themselves: tp 2 + 2, fp 0;
    the degenerate queries miss even themselves (fn 2). At radius 1 everything is
    retrieved: tp 1 + 1 + 2 + 2, fp 3 + 3 + 2 + 2."""
    from risbench import metrics

    x = _degenerate_set()
    groups = np.array(["a", "b", "x", "x"])
    radii = np.array([0.0, 0.5, 1.0])
    result = metrics.sweep(x, groups, x, groups, "rv", radii, query_self=np.arange(4), device="cpu")
    table = result.table()
    assert table[["tp", "fp", "fn"]].values.tolist() == [[4, 0, 2], [4, 0, 2], [6, 10, 0]]
    assert result.distance_stats()["dissimilar"]["min"] == 1.0


def test_omp_threads_reads_the_first_level(monkeypatch):
    for value, expected in (("", None), ("2", 2), ("3,1", 3), (" 0 ", 1)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert dist.omp_threads() == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS must be a whole number"):
        dist.omp_threads()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_descriptors_prepared_the_same_on_any_thread_count(distance, monkeypatch):
    """The rows are normalised (centred) in chunks on the job's threads: every
    chunk once, and bit for bit what one thread makes; a NaN in any chunk is
    refused."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3000, 300)) * rng.uniform(0.1, 40, (3000, 1))).astype(np.float32)
    prepared = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        p = dist.prepare_pair(x, x, distance)[0]
        prepared[threads] = (p.data, p.sqnorm)
    assert np.array_equal(prepared["1"][0].view(np.uint32), prepared["2"][0].view(np.uint32))
    if distance == "euclidean":
        assert np.array_equal(prepared["1"][1], prepared["2"][1])
        centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
        assert np.array_equal(prepared["2"][0], centred.astype(np.float32))
    else:
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        np.testing.assert_allclose(prepared["2"][0], x / norms[:, None], rtol=1e-6)
    x[2500, 7] = np.nan  # (in the last chunk)
    with pytest.raises(ValueError, match="NaN or infinity"):
        dist.prepare_pair(x, x, distance)


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_products_the_same_on_any_thread_count(distance, monkeypatch):
    """The raw tiles do not depend on the job's threads nor on BLAS's: OpenBLAS's
    AVX2 sgemm rounds a 2-thread product differently from a 1-thread one (here
    thousands of these 512 × 2,000 products, before the panels), so each
    block is computed as single-threaded panels whose shapes depend on the
    index size only."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    x = rng.random((2000, 64), dtype=np.float32)
    tiles = {}
    for threads in (1, 2):
        monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
        with threadpool_limits(threads, user_api="blas"):
            qp, ip = dist.prepare_pair(x, x, distance)
            tiles[threads] = np.concatenate(
                [t.copy() for _, _, t in dist.iter_raw_tiles(qp, ip, 512)]
            )
            assert _blas_threads() == [threads] * len(_blas_threads())  # (given back)
    assert np.array_equal(tiles[1].view(np.uint32), tiles[2].view(np.uint32))
    # each panel is BLAS's own single-threaded product of the same operands
    qp, ip = dist.prepare_pair(x, x, distance)
    block = np.empty((512, 2000), np.float32)
    width = dist.panel_width(2000)
    with threadpool_limits(1, user_api="blas"):
        for a in range(0, 2000, width):
            block[:, a : a + width] = qp.data[:512] @ ip.data[a : a + width].T
    raw = dist._RawTiles(qp, ip, 512, None)
    assert np.array_equal(raw.tile(0, 512), block)


@pytest.mark.parametrize(
    "n, width", [(1, 16), (500, 128), (7000, 1760), (8192, 2048), (8193, 1040), (28000, 1760)]
)
def test_panels_depend_on_the_index_size_only(n, width):
    """4 panels per 8,192 index rows (or part), rounded up to 16 columns: 7,000
    rows are 3 panels of 1,760 and one of 1,720."""
    assert dist.panel_width(n) == width


def test_one_blas_thread_while_anyone_holds_it():
    """Counted holds: the BLAS stays on one thread until the last holder is out,
    then gets its own count back."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        with dist.one_blas_thread():
            with dist.one_blas_thread():
                assert set(_blas_threads()) == {1}
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}
