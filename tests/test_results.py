"""The benchmark results' one owner: stats JSON, run index, the summary's outputs."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from risbench import metrics, operating, results
from risbench.results import BenchmarkStats, ResultsError, RunIndex

KEYS = [
    "protocol",
    "descriptor",
    "distance",
    "kind",
    "dim",
    "bytes_per_image",
    "queries",
    "seconds",
    "best",
    "distances",
    "ranked",
    "histogram",
    "operating_points",
]


def binary_sweep():
    """Four 8-bit codes in two groups, every image a query (the query itself indexed)."""
    codes = np.array([[0b00000000], [0b00000011], [0b11110000], [0b11111000]], dtype=np.uint8)
    groups = np.array([0, 0, 1, 1])
    radii = metrics.radius_grid("hamming", bits=8)
    return metrics.sweep(
        codes, groups, codes, groups, "hamming", radii, bits=8, query_self=np.arange(4)
    )


def float_sweep():
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.2]], dtype=np.float32)
    groups = np.array([0, 0, 1, 1])
    radii = metrics.radius_grid("cosine")
    return metrics.sweep(vectors, groups, vectors, groups, "cosine", radii, top_k=2)


def test_bytes_per_image_by_hand():
    assert results.bytes_per_image(1280, "float") == 5120  # float32: 4 bytes a value
    assert results.bytes_per_image(8, "binary") == 8  # 64 bits packed in 8 bytes
    assert results.bytes_per_image(72, "binary") == 72  # mh: 576 bits
    assert results.bytes_per_image(40, "rv") == 40  # 40 one-byte RV coefficients


def test_from_sweep_takes_the_sweeps_values():
    sweep = binary_sweep()
    stats = BenchmarkStats.from_sweep(
        sweep,
        protocol="all",
        descriptor="dct",
        distance="hamming",
        kind="binary",
        dim=np.int64(8),
        width=1,
        seconds=0.25,
    )
    # Within a group the codes differ in at most 2 of 8 bits, across groups in 4 or
    # more: radius 2/8 retrieves exactly each query's group, so P = R = F1 = 1.
    assert stats.best["radius"] == pytest.approx(0.25)
    assert (stats.best["precision"], stats.best["recall"], stats.best["f1"]) == (1.0, 1.0, 1.0)
    assert (stats.queries, stats.bytes_per_image, stats.dim) == (4, 1, 8)
    assert type(stats.dim) is int
    assert stats.histogram["similar"] == sweep.similar_hist.tolist()
    assert stats.distances == sweep.distance_stats()
    assert stats.variant is None
    floats = BenchmarkStats.from_sweep(
        float_sweep(),
        protocol="single-blur",
        descriptor="cnn",
        distance="cosine",
        kind="float",
        dim=3,
        width=3,
        seconds=1.0,
    )
    assert floats.bytes_per_image == 12 and floats.variant == "blur"
    assert set(floats.ranked) >= {"recall_at_1", "map_at_k"}
    with pytest.raises(ValueError, match="'hamming' given as 'cosine'"):
        BenchmarkStats.from_sweep(
            sweep,
            protocol="all",
            descriptor="dct",
            distance="cosine",
            kind="binary",
            dim=8,
            width=1,
            seconds=0.0,
        )


def _old_json_default(value):
    """The JSON conversion the benchmark command used before this module."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def test_json_format_is_the_benchmark_commands(tmp_path):
    """Byte for byte what `risbench benchmark` wrote before (its dict, indent 1)."""
    sweep = binary_sweep()
    attrs = {"descriptor": "dct", "kind": "binary", "dim": np.int64(8)}
    width = 1
    reference = {
        "protocol": "all",
        "descriptor": attrs["descriptor"],
        "distance": "hamming",
        "kind": attrs["kind"],
        "dim": attrs["dim"],
        "bytes_per_image": width * (4 if attrs["kind"] == "float" else 1),
        "queries": int(sweep.table()["queries"].iloc[0]),
        "seconds": 0.5,
        "best": sweep.best(),
        "distances": sweep.distance_stats(),
        "ranked": sweep.ranked(),
        "histogram": sweep.histogram().to_dict(orient="list"),
        # by hand: radius 2/8 retrieves exactly each group (self and partner: 8
        # relevant pairs, no false one), the first radius with recall 1
        "operating_points": [
            {
                "target_precision": target,
                "reached": True,
                "radius": 0.25,
                "precision": 1.0,
                "recall": 1.0,
                "tp": 8,
                "fp": 0,
                "fn": 0,
            }
            for target in (0.9, 0.99, 0.999)
        ],
    }
    stats = BenchmarkStats.from_sweep(
        sweep, protocol="all", distance="hamming", width=width, seconds=0.5, **attrs
    )
    path = tmp_path / "dct__hamming.json"
    stats.write(path)
    text = path.read_text()
    assert text == json.dumps(reference, indent=1, default=_old_json_default)
    assert list(json.loads(text)) == KEYS
    assert BenchmarkStats.read(path) == BenchmarkStats(**json.loads(text))


