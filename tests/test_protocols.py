"""Protocols assembled from a catalog, checked against a direct brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_metrics import assert_matches, brute_force

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


def test_parse_and_variants_needed():
    assert protocols.parse("all") == ("all", None)
    assert protocols.parse("single-rotate-2") == ("single", "rotate-2")
    with pytest.raises(ValueError):
        protocols.parse("single-")
    with pytest.raises(ValueError):
        protocols.parse("some")
    assert protocols.variants_needed("all", VARIANTS) == VARIANTS
    assert protocols.variants_needed("distractors", VARIANTS) == VARIANTS
    assert protocols.variants_needed("single-blur", VARIANTS) == ["original", "blur"]
    assert protocols.variants_needed("single-original", VARIANTS) == ["original"]
    with pytest.raises(ValueError):
        protocols.variants_needed("single-jpeg", VARIANTS)


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
