"""The radius sweep against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risbench import binning, cpukernels, metrics
from risbench import distance as dist

# --------------------------------------------------------------------------- reference


def brute_force(
    index, ig, queries, qg, distance, radii, *, bits=None, qself=None, excl=False, rows=None
):
    """Per query and per radius, with plain loops: the paper's definitions.
    ``rows``: score only those queries (of distances computed for all)."""
    d = dist.pairwise(queries, index, distance, bits=bits, device="cpu").astype(np.float64)
    qself = np.full(len(d), -1) if qself is None else np.asarray(qself)
    if rows is not None:
        d, qg, qself = d[rows], np.asarray(qg)[rows], qself[rows]
    nq, n = d.shape
    out = {k: np.zeros(len(radii)) for k in ("precision", "recall", "f1", "fbeta")}
    counts = {k: np.zeros(len(radii), dtype=np.int64) for k in ("tp", "fp", "fn")}
    for q in range(nq):
        usable = np.ones(n, dtype=bool)
        if excl and qself[q] >= 0:
            usable[qself[q]] = False
        relevant = (ig == qg[q]) & usable
        for j, r in enumerate(radii):
            retrieved = (d[q] <= r) & usable
            tp = int((retrieved & relevant).sum())
            nret, nrel = int(retrieved.sum()), int(relevant.sum())
            p = tp / nret if nret else 1.0
            rc = tp / nrel if nrel else 1.0
            f1 = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
            fb = 4 * p * rc / (3 * p + rc) if 3 * p + rc > 0 else 0.0  # beta = sqrt(3)
            out["precision"][j] += p
            out["recall"][j] += rc
            out["f1"][j] += f1
            out["fbeta"][j] += fb
            counts["tp"][j] += tp
            counts["fp"][j] += nret - tp
            counts["fn"][j] += nrel - tp
    for k in out:
        out[k] /= nq
    return out, counts, d


def brute_pairs(d, ig, qg, qself):
    """Similar (same group, not self) and dissimilar distances."""
    sim, dis = [], []
    for q in range(d.shape[0]):
        for i in range(d.shape[1]):
            if i == qself[q]:
                continue
            (sim if ig[i] == qg[q] else dis).append(d[q, i])
    return np.array(sim), np.array(dis)


def brute_ranked(d, ig, qg, qself, k):
    """Top k with pessimistic ties (irrelevant first, then index order), the
    query itself always left out; k raised to the most relevant of any query."""
    nq, n = d.shape
    lists, nrel = [], []
    for q in range(nq):
        cols = [i for i in range(n) if i != qself[q]]
        nrel.append(sum(ig[i] == qg[q] for i in cols))
    k = max([k, *nrel])
    for q in range(nq):
        cols = [i for i in range(n) if i != qself[q]]
        rel = {i: ig[i] == qg[q] for i in cols}
        ranked = sorted(cols, key=lambda i: (d[q, i], rel[i], i))[:k]
        lists.append([(d[q, i], rel[i]) for i in ranked])
    out = {"top_k": k}
    has = [q for q in range(nq) if nrel[q] > 0]
    for m in (1, 10):
        if m <= k:
            out[f"recall_at_{m}"] = (
                np.mean([any(r for _, r in lists[q][:m]) for q in has]) if has else None
            )
    aps = []
    for q in has:
        hits, s = 0, 0.0
        for j, (_, r) in enumerate(lists[q], 1):
            if r:
                hits += 1
                s += hits / j
        aps.append(s / min(nrel[q], k))
    out["map_at_k"] = np.mean(aps) if has else None
    pooled = sorted((dv, r) for lst in lists for dv, r in lst)  # False < True: pessimistic
    total = sum(nrel)
    hits, s = 0, 0.0
    for j, (_, r) in enumerate(pooled, 1):
        if r:
            hits += 1
            s += hits / j
    out["micro_ap"] = s / total if total else None
    return out


def assert_matches(result, ref, counts):
    for k in ("tp", "fp", "fn"):
        assert np.array_equal(getattr(result, k), counts[k]), k
    for k in ("precision", "recall", "f1", "fbeta"):
        np.testing.assert_allclose(getattr(result, k), ref[k], rtol=0, atol=1e-12, err_msg=k)


# --------------------------------------------------------------------------- hand-computed


def line():
    """Three points on a line, 0 and 1 in group A, 3 in group B (euclidean)."""
    x = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    x = x - x.mean()  # centred: the float32 formula is exact on these values
    return x, np.array(["A", "A", "B"])


def test_three_points_on_a_line():
    x, g = line()
    radii = np.array([0.0, 1.0, 2.0, 3.0])
    r = metrics.sweep(x, g, x, g, "euclidean", radii, query_self=np.arange(3), device="cpu")
    # by hand: per query (P, R, F1) at r = 0, 1, 2, 3
    # q0 (rel {0,1}): (1,.5,2/3) (1,1,1) (1,1,1) (2/3,1,.8)
    # q1 (rel {0,1}): (1,.5,2/3) (1,1,1) (2/3,1,.8) (2/3,1,.8)
    # q2 (rel {2}):   (1,1,1) (1,1,1) (.5,1,2/3) (1/3,1,.5)
    np.testing.assert_allclose(r.precision, [1, 1, 13 / 18, 5 / 9], atol=1e-15)
    np.testing.assert_allclose(r.recall, [2 / 3, 1, 1, 1], atol=1e-15)
    np.testing.assert_allclose(r.f1, [7 / 9, 1, 37 / 45, 0.7], atol=1e-15)
    assert r.tp.tolist() == [3, 5, 5, 5]
    assert r.fp.tolist() == [0, 0, 2, 4]
    assert r.fn.tolist() == [2, 0, 0, 0]
    assert r.best() == {
        "radius": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "fbeta": 1.0,
        "tp": 5,
        "fp": 0,
        "fn": 0,
    }
    table = r.table()
    assert list(table.columns) == metrics.TABLE_COLUMNS
    assert table["queries"].tolist() == [3, 3, 3, 3]
    stats = r.distance_stats()
    assert stats["similar"]["count"] == 2 and stats["similar"]["mean"] == 1.0
    assert stats["dissimilar"]["count"] == 4
    assert stats["dissimilar"]["min"] == 2.0 and stats["dissimilar"]["max"] == 3.0
    assert stats["dissimilar"]["mean"] == 2.5
    hist = r.histogram()
    assert hist["similar"].tolist() == [0, 2, 0, 0]
    assert hist["dissimilar"].tolist() == [0, 0, 2, 2]
    ranked = r.ranked()
    assert ranked["recall_at_1"] == 1.0 and ranked["map_at_k"] == 1.0
    assert ranked["micro_ap"] == 1.0


def test_conventions_nothing_retrieved_and_nothing_relevant():
    """With exclude_self: at r = 0 q0 and q1 retrieve nothing (P = 1, R = 0,
    F1 = 0); q2 has nothing relevant (R = 1), and at r = 0 retrieves nothing
    either (P = R = F1 = 1); at r = 2 it retrieves q1 (P = 0, F1 = 0)."""
    x, g = line()
    radii = np.array([0.0, 1.0, 2.0, 3.0])
    r = metrics.sweep(
        x, g, x, g, "euclidean", radii, query_self=np.arange(3), exclude_self=True, device="cpu"
    )
    np.testing.assert_allclose(r.precision, [1, 1, 0.5, 1 / 3], atol=1e-15)
    np.testing.assert_allclose(r.recall, [1 / 3, 1, 1, 1], atol=1e-15)
    np.testing.assert_allclose(r.f1, [1 / 3, 1, 5 / 9, 4 / 9], atol=1e-15)
    assert r.tp.tolist() == [0, 2, 2, 2]
    assert r.fp.tolist() == [0, 0, 2, 4]
    assert r.fn.tolist() == [2, 0, 0, 0]
    assert r.ranked()["queries_with_relevant"] == 2


def test_ranked_metrics_pessimistic_ties():
    """Hamming, 8 bits. Query q = 0b0 (group A): a = 0b1 (A) and b = 0b10 (B)
    both at 1/8, c = 0b11 (A) at 2/8. Pessimistic: b ranks before a. Distractor
    z (group Z): a and b at 5/8, c at 6/8, nothing relevant."""
    index = np.array([[0b1], [0b10], [0b11]], dtype=np.uint8)
    ig = np.array(["A", "B", "A"])
    queries = np.array([[0b0], [0b11110000]], dtype=np.uint8)
    qg = np.array(["A", "Z"])
    radii = metrics.radius_grid("hamming", bits=8)
    r = metrics.sweep(index, ig, queries, qg, "hamming", radii, bits=8, top_k=2, device="cpu")
    ranked = r.ranked()
    assert ranked["recall_at_1"] == 0.0
    assert "recall_at_10" not in ranked
    # q: b (irrelevant), a (relevant): AP@2 = (1/2) / min(2, 2)
    assert ranked["map_at_k"] == 0.25
    # pooled: (1/8, no), (1/8, yes), (5/8, no), (5/8, no); 2 relevant pairs in all
    assert ranked["micro_ap"] == 0.25  # optimistic ties would give 0.5
    r3 = metrics.sweep(index, ig, queries, qg, "hamming", radii, bits=8, top_k=3, device="cpu")
    assert r3.ranked()["map_at_k"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # P/R at r = 1/8 for q: {a, b} retrieved, a relevant: P = 1/2, R = 1/2
    j = 1
    assert r.tp[j] == 1 and r.fp[j] == 1 and r.fn[j] == 1


def isc_micro_ap(predictions, gt):
    """ISC2021's micro-AP (facebookresearch/isc2021, isc/metrics.py:
    precision_recall + average_precision), restated: ``predictions`` (query,
    reference, score), ``gt`` the set of positive (query, reference) pairs."""
    y = np.array([(q, i) in gt for q, i, _ in predictions], dtype=bool)
    score = np.array([sc for _, _, sc in predictions])
    order = sorted(range(len(y)), key=lambda j: (score[j], not y[j]))[::-1]
    y = y[order]
    ntp = np.cumsum(y)
    precisions = ntp / np.arange(1, len(y) + 1)
    recalls = ntp / len(gt)
    return float(((recalls - np.concatenate([[0], recalls[:-1]])) * precisions).sum())


def test_micro_ap_by_hand():
    """Two queries, k = 3. q0 (3 relevant): 0.1 yes, 0.2 no, 0.4 yes; q1 (1
    relevant): 0.2 yes, 0.3 no, nothing more. Pooled, ties irrelevant first:
    0.1 yes, 0.2 no, 0.2 yes, 0.3 no, 0.4 yes: precision 1/1, 2/3, 3/5 at the
    hits, 4 relevant pairs: μAP = (1 + 2/3 + 3/5) / 4 = 17/30. AP@3: q0
    (1 + 2/3) / 3 = 5/9, q1 1: mAP = 7/9."""
    topk_d = np.array([[0.1, 0.2, 0.4], [0.2, 0.3, np.inf]])
    topk_rel = np.array([[True, False, True], [True, False, False]])
    out = metrics.ranked_metrics(topk_d, topk_rel, np.array([3, 1]))
    assert out["micro_ap"] == pytest.approx(17 / 30, abs=1e-15)
    assert out["map_at_k"] == pytest.approx(7 / 9, abs=1e-15)
    assert out["recall_at_1"] == 1.0 and out["top_k"] == 3
    preds = [(0, 0, -0.1), (0, 1, -0.2), (0, 2, -0.4), (1, 0, -0.2), (1, 1, -0.3)]
    gt = {(0, 0), (0, 2), (0, 9), (1, 0)}  # (0, 9): relevant, never predicted
    assert isc_micro_ap(preds, gt) == pytest.approx(17 / 30, abs=1e-15)


@pytest.mark.parametrize("excl", [False, True])
def test_ranked_metrics_leave_the_query_out(excl):
    """Points 0 (A), 1 (B), 3 (A) on a line, every query in the index: the
    nearest other image of 0 and of 3 is 1 (irrelevant), so recall@1 = 0 (it
    was 1 when the query found itself), whatever exclude_self. Top lists: q0
    (1 no, 3 yes), q1 (1 no, 2 no), q2 (2 no, 3 yes); pooled: four misses,
    then the two hits: μAP = (1/5 + 2/6) / 2 = 4/15; AP: 1/2 each."""
    x = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    x = x - x.mean()
    g = np.array(["A", "B", "A"])
    radii = np.array([0.0, 1.0, 2.0, 3.0])
    r = metrics.sweep(
        x, g, x, g, "euclidean", radii, query_self=np.arange(3), exclude_self=excl, device="cpu"
    )
    ranked = r.ranked()
    assert ranked["recall_at_1"] == 0.0 and ranked["recall_at_10"] == 1.0
    assert ranked["map_at_k"] == 0.5 and ranked["top_k"] == 10
    assert ranked["micro_ap"] == pytest.approx(4 / 15, abs=1e-15)
    assert ranked["queries_with_relevant"] == 2
    # the radius sweep still follows exclude_self: at r = 0, the query itself
    assert r.tp[0] == (0 if excl else 3) and r.fn[0] == 2


@pytest.mark.parametrize("distance", ["cosine", "hamming"])
def test_micro_ap_equals_isc2021_on_brute_force_predictions(distance):
    """ISC-style predictions built by brute force from the distance matrix: every
    query's k nearest other index images (pessimistic ties; distractor queries
    too), score −d; ground truth: every same-group pair other than the query
    itself. Groups of 12 (11 relevant > top_k = 5): k becomes 11."""
    rng = np.random.default_rng(12)
    if distance == "hamming":  # 8 bits: many ties
        x, bits = rng.integers(0, 256, (60, 1), dtype=np.uint8), 8
    else:
        x, bits = rng.standard_normal((60, 6)).astype(np.float32), None
    n = 48
    g = np.concatenate([np.repeat(np.arange(4), 12), 100 + np.arange(12)])
    qself = np.where(np.arange(60) < n, np.arange(60), -1)
    radii = metrics.radius_grid(distance, bits=bits, step=None if bits else 0.05)
    r = metrics.sweep(
        x[:n], g[:n], x, g, distance, radii, bits=bits, query_self=qself, top_k=5,
        tile_rows=7, device="cpu",
    )  # fmt: skip
    ranked = r.ranked()
    k = 11
    assert ranked["top_k"] == k
    d = dist.pairwise(x, x[:n], distance, bits=bits, device="cpu").astype(np.float64)
    preds, gt = [], set()
    for q in range(60):
        cols = [i for i in range(n) if i != qself[q]]
        rel = {i: g[i] == g[q] for i in cols}
        gt |= {(q, i) for i in cols if rel[i]}
        for i in sorted(cols, key=lambda i: (d[q, i], rel[i], i))[:k]:
            preds.append((q, i, -d[q, i]))
    assert len(gt) == 4 * 12 * 11
    assert ranked["micro_ap"] == pytest.approx(isc_micro_ap(preds, gt), abs=1e-12)
    assert ranked["micro_ap"] < 1.0


# --------------------------------------------------------------------------- grid


def test_radius_grid_defaults():
    h = metrics.radius_grid("hamming", bits=64)
    assert len(h) == 33 and h[-1] == 0.5 and np.array_equal(h, np.arange(33) / 64)
    assert np.array_equal(metrics.radius_grid("hamming", bits=10), np.arange(6) / 10)
    c = metrics.radius_grid("cosine")
    assert len(c) == 1025 and c[0] == 0 and c[-1] == 1 and c[1] == 2.0**-10
    assert metrics.radius_grid("rv")[-1] == 1.0
    a = metrics.radius_grid("angular")
    assert a[-1] == 0.5 and len(a) == 1025
    e = metrics.radius_grid("euclidean")
    assert e[-1] == 2.0 and len(e) == 1025
    s = metrics.radius_grid("cosine", step=0.0025)
    assert len(s) == 401 and s[120] == 0.3 and s[-1] == 1.0
    assert metrics.radius_grid("euclidean", max_radius=3.0)[-1] == 3.0
    assert metrics.radius_grid("hamming", bits=64, step=0.01)[-1] == 0.5
    with pytest.raises(ValueError):
        metrics.radius_grid("hamming")
    with pytest.raises(ValueError):
        metrics.radius_grid("cosine", step=0)


def clustered(groups, variants, dim, noise, seed):
    """Bases plus noisy variants (non-negative, as CNN features)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), variants + 1)
    base = np.abs(rng.standard_normal((groups, dim)))
    x = base[g] + noise * np.abs(rng.standard_normal((len(g), dim))) * rng.random((len(g), 1))
    return x.astype(np.float32), g