def test_write_converts_numpy_values(tmp_path):
    stats = BenchmarkStats(
        protocol="all",
        descriptor="d",
        distance="euclidean",
        kind="float",
        dim=np.int32(4),
        bytes_per_image=np.int64(16),
        queries=np.int64(3),
        seconds=np.float64(0.5),
        best={"radius": np.float32(0.5), "precision": 1.0, "recall": 0.5, "f1": 2 / 3},
        distances={},
        ranked={},
        histogram={"radius": np.array([0.0, 0.5]), "similar": np.array([1, 2])},
    )
    stats.write(tmp_path / "s.json")
    back = BenchmarkStats.read(tmp_path / "s.json")
    assert (back.dim, back.bytes_per_image, back.queries) == (4, 16, 3)
    assert back.best["radius"] == 0.5 and back.histogram["similar"] == [1, 2]


def _stats_file(tmp_path, drop=(), drop_best=()):
    data = BenchmarkStats.from_sweep(
        binary_sweep(),
        protocol="all",
        descriptor="dct",
        distance="hamming",
        kind="binary",
        dim=8,
        width=1,
        seconds=0.1,
    )
    data = json.loads(data.to_json())
    for key in drop:
        del data[key]
    for key in drop_best:
        del data["best"][key]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    return path


def test_read_names_the_file_and_the_missing_keys(tmp_path):
    path = _stats_file(tmp_path, drop=("histogram", "bytes_per_image"))
    with pytest.raises(
        ResultsError, match=r"broken\.json: .*lacks key\(s\) bytes_per_image, histogram"
    ):
        BenchmarkStats.read(path)
    with pytest.raises(ResultsError, match=r"broken\.json: .*lacks key\(s\) best\.f1"):
        BenchmarkStats.read(_stats_file(tmp_path, drop_best=("f1",)))
    # a stats file from before the operating points: refused, naming the key
    with pytest.raises(ResultsError, match=r"broken\.json: .*lacks key\(s\) operating_points"):
        BenchmarkStats.read(_stats_file(tmp_path, drop=("operating_points",)))
    data = json.loads(_stats_file(tmp_path).read_text())
    del data["operating_points"][1]["radius"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"lacks key\(s\) operating_points\[1\]\.radius"):
        BenchmarkStats.read(path)
    path.write_text('{"protocol": "all", ')
    with pytest.raises(ResultsError, match=r"broken\.json: not a benchmark stats JSON file"):
        BenchmarkStats.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultsError, match=r"broken\.json: a benchmark stats file holds one"):
        BenchmarkStats.read(path)
    with pytest.raises(ResultsError, match=r"nothing\.json: no such benchmark stats file"):
        BenchmarkStats.read(tmp_path / "nothing.json")


# --------------------------------------------------------------------------------------
# the run index


