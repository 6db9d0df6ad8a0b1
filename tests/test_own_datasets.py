"""Bring-your-own data sets (source variants and pairs), built from the demo photos with
modifications made by Pillow (not risbench: their bytes differ from risbench's own), and
the relevance of queries with several references or none."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageFilter
from snakemake.utils import validate
from test_metrics import assert_matches

from risbench import catalog, dataset, files, hashing, metrics, protocols
from risbench import config as risbench_config
from risbench import distance as dist

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden" / "images"
PHOTOS = sorted(GOLDEN.glob("*.png"))[:6]


def config_for(dataset_section: dict, **top) -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["dataset"] = dataset_section
    config["sweeps"] = {}
    config.update(top)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    return config


def pillow_rotate(image):
    return image.rotate(5, resample=Image.BICUBIC, expand=True)


def pillow_blur(image):
    return image.filter(ImageFilter.GaussianBlur(3))


def make_variants(root: Path, photos=PHOTOS) -> Path:
    """originals/ (PNG) plus rotate/ (JPEG) and mycrop/ (PNG), made by Pillow."""
    for name in ("originals", "rotate", "mycrop"):
        (root / name).mkdir(parents=True)
    for k, photo in enumerate(photos):
        with Image.open(photo) as image:
            image = image.convert("RGB")
            if k == 0:  # a relative link, as in .test/variants
                (root / "originals" / photo.name).symlink_to(
                    os.path.relpath(photo, root / "originals")
                )
            else:
                image.save(root / "originals" / photo.name)
            pillow_rotate(image).save(root / "rotate" / f"{photo.stem}.jpg", quality=80)
            w, h = image.size
            image.crop((w // 10, h // 10, w, h)).save(root / "mycrop" / photo.name)
    return root


def run_stage(spec: dict, out: Path) -> dataset.Built:
    return dataset.run_stage(
        spec,
        images_dir=out / "images" / "original",
        manifest=out / "manifest.parquet",
        image_list=out / "images" / "original.parquet",
        reports={"skipped": out / "skipped.csv", "duplicates": None, "near_duplicates": None},
        variants_root=out / "images",
    )


def catalog_of(out: Path, variants: list[str]) -> pd.DataFrame:
    return catalog.assemble([pd.read_parquet(out / "images" / f"{v}.parquet") for v in variants])


def dhash_matrices(images: pd.DataFrame) -> dict:
    return {
        v: np.stack([np.frombuffer(hashing.hash_file("dhash", p), np.uint8) for p in rows["path"]])
        for v, rows in images.groupby("variant", sort=False)
    }


# ------------------------------------------------------------------------------ variants


def test_variants_config_names_protocols_and_no_modify_job(tmp_path):
    folder = make_variants(tmp_path / "set")
    config = config_for({"source": "variants", "folder": str(folder)}, modifications=["blur"])
    risbench_config.check(config)
    assert risbench_config.variants(config) == ["original", "mycrop", "rotate", "blur"]
    assert risbench_config.made_variants(config) == ["blur"]
    assert risbench_config.dataset_variants(config) == ["mycrop", "rotate"]
    singles = [p for p in risbench_config.protocols(config) if p.startswith("single-")]
    assert singles == ["single-original", "single-mycrop", "single-rotate", "single-blur"]


def same_stem_twice(folder: Path) -> None:
    png = folder / "originals" / PHOTOS[1].name
    png.with_suffix(".jpg").write_bytes(png.read_bytes())


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda f: (f / "rotate" / "stranger.jpg").write_bytes(b"x"),
            r"rotate/stranger.jpg: no file",
        ),
        (lambda f: (f / "blur").mkdir(), r"blur.*name of a variant risbench makes"),
        (lambda f: (f / "original").mkdir(), r"original.*name of a variant risbench makes"),
        (lambda f: (f / "bad name").mkdir(), r"variant folder 'bad name'.*may hold only"),
        (same_stem_twice, rf"{PHOTOS[1].stem}.(png|jpg) and .*{PHOTOS[1].stem}.(png|jpg)"),
    ],
)
def test_variants_layout_errors_name_the_file(tmp_path, edit, message):
    folder = make_variants(tmp_path / "set")
    edit(folder)
    config = config_for({"source": "variants", "folder": str(folder)}, modifications=["blur"])
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config)


def test_variants_job_keeps_bytes_and_drops_incomplete_bases(tmp_path):
    folder = make_variants(tmp_path / "set")
    missing, broken = PHOTOS[1].stem, PHOTOS[2].stem
    (folder / "mycrop" / f"{missing}.png").unlink()  # no mycrop copy: base dropped
    (folder / "rotate" / f"{broken}.jpg").write_bytes(b"not a jpeg")  # unreadable: dropped
    spec = {"source": "variants", "folder": str(folder), "distractors": 1}
    run_stage(spec, tmp_path / "out")
    images = catalog_of(tmp_path / "out", ["original", "mycrop", "rotate"])
    kept = [p.stem for p in PHOTOS if p.stem not in (missing, broken)]
    distractor, bases = kept[0], kept[1:]
    original = images[images["variant"] == "original"]
    assert list(original["image_id"]) == kept
    assert list(original["role"]) == ["distractor"] + ["base"] * len(bases)
    for variant, suffix in (("mycrop", "png"), ("rotate", "jpg")):
        rows = images[images["variant"] == variant]
        assert list(rows["image_id"]) == bases and list(rows["group"]) == bases
        assert set(rows["role"]) == {"modified"}
        for row in rows.itertuples():  # the user's exact bytes, not re-encoded
            source = folder / variant / f"{row.image_id}.{suffix}"
            assert files.sha256_file(row.path) == files.sha256_file(source)
    for row in original.itertuples():
        source = folder / "originals" / f"{row.image_id}.png"
        assert files.sha256_file(row.path) == files.sha256_file(source)
        assert not Path(row.path).is_symlink()  # the link's target, not the link
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert (
        "no file with this stem in mycrop/" in reasons[str(folder / "originals" / f"{missing}.png")]
    )
    assert "rotate/ file cannot be used" in reasons[str(folder / "originals" / f"{broken}.png")]
    assert "not an image" in reasons[str(folder / "rotate" / f"{broken}.jpg")]
    # every unused variant file is reported: the distractor's and the dropped bases'
    assert "not a base" in reasons[str(folder / "rotate" / f"{distractor}.jpg")]
    assert "not a base" in reasons[str(folder / "mycrop" / f"{broken}.png")]


def test_variants_single_protocol_table_against_brute_force(tmp_path):
    folder = make_variants(tmp_path / "set")
    run_stage({"source": "variants", "folder": str(folder)}, tmp_path / "out")
    images = catalog_of(tmp_path / "out", ["original", "mycrop", "rotate"])
    matrices = dhash_matrices(images)
    radii = metrics.radius_grid("hamming", bits=64)
    result = protocols.run(images, matrices, "single-rotate", "hamming", device="cpu")
    # by hand: index = the originals, query i = rotate of original i, relevant = i alone
    d = dist.pairwise(matrices["rotate"], matrices["original"], "hamming", bits=64, device="cpu")
    for j, r in enumerate(radii):
        retrieved = d <= r + 1e-9
        tp = np.diag(retrieved)
        precision = np.where(retrieved.sum(1) > 0, tp / np.maximum(retrieved.sum(1), 1), 1.0)
        assert result.tp[j] == tp.sum() and result.fp[j] == (retrieved.sum() - tp.sum())
        assert result.precision[j] == pytest.approx(precision.mean(), abs=1e-12)
        assert result.recall[j] == pytest.approx(tp.mean(), abs=1e-12)


# --------------------------------------------------------------------------------- pairs

# queries by the references they should find: q_rot and q_blur one each, q_two both of
# two references (a side-by-side collage), q_none nothing (a photo not in the index).
PAIRS_TRUTH = [
    ("q_rot", PHOTOS[0].stem),
    ("q_blur", PHOTOS[1].stem),
    ("q_two", PHOTOS[2].stem),
    ("q_two", PHOTOS[3].stem),
    ("q_none", ""),
]


def make_pairs(root: Path, truth=PAIRS_TRUTH) -> dict:
    refs, queries = root / "references", root / "queries"
    refs.mkdir(parents=True)
    queries.mkdir()
    for photo in PHOTOS[:4]:
        with Image.open(photo) as image:
            image.convert("RGB").save(refs / f"{photo.stem}.jpg", quality=90)
    open_rgb = lambda p: Image.open(p).convert("RGB")  # noqa: E731
    pillow_rotate(open_rgb(PHOTOS[0])).save(queries / "q_rot.jpg", quality=75)
    pillow_blur(open_rgb(PHOTOS[1])).save(queries / "q_blur.png")
    left, right = open_rgb(PHOTOS[2]), open_rgb(PHOTOS[3]).resize(open_rgb(PHOTOS[2]).size)
    collage = Image.new("RGB", (2 * left.width, left.height))
    collage.paste(left, (0, 0))
    collage.paste(right, (left.width, 0))
    collage.save(queries / "q_two.png")
    open_rgb(PHOTOS[5]).save(queries / "q_none.png")
    open_rgb(PHOTOS[4]).save(queries / "q_unlisted.png")  # not in the ground truth
    gt = root / "ground_truth.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in truth))
    return {
        "source": "pairs",
        "references": str(refs),
        "queries": str(queries),
        "ground_truth": str(gt),
    }


def test_pairs_config_variants_and_protocols(tmp_path):
    spec = make_pairs(tmp_path / "set")
    config = config_for(spec, modifications=[])
    risbench_config.check(config)
    assert risbench_config.variants(config) == ["original", "queries"]
    assert risbench_config.protocols(config) == ["queries"]
    config = config_for(spec, modifications=["blur"])
    assert risbench_config.variants(config) == ["original", "queries", "blur"]
    assert risbench_config.protocols(config) == ["queries", "all", "single-original", "single-blur"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "query,reference\nq_rot,x\n",
            r"ground_truth.csv, line 1: the header lacks column\(s\) query_id, reference_id",
        ),
        (
            "query_id,reference_id\nq_rot,{r0}\nq_rot,{r0}\n",
            r"ground_truth.csv, line 3: repeats line 2",
        ),
        (
            "query_id,reference_id\nq_none,\nq_none,{r0}\n",
            r"line 3: query 'q_none' has a reference here and none at line 2",
        ),
        (
            "query_id,reference_id\nq_rot,{r0}\nq_rot,\n",
            r"line 3: query 'q_rot' has no reference here and one at line 2",
        ),
        (
            "query_id,reference_id\nq_rot,{r0}\nq_gone,{r0}\n",
            r"line 3: 'q_gone' names no file in .*queries",
        ),
        ("query_id,reference_id\nq_rot,R999\n", r"line 2: 'R999' names no file in .*references"),
        ("query_id,reference_id\n,{r0}\n", r"line 2: empty query_id"),
    ],
)
def test_pairs_ground_truth_errors_name_file_and_line(tmp_path, text, message):
    spec = make_pairs(tmp_path / "set")
    Path(spec["ground_truth"]).write_text(text.format(r0=PHOTOS[0].stem))
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config_for(spec, modifications=[]))


@pytest.mark.parametrize("other", ["q_rot.png", "Q_ROT.jpg"])
def test_pairs_rejects_two_files_with_one_id(tmp_path, other):
    spec = make_pairs(tmp_path / "set")
    (Path(spec["queries"]) / other).write_bytes(b"")
    with pytest.raises(risbench_config.ConfigError, match=r"two files with the id '(q_rot|Q_ROT)'"):
        risbench_config.check(config_for(spec, modifications=[]))


def test_pairs_rejects_empty_folders_and_a_split(tmp_path):
    spec = make_pairs(tmp_path / "set")
    for f in Path(spec["queries"]).iterdir():
        f.unlink()
    with pytest.raises(risbench_config.ConfigError, match=r"dataset.queries: .* holds no image"):
        risbench_config.check(config_for(spec, modifications=[]))
    spec = make_pairs(tmp_path / "set2") | {"distractors": 2}
    with pytest.raises(risbench_config.ConfigError, match=r"dataset.distractors = 2: not for"):
        risbench_config.check(config_for(spec, modifications=[]))
    spec = make_pairs(tmp_path / "set3")
    stages = {"stages": [{"bases": 2, "top_k": 1}]}
    with pytest.raises(risbench_config.ConfigError, match=r"screening.stages: not for"):
        risbench_config.check(config_for(spec, modifications=[], screening=stages))
    codes = {"mobilenet_v2_features_avg_norm_none": ["pca-4"]}
    with pytest.raises(risbench_config.ConfigError, match=r"compress: not for"):
        risbench_config.check(config_for(spec, modifications=[], compress=codes))


def brute_force_sets(d, index_groups, query_sets, radii):
    """Mean P, R, F1 and summed tp, fp per radius with plain loops; query q is relevant
    to the index rows whose group is in ``query_sets[q]`` (possibly none)."""
    nq = d.shape[0]
    out = {k: np.zeros(len(radii)) for k in ("precision", "recall", "f1")}
    counts = {k: np.zeros(len(radii), dtype=np.int64) for k in ("tp", "fp", "fn")}
    for q in range(nq):
        relevant = np.array([g in query_sets[q] for g in index_groups])
        for j, r in enumerate(radii):
            retrieved = d[q] <= r
            tp, nret, nrel = (
                int((retrieved & relevant).sum()),
                int(retrieved.sum()),
                int(relevant.sum()),
            )
            p = tp / nret if nret else 1.0
            rc = tp / nrel if nrel else 1.0
            out["precision"][j] += p / nq
            out["recall"][j] += rc / nq
            out["f1"][j] += (2 * p * rc / (p + rc) if p + rc else 0.0) / nq
            counts["tp"][j] += tp
            counts["fp"][j] += nret - tp
            counts["fn"][j] += nrel - tp
    return out, counts


def test_pairs_job_and_queries_protocol_against_brute_force(tmp_path):
    spec = make_pairs(tmp_path / "set")
    out = tmp_path / "out"
    run_stage(spec, out)
    images = catalog_of(out, ["original", "queries"])
    queries = images[images["variant"] == "queries"]
    assert list(queries["image_id"]) == ["q_blur", "q_none", "q_rot", "q_two"]
    assert set(queries["role"]) == {"query"}
    for row in queries.itertuples():  # the user's bytes
        source = next(Path(spec["queries"]).glob(f"{row.image_id}.*"))
        assert files.sha256_file(row.path) == files.sha256_file(source)
    skipped = pd.read_csv(out / "skipped.csv")
    assert (
        "not in the ground truth"
        in skipped.set_index("path").loc[str(Path(spec["queries"]) / "q_unlisted.png"), "reason"]
    )
    chosen = protocols.select(images, "queries")
    assert list(images["variant"].iloc[chosen["index"]]) == ["original"] * 4
    assert np.all(chosen["query_self"] == -1)
    matrices = dhash_matrices(images)
    result = protocols.run(images, matrices, "queries", "hamming", device="cpu")
    refs = [p.stem for p in PHOTOS[:4]]
    wanted = {"q_blur": {refs[1]}, "q_none": set(), "q_rot": {refs[0]}, "q_two": {refs[2], refs[3]}}
    d = dist.pairwise(matrices["queries"], matrices["original"], "hamming", bits=64, device="cpu")
    radii = metrics.radius_grid("hamming", bits=64)
    ref, counts = brute_force_sets(
        d.astype(np.float64), refs, [wanted[q] for q in queries["image_id"]], radii
    )
    assert_matches(result, ref | {"fbeta": result.fbeta}, counts)
    assert np.all(result.tp + result.fn == 4)  # 1 + 0 + 1 + 2 relevant pairs


def test_a_query_with_a_missing_reference_is_dropped(tmp_path):
    spec = make_pairs(tmp_path / "set")
    Path(spec["references"], f"{PHOTOS[3].stem}.jpg").write_bytes(b"broken")
    run_stage(spec, tmp_path / "out")
    queries = pd.read_parquet(tmp_path / "out" / "images" / "queries.parquet")
    assert "q_two" not in set(queries["image_id"])
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv").set_index("path")
    reason = skipped.loc[str(Path(spec["queries"]) / "q_two.png"), "reason"]
    assert f"its reference {PHOTOS[3].stem} was skipped" in reason


# ---------------------------------------------------------------- several groups, or none


def test_relevant_pairs_with_several_groups_by_hand():
    # index groups a b a c; queries: {a, c}, {}, b, (a,) -> rows 0,2,3 / none / 1 / 0,2
    rows, cols = metrics.relevant_pairs(
        ["a", "b", "a", "c"], [("c", "a"), (), "b", ("a",)], [-1, -1, 1, 2]
    )
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [
        (0, 0),
        (0, 2),
        (0, 3),
        (3, 0),
    ]  # query 2 is row 1 itself, query 3 is row 2 itself: both left out


def test_group_labels_keep_single_labels_as_they_are():
    labels = np.array(["a", "b"], dtype=object)
    assert catalog.group_labels(labels) is not None
    assert list(catalog.group_labels(labels)) == ["a", "b"]
    assert list(catalog.group_labels(["a|b", "", "c"])) == [("a", "b"), (), "c"]


@pytest.mark.parametrize("seed", range(4))
def test_sweep_with_several_groups_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, nq = 12, 9
    index = rng.standard_normal((n, 5)).astype(np.float32)
    queries = rng.standard_normal((nq, 5)).astype(np.float32)
    ig = rng.choice(["a", "b", "c", "d", "e"], n)
    sets = [
        tuple(rng.choice(["a", "b", "c", "d", "x"], rng.integers(0, 3), replace=False))
        for _ in range(nq)
    ]
    radii = metrics.radius_grid("euclidean", step=0.05, max_radius=6.0)
    result = metrics.sweep(index, ig, queries, sets, "euclidean", radii, device="cpu", tile_rows=4)
    d = dist.pairwise(queries, index, "euclidean", device="cpu").astype(np.float64)
    ref, counts = brute_force_sets(d, list(ig), [set(s) for s in sets], radii)
    assert_matches(result, ref | {"fbeta": result.fbeta}, counts)
    # ranked metrics: each query's nearest images, relevant = in one of its groups
    got = result.ranked()
    nrel = [sum(g in set(s) for g in ig) for s in sets]
    k = max(10, *nrel)
    hits_at_1, aps = [], []
    for q in range(nq):
        order = sorted(range(n), key=lambda i: (d[q, i], ig[i] in sets[q], i))[:k]
        rel = [ig[i] in sets[q] for i in order]
        if nrel[q]:
            hits_at_1.append(rel[0])
            prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
            aps.append(float((prec * rel).sum()) / min(nrel[q], k))
    assert got["top_k"] == k and got["queries_with_relevant"] == len(aps)
    assert got["recall_at_1"] == pytest.approx(np.mean(hits_at_1), abs=1e-12)
    assert got["map_at_k"] == pytest.approx(np.mean(aps), abs=1e-12)
    # a query with one group in a tuple scores as the plain label does
    single = [s[0] if len(s) == 1 else s for s in copy.deepcopy(sets)]
    again = metrics.sweep(index, ig, queries, single, "euclidean", radii, device="cpu", tile_rows=4)
    assert np.array_equal(again.tp, result.tp) and np.array_equal(again.f1, result.f1)


def test_pairs_keep_duplicate_references_and_skip_bad_queries(tmp_path):
    """References with the same pixels are both kept (the ground truth names each) and
    reported; a query that does not decode is left out and reported."""
    spec = make_pairs(tmp_path / "set")
    refs = Path(spec["references"])
    twin = refs / "twin.png"
    with Image.open(refs / f"{PHOTOS[0].stem}.jpg") as image:
        image.save(twin)  # other bytes, the same decoded pixels
    Path(spec["queries"], "q_bad.jpg").write_bytes(b"\xff\xd8 truncated")
    truth = Path(spec["ground_truth"])
    truth.write_text(truth.read_text() + "q_rot,twin\nq_bad,twin\n")
    built = run_stage(spec, tmp_path / "out")
    assert "twin" in set(built.manifest["image_id"])
    assert list(built.duplicates["path"]) == [str(twin)]  # the later id of the two
    assert list(built.duplicates["duplicate_of"]) == [str(refs / f"{PHOTOS[0].stem}.jpg")]
    queries = pd.read_parquet(tmp_path / "out" / "images" / "queries.parquet").set_index("image_id")
    assert queries.loc["q_rot", "group"] == f"{PHOTOS[0].stem}|twin"
    assert "q_bad" not in queries.index
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv").set_index("path")
    assert str(Path(spec["queries"]) / "q_bad.jpg") in skipped.index


# ------------------------------------------------------------------------ the workflow


@pytest.mark.parametrize("name", ["variants", "pairs"])
def test_dry_run_of_the_test_configs(tmp_path, name):
    """The .test configs plan a dataset job that writes the data set's own variants,
    and a modify job for risbench's own modifications only."""
    from workflow_copy import copy_workflow, load_test_config, scheduled, snakemake

    workdir = copy_workflow(tmp_path / "wf", load_test_config(name))
    (workdir / name).symlink_to(ROOT / ".test" / name)
    jobs = scheduled(workdir)
    variants = {"variants": 1 + 3 + 1, "pairs": 2}[name]  # original, its own, made ones
    assert jobs["dataset"] == 1 and jobs["modify"] == {"variants": 1, "pairs": 0}[name]
    assert jobs["hash"] == variants
    plan = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    assert "--variants-root results/images" in plan