@pytest.mark.parametrize(
    "distance, normalise", [("cosine", False), ("angular", False), ("euclidean", True)]
)
def test_default_step_is_fine_enough(distance, normalise):
    """Halving the default step moves the best mean F1 by < 0.001 (clusters of a
    base vector plus 6 noisy variants, noise set so that the best F1 is ~0.9)."""
    x, g = clustered(120, 6, 64, 2.5, seed=11)
    if normalise:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    grid = metrics.radius_grid(distance)
    step = grid[1] - grid[0]
    fine = metrics.radius_grid(distance, step=step / 2, max_radius=grid[-1])
    qs = np.arange(len(x))
    best = metrics.sweep(x, g, x, g, distance, grid, query_self=qs, device="cpu").best()
    best2 = metrics.sweep(x, g, x, g, distance, fine, query_self=qs, device="cpu").best()
    assert 0.6 < best["f1"] < 0.99, best  # a realistic, not trivial, operating point
    assert abs(best["f1"] - best2["f1"]) < 1e-3
    # a grid 16x coarser is visibly worse: the test can fail
    coarse = metrics.radius_grid(distance, step=step * 16, max_radius=grid[-1])
    best16 = metrics.sweep(x, g, x, g, distance, coarse, query_self=qs, device="cpu").best()
    assert best2["f1"] - best16["f1"] > 1e-3


