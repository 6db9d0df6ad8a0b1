"""Per-query outcomes (risbench.outcomes) against a brute-force loop and against the
sweep's own table; the failures table on a hand-made case; the target-precision
default is the schema's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_metrics import use_numpy_shim
from test_protocols import catalog_of

from risbench import (
    cli,
    distance,
    failures,
    metrics,
    operating,
    outcomes,
    protocols,
    report,
    store,
)
from risbench.results import QUERY_COLUMNS, BenchmarkStats, RunIndex

ROOT = Path(__file__).resolve().parents[1]


def brute(d, ig, qg, query_self, radius, exclude_self):
    """Per query, from the full distance matrix ``d`` (float64) and the group labels:
    tp, fp, fn at ``radius``; rank of the first relevant other image (ties:
    non-relevant first, then index); nearest relevant and non-relevant (first
    index among equals). Written as loops, independently of the module."""
    rows = []
    for q in range(d.shape[0]):
        own = query_self[q]
        relevant = ig == qg[q]
        retrieved = d[q] <= radius
        if exclude_self and own >= 0:
            relevant = relevant.copy()
            retrieved = retrieved.copy()
            relevant[own] = retrieved[own] = False
        tp = int((relevant & retrieved).sum())
        ranked = sorted((d[q, i], bool(ig[i] == qg[q]), i) for i in range(d.shape[1]) if i != own)
        rank = next((j + 1 for j, (_, rel, _) in enumerate(ranked) if rel), None)
        near_rel = next(((v, i) for v, rel, i in sorted(ranked) if rel), (np.nan, -1))
        near_non = next(((v, i) for v, rel, i in sorted(ranked) if not rel), (np.nan, -1))
        rows.append(
            (tp, int(retrieved.sum()) - tp, int(relevant.sum()) - tp, rank, *near_rel, *near_non)
        )
    return rows


def problem(kind, seed):
    """Random index and queries in a few groups, some rows repeated (distance 0
    ties), queries partly in the index (query_self) and partly not."""
    rng = np.random.default_rng(seed)
    n, extra = 40, 9
    ig = rng.integers(0, 6, n)
    if kind == "hamming":
        index = rng.integers(0, 256, (n, 2), dtype=np.uint8)  # 16 bits: many ties
        others = rng.integers(0, 256, (extra, 2), dtype=np.uint8)
    elif kind == "rv":
        index = rng.integers(0, 256, (n, 40), dtype=np.uint8)  # 40-byte RV digests
        others = rng.integers(0, 256, (extra, 40), dtype=np.uint8)
    else:
        index = rng.standard_normal((n, 5)).astype(np.float32)
        others = rng.standard_normal((extra, 5)).astype(np.float32)
    index[7] = index[3]  # identical rows
    queries = np.concatenate([index[:25], others])
    qg = np.concatenate([ig[:25], rng.integers(0, 6, extra - 2), [6, 7]])  # 6, 7: no relevant
    query_self = np.concatenate([np.arange(25), np.full(extra, -1)])
    return index, ig, queries, qg, query_self


@pytest.mark.parametrize("kind", ["hamming", "cosine", "angular", "euclidean", "rv"])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("path", ["kernel", "arrays"])
@pytest.mark.parametrize("tile_mb", [0.001, 1])
def test_outcomes_equal_a_brute_force_loop(kind, exclude_self, path, tile_mb, monkeypatch):
    """The CPU kernel (cpuoutcomes) or the GPU's array code run on NumPy, on
    tiles of a few rows or one tile."""
    if path == "arrays":
        use_numpy_shim(monkeypatch)
    index, ig, queries, qg, query_self = problem(kind, seed=3)
    bits = 16 if kind == "hamming" else None
    d = distance.pairwise(queries, index, kind, bits=bits).astype(np.float64)
    # radii: a grid value (hamming: k/bits) and a value between computed distances
    at = [5 / 16, 7 / 16] if kind == "hamming" else [float(np.quantile(d, 0.1)), 0.5]
    found = outcomes.query_outcomes(
        index, ig, queries, qg, kind, at, bits=bits, query_self=query_self,
        exclude_self=exclude_self, tile_mb=tile_mb, device="cpu",
    )  # fmt: skip
    for k, radius in enumerate(at):
        expected = brute(d, ig, qg, query_self, radius, exclude_self)
        got = zip(found["tp"][:, k], found["fp"][:, k], found["fn"][:, k], strict=True)
        assert [tuple(int(v) for v in row) for row in got] == [e[:3] for e in expected]
    rank = [r if r else None for r in found["first_relevant_rank"]]
    assert rank == [e[3] for e in expected]
    np.testing.assert_array_equal(found["nearest_relevant"], [e[4] for e in expected])
    np.testing.assert_array_equal(found["nearest_relevant_index"], [e[5] for e in expected])
    np.testing.assert_array_equal(found["nearest_nonrelevant"], [e[6] for e in expected])
    np.testing.assert_array_equal(found["nearest_nonrelevant_index"], [e[7] for e in expected])
    assert (found["first_relevant_rank"][25:] == 0).any()  # a query with nothing relevant


@pytest.mark.parametrize("kind", ["hamming", "cosine", "angular", "euclidean", "rv"])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("path", ["kernel", "arrays"])
def test_a_sweep_records_the_outcomes_of_a_separate_pass(kind, exclude_self, path, monkeypatch):
    """sweep(per_query=True) read at grid radii equals query_outcomes at them,
    every array, for every query and for query sets (a prefix, as protocol
    all, and every third query), on tiles of 4 rows."""
    if path == "arrays":
        use_numpy_shim(monkeypatch)
    index, ig, queries, qg, query_self = problem(kind, seed=4)
    bits = 16 if kind == "hamming" else None
    radii = metrics.radius_grid(kind, bits=bits, max_radius=3.0 if kind == "euclidean" else None)
    sets = {"every": np.arange(len(queries)), "prefix": np.arange(25), "third": np.arange(0, 34, 3)}
    kw = dict(bits=bits, query_self=query_self, exclude_self=exclude_self, device="cpu")
    swept = metrics.sweep(
        index, ig, queries, qg, kind, radii, query_sets=sets, tile_rows=4, per_query=True, **kw
    )
    at = [swept["every"].best()["radius"], radii[len(radii) // 3], radii[-1]]
    expected = outcomes.query_outcomes(index, ig, queries, qg, kind, at, **kw)
    for name, rows in sets.items():
        got = swept[name].per_query.at(at)
        assert set(got) == set(expected)
        for column, value in expected.items():
            np.testing.assert_array_equal(got[column], value[rows], err_msg=f"{name} {column}")
    with pytest.raises(ValueError, match="sweep's radii"):
        swept["every"].per_query.at([(radii[0] + radii[1]) / 2])
    # the counts kept at two radii only: those read as before, the others refused
    swept["every"].per_query.recorder.keep(at[1:])
    assert swept["third"].per_query.recorder.cum.shape[1] == 2
    got = swept["third"].per_query.at([at[2], at[1]])
    for column, value in expected.items():
        value = value[sets["third"]]
        np.testing.assert_array_equal(got[column], value[:, [2, 1]] if value.ndim == 2 else value)
    dropped = next(r for r in radii if r not in at[1:])
    with pytest.raises(ValueError, match="sweep's radii"):
        swept["prefix"].per_query.at([dropped])


def edge_tile(dtype, rng):
    """A raw tile of few distinct values (ties everywhere) with the edges of the
    kernel's hidden columns: floats with -0.0 and inf (a row all inf, a row
    whose nearest relevant pair is inf), counts with the type's largest value
    (a row of it only); rows with everything hidden, with nothing relevant,
    without an own pair; relevant pairs in no order."""
    rows, n = 12, 9
    if dtype == np.uint16:
        top = np.iinfo(dtype).max
        x = rng.choice(np.array([0, 1, 2, top], dtype), (rows, n))
        x[3] = top
    else:
        x = rng.choice(np.array([0.0, -0.0, 0.25, 0.5, np.inf], dtype), (rows, n))
        x[3] = np.inf
        x[4, [1, 5]] = np.inf
    relevant = [sorted(rng.choice(n, rng.integers(0, 4), replace=False), reverse=True) for _ in x]
    relevant[4], relevant[6], relevant[7] = [5, 1], [], list(range(8))
    own = rng.integers(-1, n, rows)
    own[7] = 8  # everything hidden
    for r, cols in enumerate(relevant):
        own[r] = -1 if own[r] in cols else own[r]
    rows_of = np.repeat(np.arange(rows), [len(c) for c in relevant])
    cols = np.concatenate([np.asarray(c, np.int64) for c in relevant])
    return x, rows_of, cols, own


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_outcome_kernel_equals_the_array_code_on_edge_tiles(dtype, threads, monkeypatch):
    """cpuoutcomes.outcome_rows against the array code (outcomes._Chunk) on
    hand-made raw tiles: every number the same, queries from row 3 on."""
    from risbench import cpuoutcomes

    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    rng = np.random.default_rng(11)
    for _ in range(20):
        x, rows, cols, own = edge_tile(dtype, rng)
        q0, nq = 3, len(x) + 3
        rows = rows + q0
        query_self = np.concatenate([np.full(q0, -1), own])
        ptr = metrics.csr_pointers(rows, nq)
        limits = [0, 2] if dtype == np.uint16 else [0.0, 0.25, np.inf]
        chunk = outcomes._Chunk(x, q0, nq, rows, cols, ptr, query_self, np)
        expected = chunk.found(limits)
        tile = x.copy()
        got = cpuoutcomes.outcome_rows(tile, q0, limits, (ptr, cols), query_self)
        np.testing.assert_array_equal(tile, x)  # (the hidden values put back)
        assert set(got) == set(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def separate_frame(catalog, matrices, protocol, distance, radius, **options):
    """A protocol's outcomes frame from a pass of its own over its pairs
    (query_outcomes), not from a sweep's records."""
    bits = options.pop("bits", None)
    inputs = protocols.sweep_inputs(catalog, matrices, protocol, distance, bits=bits)
    del inputs["radii"]
    found = outcomes.query_outcomes(**inputs, distance=distance, at=[radius], **options)
    chosen = protocols.select(catalog, protocol)
    return outcomes.frame(found, 0, catalog, chosen["index"], chosen["queries"])


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_per_query_sums_are_the_sweeps_table_at_the_best_radius(binary, exclude_self):
    catalog, matrices = catalog_of(6, 3, 4 if binary else 8, binary=binary, seed=5)
    metric = "hamming" if binary else "cosine"
    names = ["all", "distractors", "single-blur", "single-original"]
    options = {"exclude_self": exclude_self, "tile_mb": 0.01, "device": "cpu"}
    swept = protocols.run_many(catalog, matrices, names, metric, per_query=True, **options)
    best = {name: result.best()["radius"] for name, result in swept.items()}
    frames = outcomes.protocol_frames(catalog, swept, best)
    shared = swept["all"].per_query.recorder  # (one sweep, its counts at the best radii)
    assert shared is swept["distractors"].per_query.recorder
    assert shared.cum.shape[1] == len({best["all"], best["distractors"]})
    assert list(frames) == names
    for name, result in swept.items():
        frame = frames[name]
        separate = separate_frame(catalog, matrices, name, metric, best[name], **options)
        pd.testing.assert_frame_equal(frame, separate)
        assert list(frame.columns) == list(QUERY_COLUMNS)
        assert len(frame) == result.queries
        row = result.table().set_index("radius").loc[best[name]]
        assert [int(frame[c].sum()) for c in ("tp", "fp", "fn")] == [
            row.tp,
            row.fp,
            row.fn,
        ], name
    queries = protocols.select(catalog, "distractors")["queries"]
    assert frames["distractors"]["image_id"].tolist() == catalog["image_id"][queries].tolist()
    distractor = frames["distractors"][frames["distractors"]["image_id"].str.startswith("d")]
    assert distractor["nearest_relevant_image_id"].isna().all()
    assert distractor["first_relevant_rank"].isna().all()
    blur = frames["single-blur"]  # its one relevant image is its original
    assert (blur["nearest_relevant_image_id"] == blur["image_id"]).all()
    assert (blur["nearest_relevant_variant"] == "original").all()


