"""The notebook API (risbench.api) on hand-written result files."""

import json
from pathlib import Path

import pandas as pd
import pytest

from risbench import api, imageindex, results
from risbench.results import ResultsError

GOLDEN = Path(__file__).parent / "data" / "golden" / "images"


def test_load_run_reads_every_summary_table(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    for k, name in enumerate(results.TABLES):
        pd.DataFrame({"descriptor": ["dct", "mh"], "f1": [0.5, k / 10]}).to_csv(
            tables / f"{name}.csv", index=False
        )
    loaded = api.load_run(tmp_path)
    assert list(loaded) == list(results.TABLES)
    last = len(results.TABLES) - 1
    assert loaded[results.TABLES[-1]]["f1"].tolist() == [0.5, last / 10]
    (tables / f"{results.TABLES[0]}.csv").unlink()
    with pytest.raises(ResultsError, match=f"{results.TABLES[0]}.csv: no such table"):
        api.load_run(tmp_path)


def _run_index(root: Path, entry: dict) -> None:
    path = Path(results.run_index_path("dct", "hamming", root))
    path.parent.mkdir(parents=True)
    data = {"descriptor": "dct", "distance": "hamming", "protocols": {"all": entry}}
    path.write_text(json.dumps(data))


@pytest.mark.skipif(
    "queries" not in getattr(results, "RUN_KEYS", ()),
    reason="run indexes list per-query outcomes only from engineer D's RunIndex change",
)
def test_outcomes_found_through_the_run_index(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "tp": [1, 0]})
    queries = tmp_path / "benchmark" / "all" / "dct__hamming.queries.parquet"
    queries.parent.mkdir(parents=True)
    frame.to_parquet(queries)
    # paths in a run index are relative to its folder (benchmark/runs)
    entry = {"table": "../all/t.parquet", "stats": "../all/s.json"}
    _run_index(tmp_path, {**entry, "queries": "../all/dct__hamming.queries.parquet"})
    pd.testing.assert_frame_equal(api.outcomes(tmp_path, "dct", "hamming", "all"), frame)
    with pytest.raises(ResultsError, match="no protocol 'single-blur'; it has all"):
        api.outcomes(tmp_path, "dct", "hamming", "single-blur")


def test_outcomes_missing_are_named(tmp_path):
    with pytest.raises(ResultsError, match="dct__hamming.json: no such run index file"):
        api.outcomes(tmp_path, "dct", "hamming")
    _run_index(tmp_path, {"table": "t.parquet", "stats": "s.json"})
    with pytest.raises(ResultsError, match="protocol 'all' lists no per-query outcomes"):
        api.outcomes(tmp_path, "dct", "hamming")


def test_open_index_queries_a_photo(tmp_path):
    photos = sorted(str(p) for p in GOLDEN.glob("*.png"))[:5]
    d = imageindex.resolve("dhash")
    index, failed = imageindex.ImageIndex.build(d, "hamming", 0.0, photos)
    assert failed == {}
    index.save(tmp_path / "i.index")
    opened = api.open_index(tmp_path / "i.index")
    assert opened.query(photos[2]) == [(photos[2], 0.0)]
    with pytest.raises(imageindex.IndexError_, match="an index of descriptor dhash, not dct"):
        api.open_index(tmp_path / "i.index", descriptor="dct")
