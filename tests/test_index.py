"""`risbench index` / `risbench query` (risbench.imageindex) on the golden photos."""

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from risbench import cli, distance, encoders, hashing, imageindex, metrics, modify
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


def finished_run(results: Path, descriptor: str, bits: int, radius: float) -> None:
    """A results folder whose benchmark of ``descriptor`` (hamming) found ``radius`` best."""
    stats_path = results / "benchmark" / "all" / f"{descriptor}__hamming.json"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    best = {"radius": radius, "precision": 1.0, "recall": 0.5, "f1": 0.66}
    BenchmarkStats(
        "all", descriptor, "hamming", "binary", bits, bits // 8, 10, 1.0, best, {}, {}, {}
    ).write(stats_path)
    table = results / "benchmark" / "all" / f"{descriptor}__hamming.parquet"
    run_path = Path(run_index_path(descriptor, "hamming", results))
    run_path.parent.mkdir(parents=True, exist_ok=True)
    protocols = {"all": {"table": str(table), "stats": str(stats_path)}}
    RunIndex(descriptor, "hamming", protocols).write(run_path)


def test_radius_from_a_finished_run(photos, tmp_path, capsys):
    results = tmp_path / "results"
    finished_run(results, "dct", 64, 0.171875)
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


# --------------------------------------------------------------------------- compact codes

SOURCE = "mobilenet_v2_features_max"
# MobileNetV2's offline weights at a small input size (fast on a CPU): a config's models
SMALL = {"mobilenet_v2": {"pooling": ["max"], "normalize": ["none"], "input_size": 96}}


@pytest.fixture(scope="module")
def compact(photos, tmp_path_factory):
    """The source features of the photos (computed as the index computes them: the
    originals in one call, the copies in another), the compress stage's fitted
    encoders (risbench.encoders.fit, as in its job) and their kept files."""
    import yaml

    from risbench import compress

    folder = tmp_path_factory.mktemp("compact")
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"models": SMALL}))
    describer = imageindex._Describer(imageindex.resolve(SOURCE, SMALL))
    originals, queries = photos["original"], modified(photos)
    features = {"originals": describer.rows(originals)[0], "queries": describer.rows(queries)[0]}
    train = np.concatenate(list(features.values()))  # 48 rows: any rows serve this test
    fitted, files = {}, {}
    for spec in ("itq-32", "pca-16", "pq-16"):
        name = compress.descriptor_name(SOURCE, spec)
        method, size = compress.parse_spec(spec)
        fitted[name] = encoders.fit(method, size, train, seed=0, pq_nbits=4)
        source_attrs = {**describer.attrs, "dim": train.shape[1], "variant": "original"}
        job = {"methods": {name: spec}, "split": {"share": 0.25, "seed": 0},
               "pq_nbits": 4, "training_vectors": len(train), "held_out_groups": 0}  # fmt: skip
        files[name] = str(folder / name / "encoder.npz")
        compress.write_encoders({name: fitted[name]}, files, source_attrs, job)
    return {"config": str(config), "features": features, "fitted": fitted, "files": files}


def brute_force(codes_q, codes_i, distance_name: str, bits: int | None) -> np.ndarray:
    """Distances by a plain loop over (query, image) code pairs, float64."""
    out = np.empty((len(codes_q), len(codes_i)))
    for a, q in enumerate(codes_q):
        for b, x in enumerate(codes_i):
            if distance_name == "hamming":
                out[a, b] = np.unpackbits(q ^ x)[:bits].sum() / bits
            elif distance_name == "cosine":
                q64, x64 = q.astype(np.float64), x.astype(np.float64)
                out[a, b] = 1 - q64 @ x64 / (np.linalg.norm(q64) * np.linalg.norm(x64))
            else:
                out[a, b] = np.linalg.norm(q.astype(np.float64) - x.astype(np.float64))
    return out