def test_run_index_paths_relative_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = RunIndex(
        "dct",
        "hamming",
        {
            protocol: {
                "table": f"results/benchmark/{protocol}/dct__hamming.parquet",
                "stats": f"results/benchmark/{protocol}/dct__hamming.json",
            }
            for protocol in ("all", "single-rotate-2")
        },
    )
    path = tmp_path / "results" / "benchmark" / "runs" / "dct__hamming.json"
    path.parent.mkdir(parents=True)
    index.write("results/benchmark/runs/dct__hamming.json")
    stored = json.loads(path.read_text())
    assert stored["protocols"]["all"]["stats"] == "../all/dct__hamming.json"
    assert RunIndex.read("results/benchmark/runs/dct__hamming.json") == index
    assert index.stats_paths() == [
        "results/benchmark/all/dct__hamming.json",
        "results/benchmark/single-rotate-2/dct__hamming.json",
    ]
    shutil.copytree(tmp_path / "results", tmp_path / "moved")
    moved = RunIndex.read(tmp_path / "moved" / "benchmark" / "runs" / "dct__hamming.json")
    assert moved.protocols["all"]["table"] == str(
        tmp_path / "moved" / "benchmark" / "all" / "dct__hamming.parquet"
    )


def test_run_index_read_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "x__y.json"
    path.write_text(json.dumps({"descriptor": "x", "distance": "y"}))
    with pytest.raises(ResultsError, match=r"x__y\.json: run index lacks key\(s\) protocols"):
        RunIndex.read(path)
    path.write_text(
        json.dumps({"descriptor": "x", "distance": "y", "protocols": {"all": {"stats": "a"}}})
    )
    with pytest.raises(ResultsError, match=r"x__y\.json: .*lacks key\(s\) protocols\.all\.table"):
        RunIndex.read(path)


# --------------------------------------------------------------------------------------
# what the summary makes

TABLE_FILES = [
    f"results/tables/{name}.{ext}"
    for name in (
        "table3_all",
        "table4_single",
        "distances",
        "ranked",
        "timing",
        "operating_points",
        "thresholds",
        "failures",
        "bytes_f1",
    )
    for ext in ("csv", "md", "html")
]
FIGURE_FILES = [
    f"results/figures/{name}.png"
    for name in (
        "prf_radius",
        "pr_curve",
        "f1_by_modification",
        "distance_histograms",
        "examples",
        "failure_gallery",
        "bytes_f1",
    )
]


def singles(variants):
    return ["all", *(f"single-{v}" for v in variants)]


def test_strength_sweeps_two_strengths_of_one_step():
    variants = ["original", "rotate", "rotate-2", "jpeg", "jpeg-10", "gray", "crop+jpeg-30"]
    # rotate = 5°; jpeg and jpeg-10 are one strength (10 is the default); gray has
    # no strength; a composition is no sweep
    assert results.strength_sweeps(variants) == {"rotate": {"rotate": 5.0, "rotate-2": 2.0}}
    assert results.strength_sweeps(["crop", "crop+jpeg-30", "jpeg-30", "jpeg"]) == {
        "jpeg": {"jpeg-30": 30.0, "jpeg": 10.0}
    }


def test_summary_outputs_robustness_only_with_a_sweep_under_single():
    swept = ["original", "blur", "rotate", "rotate-2"]
    assert results.summary_outputs(swept, singles(swept)) == TABLE_FILES + FIGURE_FILES + [
        "results/figures/robustness.png"
    ]
    assert results.summary_outputs(swept, ["all", "distractors"]) == TABLE_FILES + FIGURE_FILES
    # rotate-2 runs, but not under the single protocol: no curve to draw
    assert not results.wants_robustness(swept, ["all", "single-original", "single-rotate"])
    flat = ["original", "blur", "jpeg", "jpeg-10", "crop+jpeg-30"]
    assert results.summary_outputs(flat, singles(flat)) == TABLE_FILES + FIGURE_FILES
    assert results.summary_outputs(flat, singles(flat), tables_dir="t", figures_dir="f") == [
        p.replace("results/tables", "t").replace("results/figures", "f")
        for p in TABLE_FILES + FIGURE_FILES
    ]