def test_frames_need_a_sweep_that_recorded_its_queries():
    catalog, matrices = catalog_of(4, 3, 8, binary=False, seed=5)
    swept = protocols.run_many(catalog, matrices, ["all"], "cosine", device="cpu")
    with pytest.raises(ValueError, match="protocol all recorded no per-query outcomes"):
        outcomes.protocol_frames(catalog, swept, {"all": swept["all"].best()["radius"]})


def test_target_precision_default_is_the_schemas():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    key = schema["properties"]["benchmark"]["properties"]["target_precisions"]
    assert tuple(key["default"]) == operating.TARGET_PRECISIONS


# --------------------------------------------------------------------------------------
# the failures table


def _outcome(image_id, variant, fn, near, false_id, rank=None):
    return {
        "image_id": image_id,
        "variant": variant,
        "path": f"{variant}/{image_id}.png",
        "tp": 1 - fn,
        "fp": 1 if fn else 0,
        "fn": fn,
        "first_relevant_rank": rank,
        "nearest_relevant_distance": near,
        "nearest_relevant_image_id": image_id,
        "nearest_relevant_variant": "original",
        "nearest_nonrelevant_distance": 0.2,
        "nearest_nonrelevant_image_id": false_id,
        "nearest_nonrelevant_variant": "original",
    }