@pytest.mark.parametrize(
    ("spec", "distance_name", "radius"),
    [("itq32", "hamming", 0.25), ("pca16", "cosine", 0.2), ("pq16", "euclidean", 12.0)],
)
def test_compact_code_index_agrees_with_the_in_job_encoders_codes(
    photos, compact, tmp_path, capsys, spec, distance_name, radius
):
    name = f"{SOURCE}__{spec}"
    index_path = tmp_path / f"{spec}.index"
    code, _, err = run(["index", "--descriptor", name, "--config", compact["config"],
                        "--encoder", compact["files"][name], "--distance", distance_name,
                        "--radius", str(radius), *photos["original"], "-o", str(index_path)],
                       capsys)  # fmt: skip
    assert code == 0, err
    queries = modified(photos)
    answers = query_json(index_path, queries, capsys)
    encode = compact["fitted"][name]  # the encoder as the compress job fitted it
    codes_i, codes_q = (encode(compact["features"][k]) for k in ("originals", "queries"))
    bits = int(spec[3:]) if distance_name == "hamming" else None
    d = brute_force(codes_q, codes_i, distance_name, bits)
    found = 0
    for row, query in enumerate(queries):
        got = dict(answers[query])
        for j, image in enumerate(photos["original"]):
            if d[row, j] <= radius - 1e-6 * max(radius, 1):
                assert got[image] == pytest.approx(d[row, j], abs=1e-6 * max(radius, 1))
            elif d[row, j] > radius + 1e-6 * max(radius, 1):
                assert image not in got
        assert [v for _, v in answers[query]] == sorted(v for _, v in answers[query])
        found += photos["original"][row % 8] in got
    # the benchmark's sweep over the same codes, each copy relevant to its original
    groups = [row % 8 for row in range(len(queries))]
    swept = metrics.sweep(codes_i, np.arange(8), codes_q, groups, distance_name, [radius],
                          bits=bits)  # fmt: skip
    assert found == swept.tp[0] and sum(map(len, answers.values())) == swept.tp[0] + swept.fp[0]
    assert 0 < found  # the radius finds some originals, not none
    header = imageindex.ImageIndex.load(index_path).header
    assert (
        header["encoder"]["sha256"]
        == hashlib.sha256(Path(compact["files"][name]).read_bytes()).hexdigest()
    )
    assert (header["source"], header["encoder"]["source"]) == (SOURCE, SOURCE)


def test_compact_code_encoder_from_a_finished_run(photos, compact, tmp_path, capsys):
    import shutil

    name, results = f"{SOURCE}__itq32", tmp_path / "results"
    finished_run(results, name, 32, 0.1875)
    kept = Path(encoders.encoder_path(name, str(results)))
    kept.parent.mkdir(parents=True)
    shutil.copy(compact["files"][name], kept)
    index_path = tmp_path / "run.index"
    argv = ["index", "--descriptor", name, "--config", compact["config"], "--run", str(results)]
    code, _, err = run([*argv, *photos["original"][:2], "-o", str(index_path)], capsys)
    assert code == 0, err
    index = imageindex.ImageIndex.load(index_path)
    assert index.radius == 0.1875 and index.header["encoder"]["file"] == str(kept)
    assert index.distance == "hamming" and index.rows.d == 32  # FAISS binary: d in bits
    kept.unlink()  # the index keeps its encoder: queries need no results folder
    first = photos["original"][0]
    assert query_json(index_path, [first], capsys)[first][0] == (first, 0.0)


def test_compact_code_refusals(photos, compact, tmp_path, capsys):
    itq, pca = f"{SOURCE}__itq32", f"{SOURCE}__pca16"
    files, config = compact["files"], compact["config"]
    good = tmp_path / "itq.index"
    base = ["index", "--descriptor", itq, "--radius", "0.2", photos["original"][0]]
    code, _, err = run([*base, "--config", config, "--encoder", files[itq], "-o", str(good)],
                       capsys)  # fmt: skip
    assert code == 0, err
    cases = [
        ([*base, "--config", config, "-o", str(tmp_path / "a")],
         f"{itq} is a compact code: give --encoder FILE or --run RESULTS"),
        ([*base, "--config", config, "--encoder", files[pca], "-o", str(tmp_path / "b")],
         f"the encoder of {pca} (source {SOURCE}), not of {itq}"),
        # the built-in MobileNetV2 computes its features at 224 pixels, not 96
        ([*base, "--encoder", files[itq], "-o", str(tmp_path / "c")],
         f"fitted on {SOURCE} features computed with other input_size (96 there, 224 here)"),
        (["index", "--add", str(good), "--encoder", files[pca], photos["original"][1]],
         f"index of {itq} built with encoder sha256 "),
        (["query", "--encoder", files[pca], str(good), photos["original"][1]],
         f"({pca}): another encoder"),
        (["index", "--descriptor", "dct", "--radius", "0.2", "--encoder", files[itq],
          photos["original"][0], "-o", str(tmp_path / "d")],
         "--encoder is for compact codes; dct is not one"),
        (["index", "--descriptor", "dct__itq32", "--radius", "0.2", "--encoder", files[itq],
          photos["original"][0], "-o", str(tmp_path / "e")],
         "dct__itq32: compact codes encode CNN descriptors, dct is a hash"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run(argv, capsys)
        assert code == 1 and message in err, (argv, err)
    # the same encoder is accepted; the index keeps answering without the encoder file
    code, _, err = run(["index", "--add", str(good), "--encoder", files[itq],
                        photos["original"][1]], capsys)  # fmt: skip
    assert code == 0, err
    assert query_json(good, [photos["original"][1]], capsys)[photos["original"][1]][0] == (
        photos["original"][1],
        0.0,
    )
    # an index whose kept encoder was swapped
    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["encoder.npz"] = Path(files[pca]).read_bytes()
    with zipfile.ZipFile(good, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    code, out, err = run(["query", str(good), photos["original"][0]], capsys)
    assert code == 1 and out == ""
    assert "its encoder.npz is not the encoder it was built with (SHA-256" in err