# --------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    distance = draw(st.sampled_from(["cosine", "euclidean", "angular", "hamming"]))
    n = draw(st.integers(1, 18))
    extra = draw(st.integers(0, 5))  # queries not in the index
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits = None
    if distance == "hamming":
        bits = draw(st.sampled_from([5, 8, 12, 64]))
        raw = rng.integers(0, 2, (n + extra, bits), dtype=np.uint8)
        raw[rng.random(n + extra) < 0.3] = raw[0]  # exact duplicates
        data = np.packbits(raw, axis=1)
    else:
        dim = draw(st.integers(1, 5))
        # small integers: many exact ties, distances at grid values
        data = rng.integers(-2, 3, (n + extra, dim)).astype(np.float32)
        if distance == "euclidean":
            data -= data[:n].mean(axis=0)  # keeps the float32 formula exact
            data = np.round(data * 4) / 4
    groups = rng.integers(0, max(1, n // 2), n + extra)
    kind = draw(st.sampled_from(["default", "step", "arbitrary"]))
    top = {"hamming": 0.6, "cosine": 1.2, "angular": 0.6, "euclidean": 5.0}[distance]
    if kind == "default":
        radii = metrics.radius_grid(distance, bits=bits, max_radius=top)
    elif kind == "step":
        step = draw(st.sampled_from([0.1, 0.25, 0.05, 0.3]))
        radii = metrics.radius_grid(distance, bits=bits, step=step, max_radius=top)
    else:
        radii = np.unique(np.round(rng.random(draw(st.integers(1, 12))) * top, 2))
    return {
        "distance": distance,
        "bits": bits,
        "index": data[:n],
        "queries": data,
        "ig": groups[:n],
        "qg": groups,
        "qself": np.concatenate([np.arange(n), np.full(extra, -1)]),
        "radii": radii,
        "excl": draw(st.booleans()),
        "tile_rows": draw(st.sampled_from([None, 1, 3, 7])),
        "top_k": draw(st.integers(1, 12)),
    }


def sweep_problem(p, **extra):
    """``metrics.sweep`` of a drawn problem (see :func:`problems`) on the CPU."""
    return metrics.sweep(
        p["index"],
        p["ig"],
        p["queries"],
        p["qg"],
        p["distance"],
        p["radii"],
        bits=p["bits"],
        query_self=p["qself"],
        exclude_self=p["excl"],
        tile_rows=p["tile_rows"],
        beta=math.sqrt(3),
        top_k=p["top_k"],
        device="cpu",
        **extra,
    )


@SETTINGS
@given(problems())
def test_sweep_matches_brute_force(p):
    r = sweep_problem(p)
    ref, counts, d = brute_force(
        p["index"],
        p["ig"],
        p["queries"],
        p["qg"],
        p["distance"],
        p["radii"],
        bits=p["bits"],
        qself=p["qself"],
        excl=p["excl"],
    )
    assert_matches(r, ref, counts)
    assert r.queries == len(p["queries"])

    # distance distributions
    sim, dis = brute_pairs(d, p["ig"], p["qg"], p["qself"])
    stats = r.distance_stats()
    for name, values in (("similar", sim), ("dissimilar", dis)):
        s = stats[name]
        assert s["count"] == len(values)
        if len(values):
            assert s["min"] == values.min() and s["max"] == values.max()
            assert s["mean"] == pytest.approx(values.mean(), rel=1e-6, abs=1e-9)
            hist = np.histogram(values, bins=np.concatenate([[-np.inf], p["radii"]]))[0]
            # np.histogram bins are [a, b) except the last: count d <= r exactly instead
            cum = np.array([(values <= rr).sum() for rr in p["radii"]])
            assert np.array_equal(np.cumsum(r.histogram()[name].to_numpy()), cum)
            assert s["beyond_grid"] == int((values > p["radii"][-1]).sum())
            del hist
    np.testing.assert_allclose(stats["similar"]["median"] or 0, np.median(sim) if len(sim) else 0)

    # ranked metrics
    expected = brute_ranked(d, p["ig"], p["qg"], p["qself"], p["top_k"])
    got = r.ranked()
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["cosine", "angular", "euclidean"]))
def test_tiling_does_not_change_a_count(seed, distance):
    """Random (non-integer) floats: every tile size gives the same counts and
    statistics, bit for bit (fixed-shape matrix products)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 24)).astype(np.float32)
    g = rng.integers(0, 12, 40)
    radii = metrics.radius_grid(distance, step=0.01, max_radius=1.0)
    results = [
        metrics.sweep(
            x, g, x, g, distance, radii, query_self=np.arange(40), tile_rows=t, device="cpu"
        )
        for t in (1, 7, 40)
    ]
    for other in results[1:]:
        for k in ("tp", "fp", "fn"):
            assert np.array_equal(getattr(other, k), getattr(results[0], k))
        np.testing.assert_allclose(other.f1, results[0].f1, rtol=0, atol=1e-14)
        for name, block in other.distance_stats().items():
            first = results[0].distance_stats()[name]
            assert block["mean"] == pytest.approx(first["mean"], rel=1e-6)  # float32 sums
            assert {k: v for k, v in block.items() if k != "mean"} == {
                k: v for k, v in first.items() if k != "mean"
            }
        assert np.array_equal(other.histogram().to_numpy(), results[0].histogram().to_numpy())
        assert other.ranked() == results[0].ranked()


def test_large_tile_equals_small_tile_counts_on_realistic_data():
    x, g = clustered(60, 6, 256, 2.5, seed=3)
    radii = metrics.radius_grid("cosine")
    a = metrics.sweep(x, g, x, g, "cosine", radii, query_self=np.arange(len(x)), device="cpu")
    b = metrics.sweep(
        x, g, x, g, "cosine", radii, query_self=np.arange(len(x)), tile_rows=7, device="cpu"
    )
    assert np.array_equal(a.tp, b.tp) and np.array_equal(a.fp, b.fp)
    ref, counts, _ = brute_force(x, g, x, g, "cosine", radii, qself=np.arange(len(x)))
    assert_matches(a, ref | {"fbeta": a.fbeta}, counts)


def numpy_finish(x, finish):
    """Products to distances in place with NumPy, as the kernel's ``finish``
    (a distance.RowFinish) says: float32 formula, then the identical pairs at 0."""
    if finish.distance == "hamming":
        xor = finish.words[:, :, None] ^ finish.words_t[None, :, :]
        x[...] = np.bitwise_count(xor).sum(axis=1)
        return
    if finish.distance == "cosine":
        np.maximum(np.float32(1) - x, np.float32(0), out=x)
    else:
        s = (x * np.float32(-2) + finish.isq[None, :]) + finish.qsq[:, None]
        np.sqrt(np.maximum(s, np.float32(0)), out=x)
    rows = np.repeat(np.arange(len(x)), np.diff(finish.id_ptr))
    x[rows, finish.id_cols] = 0


def numpy_count_rows(binner, x, cum, rowsum, rowmax, finish=None, pick=None):
    """The plain NumPy counter (the CPU path before the fused kernel, the GPU
    path's code today): the Binner's bins, an offset bincount, NumPy sums;
    the candidates from the separate pick."""
    if finish is not None:
        numpy_finish(x, finish)
    cum[...] = binning.cum_bincount(binner.bins(x), len(cum[0]) - 1)
    rowsum[...] = x.sum(axis=1, dtype=rowsum.dtype)
    rowmax[...] = x.max(axis=1)
    return None if pick is None else cpukernels.pick_candidates(x, cum, *pick)


@pytest.mark.parametrize("counter", ["kernel", "numpy"])
def test_both_counters_agree(counter, monkeypatch):
    if counter == "numpy":
        monkeypatch.setattr(binning, "count_rows", numpy_count_rows)
    x, g = clustered(20, 6, 32, 2.5, seed=4)
    radii = metrics.radius_grid("cosine")
    r = metrics.sweep(x, g, x, g, "cosine", radii, query_self=np.arange(len(x)), device="cpu")
    ref, counts, _ = brute_force(x, g, x, g, "cosine", radii, qself=np.arange(len(x)))
    assert_matches(r, ref | {"fbeta": r.fbeta}, counts)


def test_cum_bincount_on_edge_shapes():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 100):
        for R in (0, 3, 50):
            b = rng.integers(0, R + 5, (7, n)).astype(np.int16)
            expected = np.stack([[(row <= j).sum() for j in range(R + 1)] for row in b])
            assert np.array_equal(binning.cum_bincount(b, R), expected)


def kernel_counts(binner, x, threads=None, monkeypatch=None):
    """The fused kernel's (cum, rowsum, rowmax) of the distance rows ``x``."""
    if threads is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    cum = np.full((len(x), binner.R + 1), -1.0)
    rowsum = np.empty(len(x), dtype=np.int64 if binner.mode == "lut" else np.float64)
    rowmax = np.empty(len(x), dtype=x.dtype)
    binning.count_rows(binner, x, cum, rowsum, rowmax)
    return cum, rowsum, rowmax


def boundary_heavy(distance, radii, bits, shape, rng):
    """Distances that sit on the radii (as the raw dtype holds them), one step
    of that dtype either side, zero, the largest possible (far beyond the grid)
    and random ones, with many exact ties."""
    if distance == "hamming":
        return rng.integers(0, bits + 1, shape).astype(dist.raw_dtype(distance, bits))
    raw = np.dtype(dist.raw_dtype(distance))
    largest = binning.DISTANCE_BOUND[distance] or 1e6
    on = radii.astype(raw)
    pool = np.concatenate(
        [
            on,
            np.nextafter(on, raw.type(np.inf)),
            np.nextafter(on, raw.type(0)),
            [0.0, min(radii[-1] * 1.5, largest), largest],
            rng.random(64) * min(radii[-1] * 1.2, largest),
        ]
    ).astype(raw)
    return rng.choice(pool, size=shape)


GRIDS = {
    "cosine dyadic": ("cosine", metrics.radius_grid("cosine"), None),
    "cosine uniform": ("cosine", metrics.radius_grid("cosine", step=0.013), None),
    "euclidean search": ("euclidean", np.array([0.0, 0.1, 0.3, 0.30000001, 1.7, 2.0]), None),
    "angular dyadic short": ("angular", metrics.radius_grid("angular", max_radius=0.1), None),
    "rv uniform": ("rv", metrics.radius_grid("rv", step=0.003), None),
    "hamming": ("hamming", metrics.radius_grid("hamming", bits=64), 64),
    "hamming decimal": ("hamming", metrics.radius_grid("hamming", bits=200, step=0.013), 200),
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_kernel_equals_numpy_counter_on_boundary_heavy_data(grid):
    """The fused CPU kernel against the plain NumPy counter and against the
    definition itself (d ≤ r in float64; hamming: count ≤ floor(r·bits + 1e-9)),
    on distances exactly on radii, a step either side, ties and beyond."""
    distance, radii, bits = GRIDS[grid]
    binner = binning.Binner(radii, distance, bits, np)
    rng = np.random.default_rng(len(grid))
    x = boundary_heavy(distance, radii, bits, (37, 1030), rng)
    cum, rowsum, rowmax = kernel_counts(binner, x)
    ref = np.empty_like(cum), np.empty_like(rowsum), np.empty_like(rowmax)
    numpy_count_rows(binner, x, *ref)
    assert np.array_equal(cum, ref[0])
    if distance == "hamming":
        limits = np.floor(radii * bits + binning.HAMMING_EPS)
    else:
        limits = radii
    definition = (x.astype(np.float64)[:, :, None] <= limits).sum(axis=1)
    assert np.array_equal(cum, definition)
    assert np.array_equal(rowmax, x.max(axis=1))
    exact = np.array([math.fsum(row) for row in x.astype(np.float64)])
    np.testing.assert_allclose(rowsum, exact, rtol=1e-12)


@pytest.mark.parametrize("distance", ["cosine", "angular", "euclidean", "hamming"])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_finishes_products_as_numpy_does(distance, threads, monkeypatch):
    """Products turned into distances inside the counting kernel are bit for bit
    those of distance._to_distance (NumPy), identical rows at 0 included: the
    same tiles finished both ways, then counted both ways. The data has
    duplicated rows (similarity rounds above 1), near-duplicates and, for
    euclidean, large norms, where any reassociation or FMA would show. Hamming
    (90 bits, two words): the kernel's XOR and popcount against NumPy's."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 48)).astype(np.float32) * rng.uniform(0.01, 50, (300, 1))
    x = x.astype(np.float32)
    x[100:140] = x[:40]  # bit-identical rows
    x[140:180] = x[:40] * np.float32(1 + 2**-20)  # near-duplicates
    bits = 90 if distance == "hamming" else None
    if distance == "hamming":  # (the signs of the values, twice)
        x = np.packbits(np.hstack([x, x[:, ::-1]])[:, :bits] > 0, axis=1)
    qp, ip = dist.prepare_pair(x, x, distance, bits=bits, xp=np)
    ident = dist.identical_pairs(qp.host, ip.host)
    radii = metrics.radius_grid(distance, bits=bits, step=2.0**-9, max_radius=4.0)
    binner = binning.Binner(radii, distance, bits, np)
    rows = 0
    for start, stop, tile, finish in dist.iter_raw_tiles(qp, ip, 128, ident, deferred=True):
        ref = tile.copy()
        if distance == "hamming":
            numpy_finish(ref, finish.func.__self__._row_finish(start, stop))
        else:
            finish.func(ref, start, 0, stop - start)  # NumPy: distance._to_distance
        spec = finish(0, stop - start, in_kernel=True)
        assert isinstance(spec, dist.RowFinish)
        cum, rowsum, rowmax = (
            np.empty((stop - start, binner.R + 1)),
            np.empty(stop - start, np.int64 if bits else np.float64),
            np.empty(stop - start, tile.dtype),
        )
        binning.count_rows(binner, tile, cum, rowsum, rowmax, spec)
        assert np.array_equal(tile.view(np.uint8), ref.view(np.uint8))
        expected = [np.empty_like(cum), np.empty_like(rowsum), np.empty_like(rowmax)]
        numpy_count_rows(binner, ref, *expected)
        assert np.array_equal(cum, expected[0]) and np.array_equal(rowmax, expected[2])
        assert (tile[np.arange(stop - start), np.arange(start, stop)] == 0).all()
        rows += stop - start
    assert rows == 300


def test_kernel_on_edge_shapes_and_threads(monkeypatch):
    """Rows fewer than threads, lengths around the kernel's 4-way and 512-column
    blocks, one radius; the same counts and bit-identical sums on 1 and 2 threads."""
    rng = np.random.default_rng(2)
    for R in (0, 3, 1024):
        radii = np.arange(R + 1) * 2.0**-10
        binner = binning.Binner(radii, "cosine", None, np)
        for rows in (1, 2, 3, 7):
            for n in (1, 3, 4, 5, 511, 512, 513, 1030):
                x = (rng.integers(0, R + 3, (rows, n)) * 2.0**-10).astype(np.float32)
                one = kernel_counts(binner, x, threads=1, monkeypatch=monkeypatch)
                two = kernel_counts(binner, x, threads=2, monkeypatch=monkeypatch)
                expected = (x.astype(np.float64)[:, :, None] <= radii).sum(axis=1)
                assert np.array_equal(one[0], expected) and np.array_equal(two[0], expected)
                assert np.array_equal(one[1], two[1]) and np.array_equal(one[2], two[2])
                assert np.array_equal(one[2], x.max(axis=1))


def test_the_workflow_parse_does_not_import_numba():
    """The modules the workflow imports to parse load neither numba nor the
    kernels (only jobs do, through binning, and distance when it counts bits)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from risbench import codedeps, config, placement, results\n"
        "print(sorted(m for m in ('numba', 'risbench.cpukernels') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_kernels_launched_from_two_python_threads(monkeypatch):
    """numba's workqueue layer aborts the process when two Python threads launch
    parallel kernels at once: cpukernels makes them take turns."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    radii = metrics.radius_grid("cosine")
    binner = binning.Binner(radii, "cosine", None, np)
    x = np.random.default_rng(3).random((64, 2000), dtype=np.float32)
    expected = (x.astype(np.float64)[:, :, None] <= radii).sum(axis=1)

    def counts(_):
        return kernel_counts(binner, x)[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for cum in pool.map(counts, range(40)):
            assert np.array_equal(cum, expected)


def test_kernel_threads_follow_the_job(monkeypatch):
    import numba

    pool = numba.config.NUMBA_NUM_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpukernels.job_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1,4")  # OpenMP's per-level list
    assert cpukernels.job_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(pool + 5))
    assert cpukernels.job_threads() == pool
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpukernels.job_threads() == pool
    monkeypatch.setenv("OMP_NUM_THREADS", "four")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        cpukernels.job_threads()


@pytest.mark.parametrize(
    "shape, dtype",
    [((), np.int64), ((3,), np.float32), ((512,), np.uint32), ((4, 1027), np.int32), ((7,), bool)],
)
def test_threads_scratch_parts_share_no_cache_line(shape, dtype):
    scratch = cpukernels.thread_scratch(3, shape, dtype)
    parts = [scratch[t, 0, ...] for t in range(3)]  # (views, 0-d ones too)
    for part in parts:
        assert part.shape == shape and part.dtype == dtype
        assert part.flags.c_contiguous and not part.any()
    for a, b in zip(parts, parts[1:], strict=False):
        assert b.ctypes.data - (a.ctypes.data + a.nbytes) >= 128  # a line and its pair


def python_output(code: str, drop: set, preset: dict) -> str:
    """What ``python -c code`` prints, in an environment without the variables
    ``drop`` and with ``preset``."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in drop} | preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("preset, expected", [({}, "4"), ({"OPENBLAS_THREAD_TIMEOUT": "12"}, "12")])
def test_importing_risbench_stops_openblas_idle_spin_unless_set(preset, expected):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when NumPy loads it: importing
    risbench first (as the CLI does) sets it, without overriding a user's."""
    code = "import risbench, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert python_output(code, {"OPENBLAS_THREAD_TIMEOUT"}, preset) == expected


@pytest.mark.parametrize(
    "preset, expected",
    [({}, "omp passive"), ({"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue unset")],
)
def test_kernels_run_on_openmp_waiting_passively_unless_told(preset, expected):
    """numba's OpenMP layer with sleeping workers (the workqueue's did not run
    side by side, spinning ones take the BLAS threads' cores); a layer named
    by the user wins."""
    try:
        import numba.np.ufunc.omppool  # noqa: F401
    except ImportError:  # (no OpenMP here: the workqueue is the fallback)
        expected = expected.replace("omp", "workqueue")
    drop = {"OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"}
    code = (
        "import os, numba, numpy as np; from risbench import metrics; "
        "x = np.random.rand(300, 8).astype(np.float32); g = np.arange(300) // 3; "
        "metrics.sweep(x, g, x, g, 'cosine', [0.1, 0.2], device='cpu'); "
        "print(numba.threading_layer(), os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    )
    assert python_output(code, drop, preset | {"OMP_NUM_THREADS": "2"}) == expected


def test_rejects_bad_arguments():
    x = np.ones((3, 2), np.float32)
    g = np.arange(3)
    with pytest.raises(ValueError):
        metrics.sweep(x, g, x, g, "cosine", [0.2, 0.1])
    with pytest.raises(ValueError):
        metrics.sweep(x, g, x, g, "cosine", [0.1], beta=0)
    with pytest.raises(ValueError):
        metrics.sweep(x, g, x, np.array([0, 0, 1]), "cosine", [0.1], query_self=np.arange(3))


def test_the_gpu_code_path_on_a_numpy_shim(monkeypatch):
    """The CuPy branches (whole-tile chunks, bincount counting, no ``out``
    casting) run here on a stand-in module that is NumPy but not ``numpy``."""
    import types

    shim = types.ModuleType("fakecupy")
    for name in dir(np):
        if not name.startswith("__"):
            setattr(shim, name, getattr(np, name))
    monkeypatch.setattr(dist, "array_module", lambda device="auto": shim)
    for distance in ("cosine", "euclidean", "hamming"):
        rng = np.random.default_rng(7)
        if distance == "hamming":
            x, bits = np.packbits(rng.integers(0, 2, (50, 24), dtype=np.uint8), axis=1), 24
        else:
            x, bits = rng.integers(-2, 3, (50, 4)).astype(np.float32), None
            x -= x.mean(axis=0)
        g = rng.integers(0, 15, 50)
        radii = metrics.radius_grid(distance, bits=bits, step=0.05, max_radius=1.5)
        for excl in (False, True):
            r = metrics.sweep(
                x,
                g,
                x,
                g,
                distance,
                radii,
                bits=bits,
                query_self=np.arange(50),
                exclude_self=excl,
                tile_rows=16,
                beta=math.sqrt(3),
            )
            ref, counts, d = brute_force(
                x, g, x, g, distance, radii, bits=bits, qself=np.arange(50), excl=excl
            )
            assert_matches(r, ref, counts)
            expected = brute_ranked(d, g, g, np.arange(50), 10)
            assert r.ranked()["micro_ap"] == pytest.approx(expected["micro_ap"], abs=1e-12)


def use_numpy_shim(monkeypatch):
    """Route the sweep through its CuPy branches on a module that is NumPy but not
    ``numpy`` (whole-tile chunks, bincount counting)."""
    import types

    shim = types.ModuleType("fakecupy")
    for name in dir(np):
        if not name.startswith("__"):
            setattr(shim, name, getattr(np, name))
    monkeypatch.setattr(dist, "array_module", lambda device="auto": shim)


# --------------------------------------------------------------------------- one step at a time


def start_sweep(index, ig, queries, qg, distance, radii, **options):
    """The accumulator and tile iterator of a sweep (sweep's defaults, on the CPU)."""
    kw = dict(bits=None, query_self=None, exclude_self=False, tile_mb=256, device="cpu")
    kw.update(beta=1.0, top_k=10, tile_rows=None, query_sets=None)
    kw.update(options)
    return metrics._setup(index, ig, queries, qg, distance, radii, **kw)


def first_tile(acc, tiles):
    start, stop, raw, finish = next(tiles)
    t = metrics._Tile(start, stop, raw)
    parts = {name: metrics._Part.of(s.mask, start, stop) for name, s in acc.sets.items()}
    return t, finish, parts


def test_score_kernel_sorts_a_rows_relevant_bins_as_numpy():
    """By insertion up to 32 values, numba's sort beyond: both np.sort's order."""
    rng = np.random.default_rng(11)
    for size in [0, 1, 2, 5, 31, 32, 33, 70]:
        a = rng.integers(0, 9, size)  # (ties)
        got = a.copy()
        cpukernels._sort_few(got)
        assert np.array_equal(got, np.sort(a))


def nearest_beyond_grid_reference(row, own, k, low):
    """The NumPy code the kernel replaced: a row's k nearest other pairs (ties
    included) and its pairs at most ``low``, the query itself in neither."""
    row = row.astype(np.float64)
    if own >= 0:
        row[own] = np.inf
    finite = np.isfinite(row)
    if int(finite.sum()) <= k:
        return np.flatnonzero(finite | (row <= low))
    return np.flatnonzero(row <= max(np.partition(row, k - 1)[k - 1], low))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 10, 64, 65, 200])
def test_nearest_beyond_grid_as_numpy(k, threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    rng = np.random.default_rng(k)
    for dtype in (np.float32, np.uint16):
        x = rng.integers(0, 40, (30, 150)).astype(dtype)  # (many ties)
        x[29] = rng.permutation(150)  # (no ties; its own pair the nearest)
        x[29, 3] = 0
        if dtype == np.float32:
            x[3, ::7] = np.inf  # (fewer finite values than k for large k)
            x[4, 100:] = np.inf
        rows = np.array([0, 2, 3, 4, 5, 11, 29])
        own = np.array([5, -1, 0, 149, -1, 7, 3])
        low = np.array([-np.inf, 20.0, 2.0, -np.inf, 39.0, 0.0, 25.0])
        at, cols, values = cpukernels.nearest_beyond_grid(x, rows, own, k, low)
        for i, r in enumerate(rows):
            expected = nearest_beyond_grid_reference(x[r], own[i], k, low[i])
            assert np.array_equal(cols[at == i], expected), (dtype, r)
            assert np.array_equal(values[at == i], x[r, expected].astype(np.float64))
    narrow = np.zeros((2, 5), np.float32)  # (rows shorter than k)
    at, cols, _ = cpukernels.nearest_beyond_grid(narrow, [0, 1], [2, -1], 7, [-np.inf] * 2)
    assert at.tolist() == [0] * 4 + [1] * 5 and cols.tolist() == [0, 1, 3, 4, 0, 1, 2, 3, 4]


def test_count_step_counts_retrieved_pairs_per_query():
    """Step 1 alone: retrieved counts per query and radius, row sums and maximum,
    against the distances of distance.pairwise; with step 2 (on the CPU its
    score kernel sums the counts), the histogram of all pairs."""
    x, g = clustered(12, 6, 16, 2.5, seed=5)
    radii = metrics.radius_grid("cosine", step=0.01)
    acc, tiles = start_sweep(
        x, g, x, g, "cosine", radii, query_self=np.arange(len(x)), tile_rows=30
    )
    t, finish, parts = first_tile(acc, tiles)
    acc.count(t, finish, parts)
    d = dist.pairwise(x[:30], x, "cosine", device="cpu").astype(np.float64)
    expected = np.stack([(d <= r).sum(axis=1) for r in radii], axis=1)
    assert np.array_equal(t.cum, expected)
    part = parts[None]
    np.testing.assert_allclose(part.rowsum, d.sum(axis=1), rtol=1e-5)
    assert part.max == d.max()
    acc.relevant(t, parts)
    assert np.array_equal(np.cumsum(part.all_hist[:-1]), expected.sum(axis=0))
    assert part.all_hist.sum() == d.size


@pytest.mark.parametrize("excl", [False, True])
def test_relevant_step_counts_true_positives_and_the_query_itself(excl):
    """Step 2 alone: tp per query and radius (summed over the queries, and
    divided by each query's relevant count: the CPU's score kernel makes tp a
    row at a time); the query's own pair is relevant, or under exclude_self
    neither retrieved nor relevant."""
    x, g = clustered(12, 6, 16, 2.5, seed=6)
    n = len(x)
    radii = metrics.radius_grid("cosine", step=0.01)
    acc, tiles = start_sweep(
        x, g, x, g, "cosine", radii, query_self=np.arange(n), exclude_self=excl
    )
    t, finish, parts = first_tile(acc, tiles)
    acc.count(t, finish, parts)
    acc.relevant(t, parts)
    d = dist.pairwise(x, x, "cosine", device="cpu").astype(np.float64)
    if excl:
        np.fill_diagonal(d, np.inf)
    rel = g[:, None] == g[None, :]
    tp = np.stack([((d <= r) & rel).sum(axis=1) for r in radii], axis=1)
    ret = np.stack([(d <= r).sum(axis=1) for r in radii], axis=1)
    assert np.array_equal(t.cum, ret)
    sums, counts = parts[None].scores
    assert np.array_equal(counts[0], tp.sum(axis=0))
    nr = rel.sum(axis=1) - excl
    np.testing.assert_allclose(sums[3], (tp / nr[:, None]).sum(axis=0), rtol=1e-14)
    off_diagonal = rel.sum() - n  # similar pairs: same group, not the query itself
    assert parts[None].sim_hist.sum() == off_diagonal and parts[None].self_hist.sum() == n


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_score_kernel_by_hand(exclude_self, threads, monkeypatch):
    """cpukernels.score_rows on hand-made counts, radii 0, 1, 2, β² = 4. Query A
    (relevant others at bins 1 and 2, itself at bin 0) retrieves 0, 1, 3 pairs
    besides itself; query B (nothing relevant, not in the index) 0, 0, 2.
    Sums over both: tp/max(ret, 1), tp/max(ret + rel, 1), tp/max(ret + 4 rel, 1),
    tp/max(rel, 1)."""

    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    cum = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 2.0]])  # A's own pair included
    relevant = np.array([0, 2, 2]), np.array([1, 2])
    self_bins = np.array([0, 4])  # B: not in the index (any bin > R)
    member = np.array([[True, True], [False, True]])  # sets: both, B alone
    if exclude_self:  # A: rel 2, itself neither retrieved nor relevant
        nr, ret_a, tp_a = np.array([2.0, 0.0]), [0, 1, 3], [0, 1, 2]
    else:  # A: rel 3, itself retrieved and relevant
        nr, ret_a, tp_a = np.array([3.0, 0.0]), [1, 2, 4], [1, 2, 3]
    sums, counts = cpukernels.score_rows(cum, relevant, self_bins, exclude_self, nr, 4.0, member)
    ret_b, r = [0, 0, 2], nr[0]
    assert np.array_equal(cum, [ret_a, ret_b])
    expected = [
        [t / max(c, 1) for t, c in zip(tp_a, ret_a, strict=True)],
        [t / max(c + r, 1) for t, c in zip(tp_a, ret_a, strict=True)],
        [t / max(c + 4 * r, 1) for t, c in zip(tp_a, ret_a, strict=True)],
        [t * (1 / r) for t in tp_a],
    ]
    np.testing.assert_array_equal(sums[0], expected)  # B adds 0 everywhere
    np.testing.assert_array_equal(sums[1], np.zeros((4, 3)))
    pre = np.add(ret_a, ret_b) + ([1, 1, 1] if exclude_self else 0)
    np.testing.assert_array_equal(counts[0], [tp_a, np.add(ret_a, ret_b), pre])
    np.testing.assert_array_equal(counts[1], [[0, 0, 0], ret_b, ret_b])
    first, kth = np.empty(2, np.int64), np.empty(2, np.int64)
    cpukernels.first_at_least(cum, np.array([1, 1]), first)
    cpukernels.first_at_least(cum, np.array([3, 3]), kth)
    assert list(first) == ([1, 2] if exclude_self else [0, 2]) and list(kth) == [2, 3]


