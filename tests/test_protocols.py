"""Protocols assembled from a catalog, checked against a direct brute force."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from test_metrics import assert_matches, assert_same_result, brute_force

from risbench import metrics, protocols

N, M, DIM = 7, 3, 12
VARIANTS = ["original", "blur", "rotate-2"]


def make_catalog(shuffle_variants: bool = False):
    """N base images in three variants plus M distractors (variant original),
    laid out as the catalog stage does: one variant list after the other."""
    rows = []
    order = VARIANTS[::-1] if shuffle_variants else VARIANTS
    for v in order:
        for i in range(N):
            role = "base" if v == "original" else "modified"
            rows.append({"image_id": f"b{i}", "variant": v, "group": f"b{i}", "role": role})
        if v == "original":
            for j in range(M):
                rows.append(
                    {"image_id": f"d{j}", "variant": v, "group": f"d{j}", "role": "distractor"}
                )
    catalog = pd.DataFrame(rows)
    catalog["path"] = catalog["variant"] + "/" + catalog["image_id"] + ".png"
    catalog.insert(0, "row", range(len(catalog)))
    rng = np.random.default_rng(0)
    base = np.abs(rng.standard_normal((N + M, DIM))).astype(np.float32)
    matrices = {"original": base}
    for k, v in enumerate(VARIANTS[1:], 1):
        noise = k * 0.6 * np.abs(rng.standard_normal((N, DIM))).astype(np.float32)
        matrices[v] = base[:N] + noise
    return catalog, matrices


def descriptor(matrices, variant, image_id):
    i = int(image_id[1:]) + (N if image_id.startswith("d") else 0)
    return matrices[variant][i]


def test_parse():
    assert protocols.parse("all") == ("all", None)
    assert protocols.parse("single-rotate-2") == ("single", "rotate-2")
    with pytest.raises(ValueError):
        protocols.parse("single-")
    with pytest.raises(ValueError):
        protocols.parse("some")


def test_select():
    catalog, _ = make_catalog()
    s = protocols.select(catalog, "all")
    assert len(s["index"]) == 3 * N and np.array_equal(s["queries"], s["index"])
    assert set(catalog["role"].iloc[s["index"]]) == {"base", "modified"}
    assert np.array_equal(s["query_self"], np.arange(3 * N))
    s = protocols.select(catalog, "distractors")
    assert len(s["queries"]) == 3 * N + M
    assert (catalog["role"].iloc[s["queries"][-M:]] == "distractor").all()
    assert np.array_equal(s["query_self"][-M:], [-1] * M)
    s = protocols.select(catalog, "single-blur")
    assert (catalog["role"].iloc[s["index"]] == "base").all() and len(s["index"]) == N
    assert (catalog["variant"].iloc[s["queries"]] == "blur").all()
    assert np.array_equal(s["query_self"], [-1] * N)
    s = protocols.select(catalog, "single-original")
    assert np.array_equal(s["queries"], s["index"])
    assert np.array_equal(s["query_self"], np.arange(N))


@pytest.mark.parametrize("shuffle", [False, True])
def test_gather_follows_the_variant_order(shuffle):
    catalog, matrices = make_catalog(shuffle)
    positions = np.arange(len(catalog))[::-1]
    rows = protocols.gather(catalog, matrices, positions)
    for r, pos in zip(rows, positions, strict=True):
        record = catalog.iloc[pos]
        assert np.array_equal(r, descriptor(matrices, record["variant"], record["image_id"]))
    bad = dict(matrices, blur=matrices["blur"][:-1])
    with pytest.raises(ValueError, match="blur"):
        protocols.gather(catalog, bad, positions)


def direct(catalog, matrices, protocol, distance, radii, excl=False):
    """The protocol by hand from the catalog (not via select) and the brute force."""
    indexed = catalog[catalog["role"].isin(["base", "modified"])]
    if protocol in ("all", "distractors"):
        index = indexed
        queries = indexed
        if protocol == "distractors":
            queries = pd.concat([indexed, catalog[catalog["role"] == "distractor"]])
    else:
        variant = protocol.split("-", 1)[1]
        index = catalog[catalog["role"] == "base"]
        queries = index if variant == "original" else catalog[catalog["variant"] == variant]

    def stack(frame):
        pairs = zip(frame["variant"], frame["image_id"], strict=True)
        return np.stack([descriptor(matrices, v, i) for v, i in pairs])

    keys = list(zip(index["variant"], index["image_id"], strict=True))
    qself = np.array(
        [
            keys.index(k) if k in keys else -1
            for k in zip(queries["variant"], queries["image_id"], strict=True)
        ]
    )
    return brute_force(
        stack(index),
        index["group"].to_numpy(),
        stack(queries),
        queries["group"].to_numpy(),
        distance,
        radii,
        qself=qself,
        excl=excl,
    )


@pytest.mark.parametrize("protocol", ["all", "distractors", "single-original", "single-blur"])
@pytest.mark.parametrize("excl", [False, True])
def test_run_matches_a_direct_brute_force(protocol, excl):
    catalog, matrices = make_catalog(shuffle_variants=True)
    result = protocols.run(
        catalog, matrices, protocol, "cosine", radius_step=0.01, exclude_self=excl, device="cpu"
    )
    radii = metrics.radius_grid("cosine", step=0.01)
    ref, counts, _ = direct(catalog, matrices, protocol, "cosine", radii, excl)
    assert_matches(result, ref | {"fbeta": result.fbeta}, counts)
    expected_queries = {"all": 3 * N, "distractors": 3 * N + M}.get(protocol, N)
    assert result.queries == expected_queries
    if protocol.startswith("single") and not (excl and protocol == "single-original"):
        assert np.all(result.tp + result.fn == N)  # one relevant image per query


def test_distractor_queries_have_recall_one():
    catalog, matrices = make_catalog()
    a = protocols.run(catalog, matrices, "all", "cosine", device="cpu")
    d = protocols.run(catalog, matrices, "distractors", "cosine", device="cpu")
    # recall sums: the M distractor queries add exactly M at every radius
    assert np.allclose(d.recall * d.queries, a.recall * a.queries + M)
    assert np.array_equal(d.tp, a.tp) and np.array_equal(d.fn, a.fn)
    assert np.all(d.fp >= a.fp)


def test_euclidean_grid_covers_every_distance():
    catalog, matrices = make_catalog()
    r = protocols.run(catalog, matrices, "all", "euclidean", device="cpu")
    norms = np.linalg.norm(np.concatenate(list(matrices.values())), axis=1)
    assert r.radii[-1] >= 2 * norms.max() - 1e-6
    assert r.distance_stats()["dissimilar"]["beyond_grid"] == 0
    assert r.recall[-1] == 1.0
    unit = {k: m / np.linalg.norm(m, axis=1, keepdims=True) for k, m in matrices.items()}
    assert protocols.run(catalog, unit, "all", "euclidean", device="cpu").radii[-1] == 2.0


def test_hamming_protocol_and_bits():
    catalog, _ = make_catalog()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2, (N + M, 42), dtype=np.uint8)
    codes = {"original": np.packbits(base, axis=1)}
    for v in VARIANTS[1:]:
        flipped = base[:N] ^ (rng.random((N, 42)) < 0.1)
        codes[v] = np.packbits(flipped.astype(np.uint8), axis=1)
    r = protocols.run(catalog, codes, "all", "hamming", bits=42, device="cpu")
    assert np.array_equal(r.radii, np.arange(22) / 42)
    assert r.best()["f1"] > 0.5
    with pytest.raises(ValueError):
        protocols.run(catalog, codes, "all", "hamming", bits=64, device="cpu")


# --------------------------------------------------------------------------- run_many


def catalog_of(n, m, dim, *, binary=False, distractor_scale=1.0, seed=1):
    """n base images in the three VARIANTS plus m distractors; float vectors
    (distractors scaled by ``distractor_scale``) or ``dim``-byte codes."""
    rows = [
        {"image_id": f"b{i}", "variant": v, "group": f"b{i}", "role": role}
        for v, role in zip(VARIANTS, ["base", "modified", "modified"], strict=True)
        for i in range(n)
    ]
    rows[n:n] = [
        {"image_id": f"d{j}", "variant": "original", "group": f"d{j}", "role": "distractor"}
        for j in range(m)
    ]
    catalog = pd.DataFrame(rows)
    catalog["path"] = catalog["variant"] + "/" + catalog["image_id"] + ".png"
    catalog.insert(0, "row", range(len(catalog)))
    rng = np.random.default_rng(seed)
    if binary:
        bits = rng.integers(0, 2, (n + m, 8 * dim), dtype=np.uint8)
        flips = {v: rng.random((n, 8 * dim)) < 0.08 * k for k, v in enumerate(VARIANTS)}
        matrices = {v: np.packbits(bits[:n] ^ flips[v], axis=1) for v in VARIANTS}
        matrices["original"] = np.packbits(
            np.concatenate([bits[:n] ^ flips["original"], bits[n:]]), axis=1
        )
        return catalog, matrices
    base = np.abs(rng.standard_normal((n + m, dim))).astype(np.float32)
    base[n:] *= distractor_scale
    matrices = {"original": base}
    for k, v in enumerate(VARIANTS[1:], 1):
        matrices[v] = base[:n] + k * 0.6 * np.abs(rng.standard_normal((n, dim))).astype(np.float32)
    return catalog, matrices


def count_sweeps(monkeypatch):
    """Record, per call of metrics.sweep, whether it scored several query sets."""
    calls = []
    sweep = metrics.sweep

    def counted(*args, **kwargs):
        calls.append(kwargs.get("query_sets") is not None)
        return sweep(*args, **kwargs)

    monkeypatch.setattr(metrics, "sweep", counted)
    return calls


@pytest.mark.parametrize(
    "distance, binary, tile_mb",
    [
        ("cosine", False, 256),
        ("cosine", False, 0.4),
        ("hamming", True, 256),
        ("euclidean", False, 256),
    ],
)
@pytest.mark.parametrize("excl", [False, True])
def test_run_many_equals_run(distance, binary, tile_mb, excl, monkeypatch):
    """Every protocol's result (tables byte for byte, statistics, ranked metrics)
    is run()'s; ``all`` and ``distractors`` come out of one sweep. 200 bases:
    600 indexed images, 650 queries; ``all`` ends inside a tile (default tile:
    512 rows; 0.4 MB: 6 rows)."""
    catalog, matrices = catalog_of(200, 50, 16 if not binary else 8, binary=binary)
    names = ["single-blur", "all", "distractors", "single-original", "all"]
    kw = dict(exclude_self=excl, tile_mb=tile_mb, device="cpu", top_k=5, beta=2.0)
    calls = count_sweeps(monkeypatch)
    many = protocols.run_many(catalog, matrices, names, distance, **kw)
    assert list(many) == ["single-blur", "all", "distractors", "single-original"]
    assert calls == [True, False, False]  # one shared sweep, then the two single ones
    assert many["all"].seconds == many["distractors"].seconds
    for name, result in many.items():
        alone = protocols.run(catalog, matrices, name, distance, **kw)
        assert_same_result(result, alone)
        a, b = io.BytesIO(), io.BytesIO()
        result.table().to_parquet(a, index=False)
        alone.table().to_parquet(b, index=False)
        assert a.getvalue() == b.getvalue()


def test_run_many_runs_all_and_distractors_apart_when_their_grids_differ(monkeypatch):
    """Euclidean without radius_max: each protocol's grid reaches twice its
    largest norm, so distractors three times longer give ``distractors`` a
    longer grid than ``all``: two sweeps, each still run()'s result."""
    catalog, matrices = catalog_of(30, 10, 8, distractor_scale=3.0)
    calls = count_sweeps(monkeypatch)
    many = protocols.run_many(catalog, matrices, ["all", "distractors"], "euclidean", device="cpu")
    assert calls == [False, False]
    assert many["distractors"].radii[-1] > many["all"].radii[-1]
    for name, result in many.items():
        assert_same_result(
            result, protocols.run(catalog, matrices, name, "euclidean", device="cpu")
        )
    del calls[:]
    shared = protocols.run_many(
        catalog, matrices, ["all", "distractors"], "euclidean", radius_max=40.0, device="cpu"
    )
    assert calls == [True]  # one grid for both: one sweep
    assert shared["all"].queries == 90 and shared["distractors"].queries == 100


def test_run_many_rejects_bad_protocols_before_any_sweep(monkeypatch):
    catalog, matrices = make_catalog()
    calls = count_sweeps(monkeypatch)
    with pytest.raises(ValueError, match="unknown protocol 'some'"):
        protocols.run_many(catalog, matrices, ["all", "some"], "cosine", device="cpu")
    with pytest.raises(ValueError, match="no protocol"):
        protocols.run_many(catalog, matrices, [], "cosine", device="cpu")
    assert calls == []
