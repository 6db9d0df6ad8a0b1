"""A copy of the workflow in a scratch folder, and Snakemake run in it.

Shared by the workflow tests (the fixtures in conftest.py wrap these). The
test configs are the YAML files under `.test/config/`; their `photos` folder is
five golden photos copied next to the workflow.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "data" / "golden" / "images").glob("*.png"))[:5]


def load_test_config(name: str = "config") -> dict:
    """A config of `.test/config/` as a dict."""
    return yaml.safe_load((ROOT / ".test" / "config" / f"{name}.yaml").read_text())


TINY = load_test_config()


def copy_workflow(
    workdir: Path, config: dict, *, profiles: bool = False, src: str = "link"
) -> Path:
    """The workflow, its config and five golden photos in `workdir`. `src`:
    "link" (the package itself: its modules are the declared code inputs) or
    "copy" (a copy that a test may edit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", workdir)
    shutil.copytree(ROOT / "workflow", workdir / "workflow")
    if profiles:
        shutil.copytree(ROOT / "profiles", workdir / "profiles")
    (workdir / "config").mkdir(exist_ok=True)
    write_config(workdir, config)
    if src == "copy":
        shutil.copytree(ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("*.pyc"))
    else:
        (workdir / "src").symlink_to(ROOT / "src")
    (workdir / "photos").mkdir(exist_ok=True)
    for photo in PHOTOS:
        shutil.copy(photo, workdir / "photos")
    return workdir


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 ARGS` in `workdir` (a later --cores wins)."""
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def job_counts(output: str) -> Counter:
    """Jobs per rule in a run's or dry run's job stats table."""
    if "Nothing to be done" in output or "Job stats:" not in output:
        return Counter()
    counts = Counter()
    for line in output.split("Job stats:")[1].split("\n\n")[0].splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def scheduled(workdir: Path, *args: str) -> Counter:
    """Jobs a dry run would run, counted per rule."""
    return job_counts(snakemake(workdir, "--dry-run", *args).stdout)


def planned_jobs(output: str) -> list[dict]:
    """Each job of a dry run: its rule, wildcards, threads and resources as printed."""
    jobs = []
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            local = line.startswith("local")
            jobs.append({"rule": match[1], "local": local, "threads": 1, "resources": {}})
            jobs[-1]["wildcards"] = {}
        elif jobs and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key == "threads":
                jobs[-1]["threads"] = int(value)
            elif key in ("resources", "wildcards"):
                jobs[-1][key] = dict(item.split("=", 1) for item in value.split(", "))
    return jobs
