"""The Snakemake workflow: lint, a tiny end-to-end run, and incremental reruns (dry runs).

The workflow is copied into a temporary folder (its ``src`` is a link to the
package, so the declared code inputs are the real modules) and run on five
golden photos with two modifications, two hashes and a small MobileNetV2 tap.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from risbench import store

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "data" / "golden" / "images").glob("*.png"))[:5]

TINY = {
    "dataset": {"source": "folder", "folder": "photos", "distractors": 1},
    "modifications": ["blur", "rotate"],
    "hashes": ["dhash", "dct"],
    "models": {
        "mobilenet_v2": {
            "source": "torchvision",
            "arch": "mobilenet_v2",
            "weights": "offline",
            "layers": ["features"],
            "pooling": ["avg"],
            "normalize": ["none", "l2"],
            "input_size": 96,
        }
    },
    "distances": {"float": ["cosine"]},
    "extract": {"device": "cpu", "batch_size": 8, "workers": 0},
    "benchmark": {"protocols": ["all", "single", "distractors"], "device": "cpu"},
}


def snakemake(workdir: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def scheduled(workdir: Path) -> Counter:
    """Jobs a dry run would run, counted per rule (Snakemake's job stats table)."""
    out = snakemake(workdir, "--dry-run").stdout
    if "Nothing to be done" in out:
        return Counter()
    table = out.split("Job stats:")[1].split("\n\n")[0]
    counts = Counter()
    for line in table.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def copy_workflow(workdir: Path) -> None:
    """The workflow files in a fresh folder; its src is a link to the package."""
    shutil.copy(ROOT / "Snakefile", workdir)
    shutil.copy(ROOT / "environment.yml", workdir)  # rules name it as their conda env
    shutil.copytree(ROOT / "workflow", workdir / "workflow")
    (workdir / "config").mkdir()
    (workdir / "src").symlink_to(ROOT / "src")


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A finished tiny run in a copy of the workflow."""
    workdir = tmp_path_factory.mktemp("run")
    copy_workflow(workdir)
    (workdir / "photos").mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, workdir / "photos")
    write_config(workdir, TINY)
    snakemake(workdir)
    return workdir


def test_lint_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


@pytest.mark.slow
def test_tiny_run_outputs(workdir):
    results = workdir / "results"
    catalog = pd.read_parquet(results / "dataset" / "images.parquet")
    assert list(catalog.columns) == ["row", "image_id", "variant", "group", "role", "path"]
    assert catalog["row"].tolist() == list(range(len(catalog)))
    # 1 distractor + 4 bases, each base in 3 variants
    assert Counter(catalog["role"]) == {"distractor": 1, "base": 4, "modified": 8}
    matrix, attrs = store.read_store(results / "descriptors" / "dct" / "blur.zarr")
    assert matrix.shape == (4, 8) and attrs["kind"] == "binary" and attrs["dim"] == 64
    matrix, attrs = store.read_store(
        results / "descriptors" / "mobilenet_v2_features_avg_norm_l2" / "original.zarr"
    )
    assert matrix.shape == (5, 1280) and attrs["kind"] == "float"
    table3 = pd.read_csv(results / "tables" / "table3_all.csv")
    assert len(table3) == 2 + 2  # two hashes (hamming) + two MobileNetV2 taps (cosine)
    assert table3["f1"].between(0, 1).all()
    table4 = pd.read_csv(results / "tables" / "table4_single.csv")
    assert {"Base", "Blur", "Rotate"} <= set(table4.columns)
    # querying the indexed originals with themselves finds exactly themselves at radius 0
    sweep = pd.read_parquet(results / "benchmark" / "single-original" / "dct__hamming.parquet")
    assert sweep.loc[sweep.radius == 0, "recall"].item() == 1.0
    assert (results / "figures" / "prf_radius.png").stat().st_size > 10_000
    for log in ("dataset.log", "summarize.log", "modify/rotate.log", "hash/dct/blur.log"):
        assert (workdir / "logs" / log).exists()


@pytest.mark.slow
def test_nothing_changed_schedules_nothing(workdir):
    assert scheduled(workdir) == Counter()


@pytest.mark.slow
def test_adding_a_hash_schedules_only_its_jobs(workdir):
    write_config(workdir, {**TINY, "hashes": ["dhash", "dct", "ahash"]})
    try:
        jobs = scheduled(workdir)
    finally:
        write_config(workdir, TINY)
    # 3 variants hashed; tables: all, distractors, single x 3 variants
    assert jobs == Counter({"hash": 3, "benchmark": 5, "summarize": 1, "default": 1})


@pytest.mark.slow
def test_changing_a_radius_grid_reruns_that_distance_only(workdir):
    benchmark = {**TINY["benchmark"], "radius": {"cosine": {"step": 0.01}}}
    write_config(workdir, {**TINY, "benchmark": benchmark})
    try:
        jobs = scheduled(workdir)
    finally:
        write_config(workdir, TINY)
    # the two cosine descriptors x 5 tables; no hash or extraction job
    assert jobs == Counter({"benchmark": 10, "summarize": 1, "default": 1})


@pytest.mark.slow
def test_adding_a_modification_computes_only_its_images(workdir):
    write_config(workdir, {**TINY, "modifications": ["blur", "rotate", "crop"]})
    try:
        jobs = scheduled(workdir)
    finally:
        write_config(workdir, TINY)
    # crop images; their hashes (2) and features (1 job); catalog; benchmarks:
    # all + distractors for 4 descriptors x 1 distance, and single-crop for each
    assert jobs == Counter(
        {
            "modify": 1,
            "hash": 2,
            "extract_mobilenet_v2": 1,
            "catalog": 1,
            "benchmark": 4 * 3,
            "summarize": 1,
            "default": 1,
        }
    )


def test_unknown_modification_fails_before_any_job(tmp_path):
    copy_workflow(tmp_path)
    write_config(tmp_path, {**TINY, "modifications": ["blur", "sepia"]})
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0
    assert "modifications[1] = 'sepia'" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()
