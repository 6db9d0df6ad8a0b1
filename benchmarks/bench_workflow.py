"""The whole default run from clean: wall time, jobs, and where the CPU goes.

    python benchmarks/bench_workflow.py [--checkout DIR ...] [--config FILE] [--cores 2]

For each checkout (default: this repository; give two, e.g. a `git worktree`
of an older commit and this one, to compare them in one run on one machine)
the script copies its workflow into a scratch folder, runs `snakemake --cores N`
on the config from clean with that checkout's package first on PYTHONPATH,
and reports:

- wall time and the number of jobs;
- the scheduler's CPU: the Snakemake process's own user + system time,
  sampled every 0.2 s while it runs (its jobs are child processes, not in it);
- the jobs' CPU: the `cpu_time` of every Snakemake `benchmark:` file;
- the whole run's CPU: the script's children's rusage once Snakemake ended
  (scheduler plus every job, timed or not);
- the compute inside the jobs: the `compute: S s CPU (...)` lines jobs log
  (risbench.jobtime); a checkout whose jobs log none is credited with the
  `seconds` of its benchmark stats (sweeps only), as older versions recorded.

Ratios: whole-run CPU / in-job compute (target at most 2) and scheduler CPU /
whole-run CPU (target under 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
COMPUTE = re.compile(r"compute: ([0-9.]+) s CPU")


def copy_workflow(checkout: Path, config: Path, workdir: Path) -> None:
    shutil.copy(checkout / "Snakefile", workdir)
    shutil.copy(checkout / "environment.yml", workdir)
    shutil.copytree(checkout / "workflow", workdir / "workflow")
    (workdir / "config").mkdir()
    shutil.copy(config, workdir / "config" / "config.yaml")
    (workdir / "src").symlink_to(checkout / "src")


def run_snakemake(workdir: Path, checkout: Path, cores: int) -> tuple[float, float, float]:
    """(wall seconds, scheduler CPU seconds, CPU of the whole run)."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    command += ["--workflow-profile", "none"]
    log = workdir / "snakemake.log"  # a file, not a pipe: Snakemake writes a lot
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out)
        watched, scheduler = psutil.Process(process.pid), 0.0
        while process.poll() is None:
            try:
                cpu = watched.cpu_times()
                scheduler = cpu.user + cpu.system
            except psutil.Error:
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{log.read_text()[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, scheduler, total


def job_count(workdir: Path) -> int:
    log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    table = log.split("Job stats:")[1].split("\n\n")[0]
    return int(re.search(r"total\s+(\d+)", table)[1])


def jobs_cpu(workdir: Path) -> float:
    files = (workdir / "results").rglob("*.tsv")
    return sum(
        float(pd.read_csv(f, sep="\t")["cpu_time"].sum()) for f in files if "timings" in str(f)
    )


def in_job_compute(workdir: Path) -> tuple[float, str]:
    logged = [
        float(m[1])
        for log in (workdir / "logs").rglob("*.log")
        for m in COMPUTE.finditer(log.read_text(errors="replace"))
    ]
    if logged:
        return sum(logged), "compute lines of the job logs"
    stats = (workdir / "results" / "benchmark").rglob("*.json")
    seconds = [json.loads(p.read_text()).get("seconds") for p in stats]
    return sum(s for s in seconds if s), "benchmark sweeps only (stats seconds)"


def measure(checkout: Path, config: Path, cores: int, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_workflow_") as scratch:
        workdir = Path(scratch)
        copy_workflow(checkout, config, workdir)
        wall, scheduler, total = run_snakemake(workdir, checkout, cores)
        compute, source = in_job_compute(workdir)
        if keep is not None:  # tables, benchmark outputs, timings and logs, to compare runs
            for part in ("results/tables", "results/benchmark", "results/timings", "logs"):
                shutil.copytree(workdir / part, keep / Path(part).name, dirs_exist_ok=True)
        return {
            "checkout": str(checkout),
            "wall_s": round(wall, 1),
            "jobs": job_count(workdir),
            "scheduler_cpu_s": round(scheduler, 1),
            "jobs_cpu_s": round(jobs_cpu(workdir), 1),
            "run_cpu_s": round(total, 1),
            "in_job_compute_s": round(compute, 1),
            "compute_from": source,
            "run_cpu / compute": round(total / compute, 2) if compute else None,
            "scheduler / run_cpu": round(scheduler / total, 3) if total else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        nargs="+",
        default=[ROOT],
        help="repository checkouts to run, in order (default: this one)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the config to run (default: each checkout's own config/config.yaml)",
    )
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy each run's outputs under KEEP/1, KEEP/2, ..."
    )
    args = parser.parse_args()
    rows = [
        measure(
            c.resolve(),
            (args.config or c / "config" / "config.yaml").resolve(),
            args.cores,
            args.keep and args.keep / str(i),
        )
        for i, c in enumerate(args.checkout, start=1)
    ]
    print(pd.DataFrame(rows).set_index("checkout").T.to_string())


if __name__ == "__main__":
    main()
