"""Resumability and determinism of whole runs (tiny data, in temporary copies of the workflow).

A run is killed while a benchmark or feature extraction job is running: SIGTERM
or SIGKILL to Snakemake and its jobs at once, as scancel, a shutdown, a crash,
the OOM killer or a lost node does. It is then resumed with
`--rerun-incomplete` (after `--unlock`, which a SIGKILL makes necessary): the
jobs that had finished are not run again (their outputs keep their inode and
modification time), the interrupted job is redone, and the tables and
descriptor stores equal those of an uninterrupted run. Two uninterrupted runs
of the same config give identical tables, benchmark sweeps and stores.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_profiles import copy_workflow, run_snakemake
from test_workflow import TINY

from risbench import store

pytestmark = pytest.mark.slow

# Smaller than TINY: 5 photos (1 distractor), one modification, one hash, one
# MobileNetV2 tap; 13 jobs.
CONFIG = {
    **TINY,
    "modifications": ["blur"],
    "hashes": ["dhash"],
    "models": {"mobilenet_v2": {**TINY["models"]["mobilenet_v2"], "normalize": ["none"]}},
    "benchmark": {**TINY["benchmark"], "protocols": ["all", "single"]},
}
TABLES = ["table3_all.csv", "table4_single.csv", "distances.csv", "ranked.csv"]
CORES = ("--cores", "2", "--workflow-profile", "none")


def started_and_finished(output: str) -> tuple[dict[int, dict], set[int]]:
    """From Snakemake's log: every started job (rule, outputs) by id, and the finished ids."""
    started, block = {}, None
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            block = {"rule": match[1], "output": []}
        elif block is not None and line.startswith("    output: "):
            block["output"] = line.removeprefix("    output: ").split(", ")
        elif block is not None and (match := re.fullmatch(r"    jobid: (\d+)", line)):
            started[int(match[1])] = block
            block = None
    finished = {int(n) for n in re.findall(r"Finished jobid: (\d+)", output)}
    return started, finished


def stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def read_tables(workdir: Path) -> dict[str, str]:
    return {name: (workdir / "results" / "tables" / name).read_text() for name in TABLES}


def benchmark_tables(workdir: Path) -> dict[str, pd.DataFrame]:
    root = workdir / "results" / "benchmark"
    return {str(p.relative_to(root)): pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def stores(workdir: Path) -> dict[str, np.ndarray]:
    root = workdir / "results" / "descriptors"
    return {str(p.relative_to(root)): store.read_store(p)[0] for p in sorted(root.glob("*/*.zarr"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run."""
    workdir = copy_workflow(tmp_path_factory.mktemp("reference"), CONFIG, profiles=False)
    run_snakemake(workdir, *CORES)
    return workdir


def test_two_runs_give_identical_results(reference, tmp_path):
    again = copy_workflow(tmp_path, CONFIG, profiles=False)
    run_snakemake(again, *CORES)
    assert read_tables(again) == read_tables(reference)
    first, second = benchmark_tables(reference), benchmark_tables(again)
    # 6 per-radius tables and their 6 per-query outcomes
    assert first.keys() == second.keys() and len(first) == 12
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)
    first, second = stores(reference), stores(again)
    assert first.keys() == second.keys() and len(first) == 2 * 2
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def kill_while_running(workdir: Path, rule: str, how: signal.Signals) -> str:
    """Starts the run, waits for a job of `rule` to start (its log appears), kills; the log."""
    out = workdir / "killed-run.txt"
    with open(out, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *CORES],
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the run and its jobs
        )
    try:
        deadline = time.monotonic() + 600
        while not any((workdir / "logs" / rule).rglob("*.log")):
            assert run.poll() is None, f"the run ended before a {rule} job:\n{out.read_text()}"
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.02)
        # to Snakemake and its jobs at once, as scancel or a shutdown does:
        # the signal, then SIGKILL after a grace period (Slurm's KillWait is 30 s;
        # Snakemake 9.27 was seen to hang now and then after a SIGTERM here).
        os.killpg(run.pid, how)
        try:
            code = run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            code = run.wait()
        assert code != 0
    finally:
        try:  # nothing of the run may outlive the test (nor write after the kill)
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.wait()
    return out.read_text()


@pytest.mark.parametrize(
    ("rule", "how"),
    [("benchmark", signal.SIGTERM), ("extract", signal.SIGKILL)],
    ids=["sigterm-benchmark", "sigkill-extract"],
)
def test_killed_run_resumes(reference, tmp_path, rule, how):
    workdir = copy_workflow(tmp_path, CONFIG, profiles=False)
    log = kill_while_running(workdir, rule, how)

    started, finished = started_and_finished(log)
    interrupted = {i: job for i, job in started.items() if i not in finished}
    assert finished and any(job["rule"].startswith(rule) for job in interrupted.values()), log
    # the outputs of every finished job, as they were when the run was killed
    kept = {
        path: stamp(workdir / path)
        for i in finished
        for path in started[i]["output"]
        if (workdir / path).exists()
    }
    assert kept
    if how == signal.SIGKILL:
        # A run killed this way leaves its lock behind, and the interrupted
        # job's outputs as they were at the kill. Make those the worst case, a
        # half-written store at the output path itself; Snakemake marked the
        # job incomplete when it started, so --rerun-incomplete must redo it.
        for job in interrupted.values():
            for path in job["output"]:
                if path.endswith(".zarr"):
                    (workdir / path).mkdir(parents=True, exist_ok=True)
                    (workdir / path / "zarr.json").write_text('{"shape": [5, 12')
        locked = subprocess.run(
            [sys.executable, "-m", "snakemake", *CORES, "--rerun-incomplete"],
            cwd=workdir,
            capture_output=True,
            text=True,
        )
        assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
        run_snakemake(workdir, *CORES, "--unlock")
    elif any((workdir / ".snakemake" / "locks").glob("*")):
        run_snakemake(workdir, *CORES, "--unlock")  # the grace period ran out: SIGKILL

    resumed = run_snakemake(workdir, *CORES, "--rerun-incomplete")

    rerun, _ = started_and_finished(resumed)
    rerun_outputs = {path for job in rerun.values() for path in job["output"]}
    # finished jobs were not run again: same files, same modification times
    assert not rerun_outputs & kept.keys()
    assert {path: stamp(workdir / path) for path in kept} == kept
    # every interrupted job was run again
    for job in interrupted.values():
        assert set(job["output"]) <= rerun_outputs, (job, resumed)
    # and the results are those of an uninterrupted run
    assert read_tables(workdir) == read_tables(reference)
    resumed_stores, reference_stores = stores(workdir), stores(reference)
    assert resumed_stores.keys() == reference_stores.keys()
    for name, matrix in reference_stores.items():
        np.testing.assert_array_equal(resumed_stores[name], matrix, err_msg=name)
    assert not list((workdir / "results").rglob("*.partial"))
    assert "Nothing to be done" in run_snakemake(workdir, *CORES, "--dry-run")
