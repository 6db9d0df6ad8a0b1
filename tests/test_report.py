"""Table builders and figures on small hand-made benchmark outputs."""

import json

import pandas as pd
import pytest

from risbench import report


def _write(tmp_path, protocol, descriptor, distance, best, dim=64, kind="binary"):
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
    stats = {
        "protocol": protocol,
        "descriptor": descriptor,
        "distance": distance,
        "kind": kind,
        "dim": dim,
        "bytes_per_image": dim // 8 if kind == "binary" else dim * 4,
        "best": {"radius": 0.1, "precision": 0.9, "recall": 0.8, **best},
    }
    path = f"{stem}.json"
    with open(path, "w") as handle:
        json.dump(stats, handle)
    return path


@pytest.fixture
def results(tmp_path):
    paths = [
        _write(tmp_path, "all", "dct", "hamming", {"f1": 0.61}),
        _write(tmp_path, "all", "cnn", "cosine", {"f1": 0.93}, dim=1280, kind="float"),
        _write(tmp_path, "all", "cnn", "euclidean", {"f1": 0.61}, dim=1280, kind="float"),
        _write(tmp_path, "single-original", "dct", "hamming", {"f1": 1.0}),
        _write(tmp_path, "single-rotate", "dct", "hamming", {"f1": 0.4}),
        _write(tmp_path, "single-original", "cnn", "cosine", {"f1": 1.0}, dim=1280, kind="float"),
        _write(tmp_path, "single-rotate", "cnn", "cosine", {"f1": 0.9}, dim=1280, kind="float"),
    ]
    return report.load_results(paths)


def test_table3_best_first_ties_broken_by_name(results):
    table = report.table3(results)
    assert table[["descriptor", "distance"]].values.tolist() == [
        ["cnn", "cosine"],
        ["cnn", "euclidean"],  # 0.61 tie with dct: name order decides
        ["dct", "hamming"],
    ]
    assert table.loc[0, "bytes_per_image"] == 5120
    assert table.loc[2, "dimensions"] == 64


def test_table4_has_paper_columns(results):
    table = report.table4(results)
    assert list(table.columns) == ["descriptor", "distance", "Base", "Rotate", "mean"]
    cnn = table[table.descriptor == "cnn"].iloc[0]
    assert (cnn.Base, cnn.Rotate, cnn["mean"]) == (1.0, 0.9, pytest.approx(0.95))
    assert table.descriptor.tolist() == ["cnn", "dct"]


def test_summarize_writes_tables_and_figure(tmp_path, results):
    stats = sorted(str(p) for p in tmp_path.glob("*/*.json"))
    report.summarize(stats, tables_dir=tmp_path / "t", figures_dir=tmp_path / "f")
    assert (tmp_path / "t" / "table3_all.md").read_text().count("\n") == 5  # header, rule, 3 rows
    figure = tmp_path / "f" / "prf_radius.png"
    assert figure.stat().st_size > 10_000