def test_failures_table_by_hand(tmp_path):
    """Two descriptors (h at two distances), single-blur and single-rotate: the
    missed queries, hardest first, at most ``top`` per group, each descriptor at
    its best distance (Table 3: protocol all)."""
    cases = {
        ("single-blur", "h", "hamming"): [
            _outcome("a", "blur", 1, 0.30, "c", 3),
            _outcome("b", "blur", 0, 0.05, "a", 1),
            _outcome("c", "blur", 1, 0.45, "b", 2),
            _outcome("e", "blur", 1, 0.35, "a", 2),
        ],
        ("single-rotate", "h", "hamming"): [_outcome("a", "rotate", 0, 0.1, "b", 1)],
        ("single-blur", "h", "rv"): [_outcome("a", "blur", 1, 0.9, "b", 5)],
        ("single-blur", "f", "cosine"): [_outcome("b", "blur", 1, 0.2, "a", 2)],
    }
    rows = []
    for (protocol, descriptor, metric), records in cases.items():
        path = tmp_path / f"{protocol}_{descriptor}_{metric}.parquet"
        pd.DataFrame(records, columns=list(QUERY_COLUMNS)).to_parquet(path)
        rows.append(_result(protocol, descriptor, metric, 0.5, path))
    # protocol all decides the best distance: h·hamming (0.7) over h·rv (0.6); f best
    rows += [_result("all", "h", "hamming", 0.7), _result("all", "h", "rv", 0.6)]
    rows += [_result("all", "f", "cosine", 0.9)]
    table = failures.failures_table(pd.DataFrame(rows), top=2)
    got = table[["descriptor", "distance", "variant", "image_id", "missed", "queries"]]
    assert got.values.tolist() == [
        ["f", "cosine", "blur", "b", 1, 1],
        ["h", "hamming", "blur", "c", 3, 4],  # 0.45 before 0.35; a (0.30) cut by top=2
        ["h", "hamming", "blur", "e", 3, 4],
    ]
    assert table["false_match_image_id"].tolist() == ["a", "b", "a"]
    assert table["first_relevant_rank"].tolist() == [2, 2, 2]