def test_import_and_summary_outputs_need_no_pandas_or_matplotlib():
    code = (
        "import sys\n"
        "from risbench import results\n"
        "heavy = ('numpy', 'pandas', 'matplotlib', 'torch')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "results.summary_outputs(['original', 'rotate', 'rotate-2'], ['single-rotate', "
        "'single-rotate-2'])\n"
        "print(sorted(m for m in heavy[1:] if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "[]"]


# --------------------------------------------------------------------------------------
# operating points


def test_operating_points_by_hand():
    """Six radii; pooled precision tp/(tp+fp): –, 1, 1, 0.95, 0.95, 0.9; recall
    tp/(tp+fn) over 20 relevant pairs: 0, 0.5, 0.6, 0.95, 0.95, 0.9... (tp only grows)."""
    radii = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    tp = [0, 10, 12, 19, 19, 20]
    fp = [0, 0, 0, 1, 1, 2]  # precision 19/20 = 0.95 twice, then 20/22
    fn = [20 - t for t in tp]
    points = operating.operating_points(radii, tp, fp, fn, targets=(0.9, 0.95, 0.99, 1.0))
    assert [p["target_precision"] for p in points] == [0.9, 0.95, 0.99, 1.0]
    # 0.9: 20/22 = 0.909 ≥ 0.9 at radius 0.5, recall 1
    assert points[0] == {
        "target_precision": 0.9,
        "reached": True,
        "radius": 0.5,
        "precision": 20 / 22,
        "recall": 1.0,
        "tp": 20,
        "fp": 2,
        "fn": 0,
    }
    # 0.95: recall 0.95 at radii 0.3 and 0.4: the smallest radius
    assert (points[1]["radius"], points[1]["recall"], points[1]["precision"]) == (0.3, 0.95, 0.95)
    # 0.99 and 1.0: only the radii without a false match (0.1, 0.2; 0.0 retrieves nothing)
    assert (points[2]["radius"], points[2]["recall"], points[2]["fp"]) == (0.2, 0.6, 0)
    assert points[3]["radius"] == 0.2


def test_operating_points_not_reached_is_recorded_never_faked():
    # every radius that retrieves anything has precision 0.5; radius 0 retrieves nothing
    points = operating.operating_points([0, 1, 2], [0, 1, 2], [0, 1, 2], [4, 3, 2], [0.9, 0.5])
    assert points[0] == {
        "target_precision": 0.9,
        "reached": False,
        "radius": None,
        "precision": None,
        "recall": 0.0,
        "tp": None,
        "fp": None,
        "fn": None,
    }
    assert (points[1]["reached"], points[1]["radius"], points[1]["recall"]) == (True, 2.0, 0.5)
    # nothing relevant anywhere: no recall to report
    assert not operating.operating_points([0, 1], [0, 0], [1, 2], [0, 0], [0.5])[0]["reached"]
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        operating.operating_points([0], [1], [0], [0], [0.9, 1.5])
    with pytest.raises(ValueError, match="repeat"):
        operating.operating_points([0], [1], [0], [0], [0.9, 0.9])


def test_operating_points_follow_the_targets_given_to_from_sweep():
    stats = BenchmarkStats.from_sweep(
        binary_sweep(),
        protocol="all",
        descriptor="dct",
        distance="hamming",
        kind="binary",
        dim=8,
        width=1,
        seconds=0.0,
        targets=[0.8],
    )
    # 0.8: radius 4/8 adds 2 false pairs (precision 8/10 = 0.8) but no recall: 2/8 stays
    assert [(p["target_precision"], p["radius"]) for p in stats.operating_points] == [(0.8, 0.25)]


def test_run_index_lists_per_query_outcomes_where_written(tmp_path):
    all_files = {key: str(tmp_path / f"a.{key}") for key in ("table", "stats", "queries")}
    index = RunIndex(
        "dct",
        "hamming",
        {"all": all_files, "single-blur": {"table": "b.parquet", "stats": "b.json"}},
    )
    index.write(tmp_path / "dct__hamming.json")
    back = RunIndex.read(tmp_path / "dct__hamming.json")
    assert back.protocols["all"] == all_files
    assert "queries" not in back.protocols["single-blur"]