@pytest.mark.parametrize("distance", ["hamming", "euclidean"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_cpu_kernels_equal_the_generic_path_bit_for_bit(distance, exclude_self, monkeypatch):
    """The CPU sweep (fused kernels: products to distances, counts, tp, score
    sums) against the generic array code that CuPy runs, here on NumPy: every
    table column, histogram and ranked metric bit for bit, with β ≠ 1, a set of
    distractor queries (nothing relevant, not in the index) and a set of
    non-contiguous queries. Integer data: both paths' distances are exact."""
    rng = np.random.default_rng(3)
    if distance == "hamming":
        x, bits = np.packbits(rng.integers(0, 2, (90, 40), dtype=np.uint8), axis=1), 40
        extra = np.packbits(rng.integers(0, 2, (20, 40), dtype=np.uint8), axis=1)
    else:
        x, bits = rng.integers(-3, 4, (90, 6)).astype(np.float32), None
        extra = rng.integers(-3, 4, (20, 6)).astype(np.float32)
    g = rng.integers(0, 25, 90)
    queries, qg = np.concatenate([x, extra]), np.concatenate([g, -1 - np.arange(20)])
    qself = np.concatenate([np.arange(90), np.full(20, -1)])
    radii = metrics.radius_grid(distance, bits=bits, step=0.01, max_radius=3.0)
    sets = {"all": np.arange(90), "distractors": np.arange(110), "odd": np.arange(1, 110, 3)}
    kw = dict(bits=bits, query_self=qself, exclude_self=exclude_self, beta=0.5, tile_rows=32)

    def run():
        return metrics.sweep(x, g, queries, qg, distance, radii, query_sets=sets, **kw)

    cpu = run()
    use_numpy_shim(monkeypatch)
    generic = run()
    for name in sets:
        a, b = cpu[name], generic[name]
        for column in ("precision", "recall", "f1", "fbeta", "tp", "fp", "fn"):
            assert np.array_equal(getattr(a, column), getattr(b, column)), (name, column)
        assert np.array_equal(a.similar_hist, b.similar_hist)
        assert np.array_equal(a.dissimilar_hist, b.dissimilar_hist)
        assert a.ranked() == b.ranked()


@pytest.mark.parametrize("grid", ["cosine dyadic", "hamming"])
def test_pick_candidates_equal_numpy(grid):
    """cpukernels.pick_candidates against NumPy: per row the first radius whose
    count reaches k (none: R + 1, nothing picked), then every pair at most that
    radius's limit, in row-major order; rows of many ties and rows of 1030
    columns (blocks of 64 and a partial one). A count that lies is refused."""

    distance, radii, bits = GRIDS[grid]
    binner = binning.Binner(radii, distance, bits, np)
    rng = np.random.default_rng(5)
    x = boundary_heavy(distance, radii, bits, (23, 1030), rng)
    cum = kernel_counts(binner, x)[0]
    k = rng.integers(1, 1031, 23)
    k[::5] = 1031  # more than the row holds: nothing picked
    level = np.empty(23, dtype=np.int64)
    rows, cols, vals = cpukernels.pick_candidates(x, cum, k, binner.limit, level)
    reached = cum >= k[:, None]
    expected_level = np.where(reached.any(axis=1), reached.argmax(axis=1), binner.R + 1)
    assert np.array_equal(level, expected_level)
    r, c = np.nonzero(x <= binner.limit[expected_level][:, None])
    assert np.array_equal(rows, r) and np.array_equal(cols, c)
    assert np.array_equal(vals, x[r, c])
    assert (level <= binner.R).any() and (level > binner.R).any()
    with pytest.raises(ValueError, match="counts do not match"):
        cpukernels.pick_candidates(x, cum + (cum > 0), k, binner.limit, level)


@pytest.mark.parametrize("grid", ["cosine dyadic", "hamming"])
@pytest.mark.parametrize("slack", [-30, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_counting_kernel_picks_as_pick_candidates(grid, slack, threads, monkeypatch):
    """The candidates the counting kernel picks while it counts equal those of
    the separate pick_candidates (levels, rows, columns, values, in row-major
    order), also when its buffers leave rows out (made smaller than k here:
    those rows are picked again alone, and come last)."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    monkeypatch.setattr(cpukernels, "_PICK_SLACK", slack)
    distance, radii, bits = GRIDS[grid]
    binner = binning.Binner(radii, distance, bits, np)
    x = boundary_heavy(distance, radii, bits, (29, 1030), np.random.default_rng(8))
    k = np.random.default_rng(9).integers(1, 40, 29)
    k[::7] = 1031  # more than the row holds: nothing picked
    cum = np.empty((29, binner.R + 1), dtype=np.int32)  # (as the sweep holds them)
    rowsum = np.empty(29, dtype=np.int64 if bits else np.float64)
    level = np.empty(29, dtype=np.int64)
    pick = (k, binner.limit, level)
    alone, separate = [], cpukernels.pick_candidates
    monkeypatch.setattr(
        cpukernels, "pick_candidates", lambda x, *a: alone.append(len(x)) or separate(x, *a)
    )
    rows, cols, vals = binning.count_rows(binner, x, cum, rowsum, np.empty(29, x.dtype), None, pick)
    expected_level = np.empty(29, dtype=np.int64)
    ref = separate(x, cum, k, binner.limit, expected_level)
    assert np.array_equal(level, expected_level)
    order = np.lexsort((cols, rows))  # (rows left out come last)
    for got, want in zip((rows[order], cols[order], vals[order]), ref, strict=True):
        assert np.array_equal(got, want)
    if slack > 0:  # all picked in the kernel, in order
        assert alone == [] and np.array_equal(rows, ref[0])
    else:  # the rows that did not fit picked alone
        assert len(alone) == 1 and 0 < alone[0] < 29


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_ranks_equal_a_full_sort(k):
    """cpukernels.top_ranks (the k best of each query, by insertion) against
    np.lexsort of every candidate by (query, distance, relevant, index), on
    candidates with many tied distances, queries with fewer than k of them,
    and indices in any order."""

    rng = np.random.default_rng(k)
    q = np.sort(rng.integers(0, 40, 600))
    v = rng.integers(0, 4, 600) / 4.0
    rel = rng.random(600) < 0.3
    c = rng.permutation(600)  # unique within a query, as index columns are
    rank = np.empty(600, dtype=np.int64)
    cpukernels.top_ranks(q, c, v, rel, k, rank)
    order = np.lexsort((c, rel, v, q))
    expected = np.empty(600, dtype=np.int64)
    expected[order] = np.arange(600) - np.searchsorted(q[order], q[order], side="left")
    expected[expected >= k] = -1
    assert np.array_equal(rank, expected)


def test_scores_step_by_hand():
    """Step 6 alone on hand-made counts, radii 0, 1, 2, β = 2. Query A (2
    relevant) retrieves 0, 1, 3 with tp 0, 1, 2; query B (none relevant)
    retrieves 0, 0, 2. P: A 1, 1, 2/3; B 1, 1, 0. R: A 0, 1/2, 1; B 1, 1, 1.
    F1 = 2tp/(ret+rel): A 0, 2/3, 4/5; B 1, 1, 0 (both empty: 1).
    Fβ = 5tp/(ret+4rel): A 0, 5/9, 10/11; B 1, 1, 0."""
    x = np.eye(2, dtype=np.float32)
    acc, _ = start_sweep(x, ["A", "C"], x, ["A", "B"], "cosine", [0.0, 1.0, 2.0], beta=2.0)
    totals = acc.sets[None]
    t = metrics._Tile(0, 2, raw=None)
    t.cum = np.array([[0.0, 1.0, 3.0], [0.0, 0.0, 2.0]])
    t.tp = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    part = metrics._Part.of(np.ones(2, dtype=bool), 0, 2)
    totals.add_scores(t, part, np.array([2.0, 0.0]), np.empty((2, 3)))
    np.testing.assert_allclose(totals.sums["precision"], [2, 2, 2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(totals.sums["recall"], [1, 1.5, 2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(totals.sums["f1"], [1, 5 / 3, 4 / 5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(totals.sums["fbeta"], [1, 14 / 9, 10 / 11], rtol=0, atol=1e-15)
    assert totals.tp_sum.tolist() == [0, 1, 2] and totals.ret_sum.tolist() == [0, 1, 5]


@pytest.mark.parametrize("distance", ["cosine", "hamming"])
def test_top_step_keeps_the_exact_top_k(distance):
    """Steps 1, 2, 4 and 7 (the top k) tile by tile, against a full sort."""
    rng = np.random.default_rng(8)
    if distance == "hamming":
        x, bits = np.packbits(rng.integers(0, 2, (60, 16), dtype=np.uint8), axis=1), 16
        radii = metrics.radius_grid("hamming", bits=16, max_radius=0.25)  # many k-th beyond
    else:
        x, bits = rng.standard_normal((60, 8)).astype(np.float32), None
        radii = metrics.radius_grid("cosine", step=0.05, max_radius=0.5)
    g = rng.integers(0, 20, 60)
    acc, tiles = start_sweep(x, g, x, g, distance, radii, bits=bits, top_k=4, tile_rows=16)
    for start, stop, raw, finish in tiles:
        t = metrics._Tile(start, stop, raw)
        parts = {None: metrics._Part.of(acc.sets[None].mask, start, stop)}
        acc.count(t, finish, parts)
        acc.relevant(t, parts)
        parts[None].lowest = acc.p.R + 1  # no dissimilar candidates: the top k alone
        acc.top(acc.candidates(t, parts))
    d = dist.pairwise(x, x, distance, bits=bits, device="cpu").astype(np.float64)
    k = acc.topk_d.shape[1]  # max(4, the largest group)
    assert k == max(4, np.bincount(g).max())
    assert np.array_equal(acc.topk_d, np.sort(d, axis=1)[:, :k])


# --------------------------------------------------------------------------- query sets


def assert_same_result(a, b):
    """Every field of two results, bit for bit."""
    assert a.queries == b.queries and a.distance == b.distance and a.beta == b.beta
    assert np.array_equal(a.radii, b.radii)
    for k in ("precision", "recall", "f1", "fbeta", "tp", "fp", "fn"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
        assert getattr(a, k).dtype == getattr(b, k).dtype, k
    for k in ("similar_hist", "dissimilar_hist"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.distance_stats() == b.distance_stats()
    assert a.ranked() == b.ranked()
    assert a.best() == b.best()
    assert a.table().equals(b.table())


@pytest.mark.parametrize("backend", ["numpy", "shim"])
@pytest.mark.parametrize("distance", ["cosine", "hamming"])
def test_query_sets_equal_separate_sweeps(distance, backend, monkeypatch):
    """One pass scoring ``all`` (the first n queries, each in the index) and
    ``distractors`` (every query; the last 30 are never indexed and have nothing
    relevant) gives each, bit for bit, what a separate sweep gives. Sizes such
    that ``all`` ends inside a chunk of the binning, where a matrix-vector
    product over the whole chunk would round some row sums differently."""
    if backend == "shim":
        use_numpy_shim(monkeypatch)
    rng = np.random.default_rng(9)
    if distance == "hamming":
        codes = rng.integers(0, 2, (150, 64), dtype=np.uint8)
        g = rng.integers(0, 150, 1030)
        x, bits = np.packbits(codes[g] ^ (rng.random((1030, 64)) < 0.1), axis=1), 64
    else:
        x, g = clustered(148, 6, 8, 2.5, seed=9)  # 1036 rows
        x, g, bits = x[:1030], g[:1030], None
    radii = metrics.radius_grid(distance, bits=bits)
    for n, excl in ((1000, False), (1000, True), (1030, False)):  # the last: no distractors
        qself = np.where(np.arange(1030) < n, np.arange(1030), -1)
        groups = np.where(np.arange(1030) < n, g, -1 - np.arange(1030))  # distractors: alone
        kw = dict(bits=bits, exclude_self=excl, beta=2.0, device="cpu")
        index, ig = x[:n], groups[:n]
        sets = {"all": np.arange(n), "distractors": np.ones(1030, dtype=bool)}
        both = metrics.sweep(
            index, ig, x, groups, distance, radii, query_self=qself, query_sets=sets, **kw
        )
        assert list(both) == ["all", "distractors"]
        separate = {
            "all": metrics.sweep(index, ig, index, ig, distance, radii, query_self=qself[:n], **kw),
            "distractors": metrics.sweep(
                index, ig, x, groups, distance, radii, query_self=qself, **kw
            ),
        }
        for name, result in both.items():
            assert_same_result(result, separate[name])
        assert both["all"].seconds == both["distractors"].seconds > 0


@SETTINGS
@given(problems(), st.integers(0, 2**32 - 1))
def test_any_query_set_matches_brute_force(p, seed):
    """Random query sets (masks and positions, any order) scored in one pass:
    each as the brute force scores just its queries (on the same distances: a
    set's separate sweep would put its queries in other matrix-product blocks,
    whose rounding may differ in the last bit)."""
    nq = len(p["queries"])
    rng = np.random.default_rng(seed)
    sets = {
        "mask": rng.random(nq) < 0.5,
        "positions": rng.permutation(nq)[: rng.integers(1, nq + 1)],
    }
    if not sets["mask"].any():
        sets["mask"][rng.integers(nq)] = True
    results = sweep_problem(p, query_sets=sets)
    for name, chosen in sets.items():
        rows = np.flatnonzero(chosen) if chosen.dtype == bool else np.sort(chosen)
        r = results[name]
        args = (p["index"], p["ig"], p["queries"], p["qg"], p["distance"], p["radii"])
        ref, counts, d = brute_force(
            *args, bits=p["bits"], qself=p["qself"], excl=p["excl"], rows=rows
        )
        assert_matches(r, ref, counts)
        assert r.queries == rows.size
        sim, dis = brute_pairs(d, p["ig"], p["qg"][rows], p["qself"][rows])
        for block, values in ((r.similar, sim), (r.dissimilar, dis)):
            assert block["count"] == len(values)
            if len(values):
                assert block["min"] == values.min() and block["max"] == values.max()
                assert block["mean"] == pytest.approx(values.mean(), rel=1e-6, abs=1e-9)
        # the sweep's k comes from every query's relevant count, not just the set's
        others = (p["ig"][None, :] == p["qg"][:, None]).sum(axis=1) - (p["qself"] >= 0)
        k = max(p["top_k"], int(others.max()))
        expected = brute_ranked(d, p["ig"], p["qg"][rows], p["qself"][rows], k)
        for key, value in expected.items():
            assert r.ranked()[key] == (None if value is None else pytest.approx(value, abs=1e-12))


def test_query_sets_reject_bad_sets():
    x = np.eye(4, dtype=np.float32)
    g = np.arange(4)
    for sets, words in (
        ({"a": []}, "'a' has no queries"),
        ({"b": np.zeros(4, dtype=bool)}, "'b' has no queries"),
        ({"c": [0, 4]}, "'c': positions must lie in 0..3"),
        ({"d": [1, 1]}, "'d' repeats a query"),
        ({"e": np.ones(3, dtype=bool)}, "'e': a mask needs 4 flags"),
        ({"f": [0.5]}, "'f': positions must be integers"),
        ({}, "names no set"),
    ):
        with pytest.raises(ValueError, match=words):
            metrics.sweep(x, g, x, g, "cosine", [0.1], device="cpu", query_sets=sets)


def test_each_query_set_finds_its_own_nearest_dissimilar_pair():
    """Two one-query sets in one tile, top 1: q0 = 0 has its nearest dissimilar
    image at 0.5, q1 = 100 at 3; q1's own candidates (its nearest: itself) must
    reach 3, not stop at q0's 0.5."""
    index = np.array([[0.0], [100.0], [0.5], [103.0]], dtype=np.float32)
    ig = np.array(["A", "B", "C", "D"])
    radii = metrics.radius_grid("euclidean", step=0.25, max_radius=200.0)
    sets = {"q0": [0], "q1": [1]}
    r = metrics.sweep(
        index, ig, index[:2], ig[:2], "euclidean", radii, query_self=[0, 1], top_k=1,
        device="cpu", query_sets=sets,
    )  # fmt: skip
    d = dist.pairwise(index[:2], index, "euclidean", device="cpu")
    assert r["q0"].dissimilar["min"] == d[0, 2] and r["q1"].dissimilar["min"] == d[1, 3]
    assert r["q0"].dissimilar["max"] == d[0, 3] and r["q1"].dissimilar["max"] == d[1, 0]
    assert r["q0"].queries == r["q1"].queries == 1


def test_relevant_pairs_by_hand():
    # index: a, b, a; query 0 is index row 0 itself, query 1 is another "a",
    # query 2 belongs to no indexed group
    rows, cols = metrics.relevant_pairs(["a", "b", "a"], ["a", "a", "c"], [0, -1, -1])
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [2, 0, 2]


@pytest.mark.parametrize("module", ["cpukernels", "cpuoutcomes", "phash_kernels"])
def test_kernels_reached_from_python_are_cached(module):
    """A kernel that Python code calls (a public one, or one named in the
    module's plain functions) is cached on disk: an uncached one compiles
    again in every job, seconds each (an uncached serial kernel once took
    the default run's hamming jobs from 0.9 to 6.3 s)."""
    import importlib
    import inspect
    import re

    from numba.core.registry import CPUDispatcher

    module_name = f"risbench.{module}"
    mod = importlib.import_module(module_name)
    kernels = {n: o for n, o in vars(mod).items() if isinstance(o, CPUDispatcher)}
    plain = [f for f in vars(mod).values() if inspect.isfunction(f) and f.__module__ == module_name]
    sources = "\n".join(inspect.getsource(f) for f in plain)
    reached = {n for n in kernels if not n.startswith("_") or re.search(rf"\b{n}\b", sources)}
    assert reached
    uncached = sorted(n for n in reached if type(kernels[n]._cache).__name__ != "FunctionCache")
    assert not uncached
