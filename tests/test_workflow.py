"""The Snakemake workflow: lint, a tiny end-to-end run, incremental reruns after
config and code edits (dry runs), and the cost of parsing it.

The workflow is copied into a temporary folder (its ``src`` is a link to the
package, so the declared code inputs are the real modules, or a copy where a
test edits the code) and run on five golden photos (`.test/config/config.yaml`).
"""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_copy import ROOT, TINY, copy_workflow, job_counts, scheduled, snakemake, write_config

from risbench import store

FROZEN = ROOT / "tests" / "data" / "frozen"


def test_lint_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


@pytest.mark.slow
def test_tiny_run_outputs(tiny_run):
    results = tiny_run / "results"
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
    table4 = pd.read_csv(results / "tables" / "table4_single.csv")
    assert {"Base", "Blur", "Rotate"} <= set(table4.columns)
    # querying the indexed originals with themselves finds exactly themselves at radius 0
    sweep = pd.read_parquet(results / "benchmark" / "single-original" / "dct__hamming.parquet")
    assert sweep.loc[sweep.radius == 0, "recall"].item() == 1.0
    assert (results / "figures" / "prf_radius.png").stat().st_size > 10_000
    logs = ("summarize.log", "modify/rotate.log", "hash/blur.log", "benchmark/dct__hamming.log")
    for log in logs:
        assert (tiny_run / "logs" / log).exists()


@pytest.mark.slow
def test_tables_equal_those_of_the_per_protocol_jobs(tiny_run):
    """Regrouping the jobs changed no number: Table 3 has the bytes that main made
    with one job per protocol (tests/data/frozen/README.md)."""
    made = (tiny_run / "results" / "tables" / "table3_all.csv").read_bytes()
    assert made == (FROZEN / "table3_all.csv").read_bytes()