def _result(protocol, descriptor, metric, f1, queries=None):
    variant = protocol.removeprefix("single-") if protocol.startswith("single-") else None
    return {
        "protocol": protocol,
        "variant": variant,
        "descriptor": descriptor,
        "distance": metric,
        "kind": "float" if metric == "cosine" else "binary",
        "radius": 0.25,
        "f1": f1,
        "queries_table": None if queries is None else str(queries),
    }


def test_failures_table_without_outcomes_is_empty():
    rows = pd.DataFrame([_result("all", "h", "hamming", 0.7)])
    assert failures.failures_table(rows).empty
    assert list(failures.failures_table(rows).columns) == failures.FAILURE_COLUMNS


def test_thresholds_pick_the_distance_with_the_most_recall_at_each_target():
    def point(target, recall, radius):
        reached = recall > 0
        return {
            "target_precision": target,
            "reached": reached,
            "radius": radius if reached else None,
            "precision": target if reached else None,
            "recall": recall,
        }

    rows = pd.DataFrame(
        [
            {**_result("all", "h", "hamming", 0.7), "operating_points": [point(0.9, 0.5, 0.1),
             point(0.99, 0.0, None)]},
            {**_result("all", "h", "rv", 0.6), "operating_points": [point(0.9, 0.6, 0.2),
             point(0.99, 0.0, None)]},
            {**_result("single-blur", "h", "rv", 0.6), "operating_points": [point(0.9, 1.0, 0.3),
             point(0.99, 1.0, 0.3)]},
        ]
    )  # fmt: skip
    table = report.thresholds_table(rows)
    columns = ["descriptor", "target_precision", "reached", "distance", "radius"]
    assert table[columns].iloc[0].tolist() == ["h", 0.9, True, "rv", 0.2]  # recall 0.6 > 0.5
    # 0.99: reached under single-blur only, not under all: no distance to deploy
    assert table[columns[:3]].iloc[1].tolist() == ["h", 0.99, False]
    assert table[["distance", "radius"]].iloc[1].isna().all() and len(table) == 2
    every = report.operating_table(rows)
    assert len(every) == 6 and every["protocol"].tolist()[:4] == ["all"] * 4