@pytest.mark.slow
def test_a_pairs_run_end_to_end_answers_its_ground_truth(tmp_path):
    """The tiny pairs run: Table 3 and the thresholds come from the `queries`
    protocol, and every query's tp + fn is its number of references in the
    ground-truth file (none for the queries that match nothing)."""
    from workflow_copy import copy_workflow, load_test_config, snakemake

    workdir = copy_workflow(tmp_path / "wf", load_test_config("pairs"))
    (workdir / "pairs").symlink_to(ROOT / ".test" / "pairs")
    snakemake(workdir)
    table3 = pd.read_csv(workdir / "results" / "tables" / "table3_all.csv")
    assert sorted(table3["descriptor"]) == ["dct", "dhash"]
    thresholds = pd.read_csv(workdir / "results" / "tables" / "thresholds.csv")
    assert set(thresholds["descriptor"]) == {"dct", "dhash"}
    truth = pd.read_csv(ROOT / ".test" / "pairs" / "ground_truth.csv", dtype=str)
    references = truth.dropna().groupby("query_id").size()
    for name in ("dct", "dhash"):
        outcomes = pd.read_parquet(
            workdir / "results" / "benchmark" / "queries" / f"{name}__hamming.queries.parquet"
        )
        assert sorted(outcomes["image_id"]) == sorted(truth["query_id"].unique())
        expected = outcomes["image_id"].map(references).fillna(0).astype(int)
        assert (outcomes["tp"] + outcomes["fn"]).tolist() == expected.tolist()