@pytest.mark.slow
def test_job_grain(tiny_run):
    """One job per variant for the hashes, per descriptor and distance for the
    benchmarks (every protocol in it), per model and variant for the features."""
    log = sorted((tiny_run / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    assert job_counts(log) == Counter(
        {
            "dataset": 1,
            "modify": 2,
            "hash": 3,
            "extract_mobilenet_v2": 3,
            "catalog": 1,
            "benchmark": 4,
            "summarize": 1,
            "default": 1,
        }
    )


@pytest.mark.slow
def test_nothing_changed_schedules_nothing(tiny_run):
    assert scheduled(tiny_run) == Counter()


def _scheduled_with(workdir: Path, config: dict) -> Counter:
    write_config(workdir, config)
    try:
        return scheduled(workdir)
    finally:
        write_config(workdir, TINY)


@pytest.mark.slow
def test_adding_a_hash_schedules_only_the_hash_side(tiny_run):
    jobs = _scheduled_with(tiny_run, {**TINY, "hashes": ["dhash", "dct", "ahash"]})
    # every variant's hash job (each computes all hashes from one decode), and
    # the hash benchmarks; nothing of the CNN features
    assert jobs == Counter({"hash": 3, "benchmark": 3, "summarize": 1, "default": 1})


@pytest.mark.slow
def test_changing_a_radius_grid_reruns_that_distance_only(tiny_run):
    benchmark = {**TINY["benchmark"], "radius": {"cosine": {"step": 0.01}}}
    jobs = _scheduled_with(tiny_run, {**TINY, "benchmark": benchmark})
    # the two cosine descriptors; no hash or extraction job
    assert jobs == Counter({"benchmark": 2, "summarize": 1, "default": 1})


@pytest.mark.slow
def test_adding_a_modification_computes_only_its_images(tiny_run):
    jobs = _scheduled_with(tiny_run, {**TINY, "modifications": ["blur", "rotate", "crop"]})
    # crop images, their hashes and features; every benchmark (protocol all changes)
    assert jobs == Counter(
        {
            "modify": 1,
            "hash": 1,
            "extract_mobilenet_v2": 1,
            "catalog": 1,
            "benchmark": 4,
            "summarize": 1,
            "default": 1,
        }
    )


# ------------------------------------------------------------------------- code edits


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):
    """A finished hashes-only run over a copy of the package, for editing its code."""
    config = {**TINY, "modifications": ["blur"], "distances": {"float": ["cosine"]}}
    config["benchmark"] = {**TINY["benchmark"], "protocols": ["all"]}
    config["hashes"] = ["dhash", "rv"]
    workdir = copy_workflow(tmp_path_factory.mktemp("code"), config, src="copy")
    snakemake(workdir)
    return workdir


def _scheduled_after_editing(workdir: Path, module: str) -> Counter:
    """What a dry run schedules once `module` has a new line (Snakemake compares
    the content of code inputs, not only their time)."""
    path = workdir / "src" / "risbench" / f"{module}.py"
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        return scheduled(workdir)
    finally:
        path.write_text(text)


@pytest.mark.slow
def test_editing_models_reruns_the_features_and_what_follows(code_run):
    jobs = _scheduled_after_editing(code_run, "models")
    assert jobs == Counter(
        {"extract_mobilenet_v2": 2, "benchmark": 2, "summarize": 1, "default": 1}
    )


@pytest.mark.slow
def test_editing_phash_reruns_the_hashes_and_what_follows(code_run):
    jobs = _scheduled_after_editing(code_run, "phash")
    # both variants' hash jobs; then the hash benchmarks (dhash, rv)
    assert jobs == Counter({"hash": 2, "benchmark": 2, "summarize": 1, "default": 1})


@pytest.mark.slow
def test_editing_the_report_reruns_the_summary_only(code_run):
    assert _scheduled_after_editing(code_run, "report") == Counter({"summarize": 1, "default": 1})


@pytest.mark.slow
def test_editing_the_command_line_reruns_nothing(code_run):
    assert _scheduled_after_editing(code_run, "cli") == Counter()


# ------------------------------------------------------------------------------ parse


def test_parse_is_light(tmp_path):
    """Parsing the default config imports no torch, timm or zarr and
    stays under 300 MB (every cluster job parses the workflow again)."""
    workdir = copy_workflow(tmp_path, {})
    (workdir / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    # a wrapper process whose only child is Snakemake: its children's peak RSS is Snakemake's
    wrapper = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'snakemake',"
        " '--dry-run', '--cores', '2'], capture_output=True, text=True)\n"
        "sys.stderr.write(done.stdout + done.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper], cwd=workdir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    # (pandas is not in the list: Snakemake itself imports it when the SLURM
    # executor plugin is installed, as the test extra installs it)
    for heavy in ("torch", "timm", "zarr", "torchvision"):
        assert heavy not in imported, f"parsing imports {heavy}"
    peak_mb = int(done.stdout.split()[-1]) / 1024
    assert peak_mb < 300, f"parsing peaks at {peak_mb:.0f} MB"


# ------------------------------------------------------------------ bad configs (issue 14)


@pytest.mark.parametrize("key", ["m$(touch PWNED)", "my net"])
def test_a_model_key_cannot_reach_a_shell(tmp_path, key):
    config = {**TINY, "models": {key: TINY["models"]["mobilenet_v2"]}}
    workdir = copy_workflow(tmp_path, config)
    done = snakemake(workdir, check=False)
    assert done.returncode != 0
    assert "does not match" in done.stdout + done.stderr and key in done.stdout + done.stderr
    assert not (workdir / "PWNED").exists() and not (workdir / "results").exists()
    assert not (workdir / "logs").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("hashes: [dct]\nhashes: [mh]\n", "line 2: duplicate key 'hashes'"),
        ("hashes: !!python/object/apply:os.system ['touch PWNED']\n", "YAML tags"),
    ],
)
def test_a_config_file_is_read_strictly_before_any_job(tmp_path, text, message):
    workdir = copy_workflow(tmp_path, TINY)
    (workdir / "config" / "config.yaml").write_text(text)
    done = snakemake(workdir, "--dry-run", check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    # a user's own file, given with --configfile, gets the duplicate-key check too
    if "duplicate" in message:
        (workdir / "mine.yaml").write_text(text)
        done = snakemake(workdir, "--dry-run", "--configfile", "mine.yaml", check=False)
        assert done.returncode != 0 and "mine.yaml, line 2: duplicate key" in done.stdout
    assert not (workdir / "PWNED").exists() and not (workdir / "results").exists()


def test_a_users_config_file_decides_the_whole_run(tmp_path):
    """The README's own-images command: `--configfile my.yaml` replaces the
    default config instead of merging into it (no default models, sweep or
    distractors survive), and so does the job command a cluster job runs."""
    workdir = copy_workflow(tmp_path, TINY)
    (workdir / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    mine = {"dataset": {"source": "folder", "folder": "photos"}, "hashes": ["dct"]}
    mine["modifications"] = ["blur"]
    (workdir / "my.yaml").write_text(yaml.safe_dump(mine))
    for option in ("--configfile", "--configfiles"):  # the latter: a cluster job's
        done = snakemake(workdir, "--dry-run", option, "my.yaml")
        assert job_counts(done.stdout) == Counter(
            {"dataset": 1, "modify": 1, "hash": 2, "catalog": 1, "benchmark": 1}
            | {"summarize": 1, "default": 1}
        )
        assert "rotate" not in done.stdout and "extract_" not in done.stdout
        # every photo is a base: no distractor protocol, no distractor in the index
        assert "results/benchmark/distractors/" not in done.stdout