# --------------------------------------------------------------------------------------
# the benchmark command


def test_benchmark_command_writes_outcomes_and_lists_them(tmp_path):
    """`risbench benchmark --queries`, as the rule calls it: each protocol's outcomes
    file, equal to a separate pass's at the stats' best radius, named in the run
    index; a protocol without --queries gets none; --queries of a protocol with no
    table is refused."""
    catalog, matrices = catalog_of(4, 2, 4, binary=True, seed=2)
    args = []
    for variant, rows in catalog.groupby("variant", sort=False):
        rows.drop(columns="row").to_parquet(tmp_path / f"{variant}.parquet")
        attrs = {"descriptor": "h", "kind": "binary", "dim": 32, "variant": variant}
        store.write_store(tmp_path / f"{variant}.zarr", matrices[variant], attrs)
        args += ["--list", f"{variant}={tmp_path / f'{variant}.parquet'}"]
        args += ["--store", f"{variant}={tmp_path / f'{variant}.zarr'}"]
    spec = {"exclude_self": False, "tile_mb": 1, "device": "cpu", "beta": 1.0, "top_k": 3}
    spec["target_precisions"] = [0.5, 0.95]
    base = ["benchmark", "--descriptor", "h", "--distance", "hamming", "--spec", json.dumps(spec)]
    outputs = []
    for protocol in ("all", "distractors", "single-blur"):
        stem = tmp_path / protocol
        outputs += ["--table", f"{protocol}={stem}.parquet", "--stats", f"{protocol}={stem}.json"]
    outputs += ["--queries", f"all={tmp_path / 'all.queries.parquet'}"]
    outputs += ["--queries", f"distractors={tmp_path / 'distractors.queries.parquet'}"]
    cli.main([*base, *args, *outputs, "--run-index", str(tmp_path / "run.json")])
    index = RunIndex.read(tmp_path / "run.json")
    assert index.protocols["all"]["queries"] == str(tmp_path / "all.queries.parquet")
    assert "queries" not in index.protocols["single-blur"]
    stats = {p: BenchmarkStats.read(tmp_path / f"{p}.json") for p in ("all", "distractors")}
    assert [p["target_precision"] for p in stats["all"].operating_points] == [0.5, 0.95]
    radii = {p: s.best["radius"] for p, s in stats.items()}
    for protocol, radius in radii.items():
        written = pd.read_parquet(tmp_path / f"{protocol}.queries.parquet")
        expected = separate_frame(catalog, matrices, protocol, "hamming", radius, bits=32)
        pd.testing.assert_frame_equal(written, expected)
    with pytest.raises(SystemExit, match=r"--queries of \['single-rotate'\]"):
        cli.main([*base, *args, *outputs, "--queries", f"single-rotate={tmp_path / 'x'}"])


def test_outcome_kernels_caches_follow_the_counting_kernels_file():
    """The outcome kernels compile cpukernels' helpers into themselves; numba
    keys a cache on the defining file only, so each cached kernel's stamp
    also holds cpukernels.py's digest (a change there recompiles them). This
    fails if numba's cache internals move and the stamp is no longer set."""
    import hashlib

    from risbench import cpukernels, cpuoutcomes

    digest = hashlib.sha256(Path(cpukernels.__file__).read_bytes()).digest()
    kernels = [cpuoutcomes._float_outcomes, cpuoutcomes._count_shares, cpuoutcomes._min_bits]
    for kernel in kernels:
        assert kernel._cache._cache_file._source_stamp[1] == digest
