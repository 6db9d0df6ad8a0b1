"""`risbench index` / `risbench query` (risbench.imageindex) on the golden photos."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from risbench import cli, distance, hashing, imageindex, metrics, modify
from risbench.results import BenchmarkStats, RunIndex, run_index_path

GOLDEN = Path(__file__).parent / "data" / "golden" / "images"
ORIGINALS = sorted(GOLDEN.glob("*.png"))[:8]
VARIANTS = ("blur", "jpeg", "resize", "crop", "rotate")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """risbench-modified copies of 8 golden photos: {variant: [paths]}, originals first."""
    folder = tmp_path_factory.mktemp("modified")
    out = {"original": [str(p) for p in ORIGINALS]}
    for variant in VARIANTS:
        out[variant] = [
            str(modify.modify_file(variant, src, folder / variant / src.stem)) for src in ORIGINALS
        ]
    return out


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    captured = capsys.readouterr()
    code = exit_.value.code
    if isinstance(code, str):  # SystemExit(message): Python prints it to stderr, exit status 1
        return 1, captured.out, captured.err + code
    return code or 0, captured.out, captured.err


def query_json(index_path, queries, capsys) -> dict:
    code, out, err = run(["query", "--json", str(index_path), *queries], capsys)
    assert code == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["query"] for a in answers] == list(queries)
    return {a["query"]: [(r["image"], r["distance"]) for r in a["results"]] for a in answers}


def modified(photos) -> list[str]:
    return [p for v in VARIANTS for p in photos[v]]


def test_hash_index_finds_what_the_brute_force_sweep_finds(photos, tmp_path, capsys):
    radius = 0.25
    index_path = tmp_path / "dct.index"
    argv = ["index", "--descriptor", "dct", "--radius", str(radius), str(GOLDEN)]
    code, _, err = run([*argv, "-o", str(index_path)], capsys)
    assert code == 0, err
    everything = sorted(str(p) for p in GOLDEN.glob("*.png"))
    queries = modified(photos)
    answers = query_json(index_path, queries, capsys)
    codes = hashing.hash_files(["dct"], everything + queries, progress=False)["dct"]
    d = distance.hamming(codes[len(everything) :], codes[: len(everything)], bits=64)
    found_originals = 0
    for row, query in enumerate(queries):
        within = np.flatnonzero(d[row] <= radius)
        expected = sorted((float(d[row, j]), everything[j]) for j in within)
        assert [(dist_, image) for image, dist_ in answers[query]] == expected
        original = str(GOLDEN / Path(query).with_suffix(".png").name)
        found_originals += original in [image for image, _ in answers[query]]
    # the benchmark's sweep at this radius, each copy relevant to its original only
    groups = [everything.index(str(GOLDEN / Path(q).with_suffix(".png").name)) for q in queries]
    index_codes, query_codes = codes[: len(everything)], codes[len(everything) :]
    swept = metrics.sweep(
        index_codes, np.arange(len(everything)), query_codes, groups, "hamming", [radius], bits=64
    )
    assert found_originals == swept.tp[0]
    assert sum(len(a) for a in answers.values()) == swept.tp[0] + swept.fp[0]
    assert found_originals >= 20  # most of the 40 copies find their original at this radius


def test_text_output_nearest_first(photos, tmp_path, capsys):
    index_path = tmp_path / "phash.index"
    run(["index", "--descriptor", "phash", "--radius", "0.5", *photos["original"],
         "-o", str(index_path)], capsys)  # fmt: skip
    code, out, _ = run(["query", str(index_path), photos["blur"][0]], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(photos["blur"][0] + ": ")
    distances = [float(line.split("\t")[0]) for line in lines[1:]]
    assert distances == sorted(distances) and len(distances) == int(lines[0].split()[1])


def test_rv_index_is_an_exact_scan(photos, tmp_path, capsys):
    radius = 0.15
    index_path = tmp_path / "rv.index"
    run(["index", "--descriptor", "rv", "--radius", str(radius), *photos["original"],
         "-o", str(index_path)], capsys)  # fmt: skip
    queries = photos["jpeg"][:4] + photos["rotate"][:4]
    answers = query_json(index_path, queries, capsys)
    codes = hashing.hash_files(["rv"], photos["original"] + queries, progress=False)["rv"]
    d = distance.rv(codes[8:], codes[:8])
    for row, query in enumerate(queries):
        expected = {photos["original"][j] for j in np.flatnonzero(d[row] <= radius)}
        assert {image for image, _ in answers[query]} == expected
    assert any(answers[q] for q in queries)


def test_cnn_index_matches_the_extracted_features(photos, tmp_path, capsys):
    from risbench import features, store

    name, radius = "mobilenet_v2_features_max_norm_l2", 0.3
    originals, queries = photos["original"][:4], photos["blur"][:4] + photos["crop"][:4]
    index_path = tmp_path / "cnn.index"
    code, _, err = run(["index", "--descriptor", name, "--radius", str(radius), *originals,
                        "-o", str(index_path)], capsys)  # fmt: skip
    assert code == 0, err
    answers = query_json(index_path, queries, capsys)
    # the workflow's extraction (batched, through a store): the benchmark's features
    stores = tmp_path / "stores"
    spec = {"pooling": ["max"], "normalize": ["l2"]}
    features.extract("mobilenet_v2", spec, originals + queries, {name: str(stores / "f.zarr")},
                     workers=0, progress=False)  # fmt: skip
    rows, _ = store.read_store(stores / "f.zarr")
    d = distance.cosine(rows[4:], rows[:4])
    for row, query in enumerate(queries):
        found = dict(answers[query])
        for j, original in enumerate(originals):
            if d[row, j] <= radius - 1e-4:  # away from the boundary: batching rounds
                assert found[original] == pytest.approx(float(d[row, j]), abs=1e-4)
            elif d[row, j] > radius + 1e-4:
                assert original not in found
    pairs = zip(queries, originals * 2, strict=True)
    assert sum(original in dict(answers[q]) for q, original in pairs) >= 4


def test_add_appends_without_rebuilding(photos, tmp_path, capsys):
    index_path = tmp_path / "add.index"
    first, more = photos["original"][:3], photos["original"][3:5]
    run(["index", "--descriptor", "dct", "--radius", "0.2", *first, "-o", str(index_path)], capsys)
    before = imageindex.ImageIndex.load(index_path)
    code, _, err = run(["index", "--add", str(index_path), *more, first[0]], capsys)
    assert code == 0, err
    after = imageindex.ImageIndex.load(index_path)
    assert after.images == before.images + more  # the already indexed first[0] is not doubled
    assert after.radius == 0.2 and after.rows.ntotal == 5
    assert query_json(index_path, [more[1]], capsys)[more[1]][0] == (more[1], 0.0)
    code, _, _ = run(["index", "-o", str(index_path), "--append", photos["original"][5]], capsys)
    assert code == 0 and len(imageindex.ImageIndex.load(index_path).images) == 6


def test_radius_from_a_finished_run(photos, tmp_path, capsys):
    results = tmp_path / "results"
    stats_path = results / "benchmark" / "all" / "dct__hamming.json"
    stats_path.parent.mkdir(parents=True)
    best = {"radius": 0.171875, "precision": 1.0, "recall": 0.5, "f1": 0.66}
    BenchmarkStats("all", "dct", "hamming", "binary", 64, 8, 10, 1.0, best, {}, {}, {}).write(
        stats_path
    )
    table = results / "benchmark" / "all" / "dct__hamming.parquet"
    run_path = Path(run_index_path("dct", "hamming", results))
    run_path.parent.mkdir(parents=True)
    RunIndex("dct", "hamming", {"all": {"table": str(table), "stats": str(stats_path)}}).write(
        run_path
    )
    index_path = tmp_path / "run.index"
    code, _, err = run(["index", "--descriptor", "dct", "--run", str(results),
                        *photos["original"][:2], "-o", str(index_path)], capsys)  # fmt: skip
    assert code == 0, err
    assert imageindex.ImageIndex.load(index_path).radius == 0.171875
    argv = ["index", "--descriptor", "mh", "--run", str(results), photos["original"][0]]
    code, _, err = run([*argv, "-o", str(tmp_path / "mh.index")], capsys)
    assert code == 1 and "mh__hamming.json: no such run index file" in err


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_index(photos, tmp_path, capsys):
    path = tmp_path / "small.index"
    run(["index", "--descriptor", "dct", "--radius", "0.2", *photos["original"][:3],
         "-o", str(path)], capsys)  # fmt: skip
    return path


def test_unreadable_photo_reported_and_the_others_answered(photos, small_index, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    good = photos["original"][1]
    code, out, err = run(["query", "--json", str(small_index), str(broken), good], capsys)
    assert code == 1
    assert f"risbench query: {broken}: " in err and "cannot identify image file" in err
    assert [json.loads(line)["query"] for line in out.splitlines()] == [good]


def test_unreadable_image_skipped_when_indexing(photos, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    path = tmp_path / "skip.index"
    code, _, err = run(["index", "--descriptor", "dct", "--radius", "0.2", str(broken),
                        photos["original"][0], "-o", str(path)], capsys)  # fmt: skip
    assert code == 1 and f"risbench index: {broken}: " in err
    assert imageindex.ImageIndex.load(path).images == [photos["original"][0]]


def test_index_of_another_descriptor_refused(photos, small_index, capsys):
    code, out, err = run(["query", "--descriptor", "phash", str(small_index),
                          photos["original"][0]], capsys)  # fmt: skip
    assert code == 1 and out == ""
    assert "an index of descriptor dct, not phash" in err
    code, _, err = run(["index", "--descriptor", "phash", "--add", str(small_index),
                        photos["original"][4]], capsys)  # fmt: skip
    assert code == 1 and "an index of descriptor dct, not phash" in err


def _edit_header(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as archive:
        header = json.loads(archive.read("header.json"))
        payload = archive.read("faiss.index")
    edit(header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.json", json.dumps(header))
        archive.writestr("faiss.index", payload)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h["versions"].update(risbench="0.0.1"), "built with risbench 0.0.1, this is"),
        (lambda h: h["versions"].update(faiss="1.7.0"), "built with faiss 1.7.0, this is faiss"),
        (lambda h: h.update(format_version=99), "index format version 99, this risbench reads"),
        (
            lambda h: h["descriptor_attrs"]["versions"].update(imagehash="0.1"),
            "index of dct built with other versions (",
        ),
    ],
)
def test_index_of_another_version_refused(photos, small_index, capsys, edit, message):
    _edit_header(small_index, edit)
    code, out, err = run(["query", str(small_index), photos["original"][0]], capsys)
    assert code == 1 and out == "" and message in err


def test_other_bad_requests(photos, small_index, tmp_path, capsys):
    not_index = tmp_path / "x.index"
    not_index.write_text("hello")
    cases = [
        (["query", str(not_index), photos["original"][0]], "not a risbench index file"),
        (["query", str(tmp_path / "none.index"), photos["original"][0]], "no such index file"),
        (
            [
                "index",
                "--descriptor",
                "dct",
                "--radius",
                "0.1",
                photos["original"][0],
                "-o",
                str(small_index),
            ],
            "exists: --append adds images to it",
        ),  # fmt: skip
        (
            ["index", "--descriptor", "dct", photos["original"][0], "-o", str(tmp_path / "a")],
            "give one of --radius or --run",
        ),  # fmt: skip
        (
            [
                "index",
                "--descriptor",
                "nope",
                "--radius",
                "0.1",
                photos["original"][0],
                "-o",
                str(tmp_path / "b"),
            ],
            "unknown descriptor 'nope'",
        ),  # fmt: skip
        (
            [
                "index",
                "--descriptor",
                "dct",
                "--distance",
                "cosine",
                "--radius",
                "0.1",
                photos["original"][0],
                "-o",
                str(tmp_path / "c"),
            ],
            "compared with hamming, not cosine",
        ),
        (
            ["index", "--add", str(small_index), "--radius", "0.3", photos["original"][0]],
            "the distance and radius of an existing index are fixed",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        code, _, err = run(argv, capsys)
        assert code == 1 and message in err, (argv, err)


def test_descriptor_names_resolve_against_built_in_or_config_models():
    assert imageindex.resolve("colorhash") == imageindex.Descriptor("colorhash", "binary", 42)
    assert imageindex.resolve("rv").kind == "rv"
    cnn = imageindex.resolve("efficientnet_lite0_features_avg")
    assert (cnn.kind, cnn.model) == ("float", "efficientnet_lite0")
    models = {"mynet": {"source": "torchvision", "arch": "mobilenet_v2", "weights": "offline",
                        "layers": ["features"], "pooling": ["avg"]}}  # fmt: skip
    mine = imageindex.resolve("mynet_features_avg", models)
    assert (mine.model, mine.spec) == ("mynet", models["mynet"])
    with pytest.raises(ValueError, match="unknown descriptor 'mynet_features_avg'"):
        imageindex.resolve("mynet_features_avg")
    with pytest.raises(ValueError, match="unknown descriptor 'mobilenet_v2_features_max'"):
        imageindex.resolve("mobilenet_v2_features_max", models)  # only the config's models
