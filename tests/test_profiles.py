"""The profiles: SLURM jobs ask for what the rules declare, and one GPU job at a time locally.

The SLURM checks are dry runs (a dry run never calls sbatch, so no cluster is
needed; the executor plugin must be installed, as the `test` extra does). The
local GPU limit is shown on a three-job workflow of its own, run with
profiles/default.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from workflow_copy import TINY, copy_workflow, planned_jobs

ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    assert not check or done.returncode == 0, f"snakemake {' '.join(args)} failed:\n{output}"
    return output


def slurm_dry_run(workdir: Path) -> tuple[str, list[dict]]:
    # A dry run without --cores scales every job's threads down to 1 for the
    # display; a real SLURM run has no such limit, so lift it here.
    output = run_snakemake(
        workdir, "--workflow-profile", "profiles/slurm", "--dry-run", "--cores", "1000"
    )
    return output, [job for job in planned_jobs(output) if job["rule"] != "default"]


def slurm_config(**cluster) -> dict:
    return {**TINY, "cluster": cluster}


def test_slurm_profile_gives_gpu_rules_a_gpu(tmp_path):
    config = {
        **slurm_config(gpus=True),
        "extract": {**TINY["extract"], "device": "auto"},
        "benchmark": {**TINY["benchmark"], "device": "cuda"},
    }
    output, jobs = slurm_dry_run(copy_workflow(tmp_path, config, profiles=True))
    # The SLURM profile replaces the workstation profile instead of adding to it.
    assert "Using workflow specific profile profiles/slurm" in output
    assert "profiles/default" not in output
    rules = {job["rule"] for job in jobs}
    assert {"dataset", "modify", "hash", "extract_mobilenet_v2", "benchmark"} <= rules
    for job in jobs:
        resources = job["resources"]
        # every job has a memory and time request for sbatch (--mem, -t)
        assert int(resources["mem_mb"]) >= 1000 and int(resources["runtime"]) >= 10, job
        gpu = int(resources.get("gpu", 0))
        if job["rule"].startswith("extract_"):
            assert gpu == 1 and job["threads"] == 4, job
            assert int(resources["mem_mb"]) == 16000 and int(resources["runtime"]) == 240
        elif job["rule"] == "benchmark":
            assert gpu == 1, job
            assert job["threads"] == (1 if job["wildcards"]["distance"] == "hamming" else 4)
        else:
            assert gpu == 0, job


def test_slurm_profile_asks_no_gpu_for_a_cpu_config(tmp_path):
    assert TINY["extract"]["device"] == TINY["benchmark"]["device"] == "cpu"
    _, jobs = slurm_dry_run(copy_workflow(tmp_path, TINY, profiles=True))
    # 1 dataset, 2 modify, 3 hash, 3 extract, 1 catalog, 4 benchmark, 1 summarize
    assert len(jobs) == 15
    assert all(int(job["resources"].get("gpu", 0)) == 0 for job in jobs)


def test_tiny_steps_run_locally_not_through_sbatch(tmp_path):
    """Steps of a second or less are never submitted to the cluster (a dry run
    prints every job as `rule`, so the workflow's own list is read)."""
    workdir = copy_workflow(tmp_path, TINY)
    code = (
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings\n"
        "with SnakemakeApi(OutputSettings()) as api:\n"
        "    wf = api.workflow(resource_settings=ResourceSettings(),\n"
        "        config_settings=ConfigSettings(), snakefile=Path('Snakefile'),\n"
        "        workdir=Path('.'))\n"
        "    print(' '.join(sorted(wf._workflow._localrules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    local = set(done.stdout.split())
    assert local == {"catalog", "summarize", "download_mirflickr", "screen", "screening_table"}


def test_device_auto_asks_no_gpu_on_a_cluster_without_gpus(tmp_path):
    config = {**slurm_config(gpus=False), "extract": {**TINY["extract"], "device": "auto"}}
    config["benchmark"] = {**TINY["benchmark"], "device": "auto"}
    _, jobs = slurm_dry_run(copy_workflow(tmp_path, config, profiles=True))
    assert all(int(job["resources"].get("gpu", 0)) == 0 for job in jobs)


def test_device_cuda_on_a_cluster_without_gpus_fails_before_any_job(tmp_path):
    config = {**slurm_config(gpus=False), "extract": {**TINY["extract"], "device": "cuda"}}
    workdir = copy_workflow(tmp_path, config, profiles=True)
    output = run_snakemake(
        workdir, "--workflow-profile", "profiles/slurm", "--dry-run", check=False
    )
    assert "extract.device: cuda, but cluster.gpus is false" in output
    assert not (workdir / "results").exists()


def test_requests_never_exceed_a_node(tmp_path):
    config = {**slurm_config(cpus_per_node=2, mem_mb_per_node=6000)}
    config["distances"] = {"float": ["cosine"], "binary": ["hamming"]}
    _, jobs = slurm_dry_run(copy_workflow(tmp_path, config, profiles=True))
    for job in jobs:
        assert job["threads"] <= 2 and int(job["resources"]["mem_mb"]) <= 6000, job
    extract = next(job for job in jobs if job["rule"].startswith("extract_"))
    assert extract["threads"] == 2 and int(extract["resources"]["mem_mb"]) == 6000


def test_slurm_plugin_turns_the_gpu_resource_into_a_gpus_request():
    from snakemake_executor_plugin_slurm import utils

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        def __init__(self, **resources):
            self.resources = Resources(resources)

    assert utils.set_gres_string(Job(gpu=1)).strip() == "--gpus=1"
    assert utils.set_gres_string(Job(gpu=0)) == ""


GPU_WORKFLOW = """
rule all:
    input:
        expand("out/{name}.txt", name=["gpu1", "gpu2", "gpu3", "cpu"]),


rule gpu_job:
    output:
        "out/{name}.txt",
    wildcard_constraints:
        name="gpu.*",
    resources:
        gpu=1,
    shell:
        "python -c 'import time; print(time.time())' > {output}; sleep 1.5;"
        " python -c 'import time; print(time.time())' >> {output}"


rule cpu_job:
    output:
        "out/cpu.txt",
    shell:
        "python -c 'import time; print(time.time())' > {output}; sleep 1.5;"
        " python -c 'import time; print(time.time())' >> {output}"
"""


def job_intervals(workdir: Path) -> dict[str, tuple[float, float]]:
    return {
        path.stem: tuple(float(x) for x in path.read_text().split())
        for path in (workdir / "out").glob("*.txt")
    }


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_default_profile_runs_one_gpu_job_at_a_time(tmp_path):
    """profiles/default (picked up on its own) limits gpu=1 jobs to one at a time."""
    limited, free = tmp_path / "limited", tmp_path / "free"
    for workdir in (limited, free):
        workdir.mkdir()
        (workdir / "Snakefile").write_text(GPU_WORKFLOW)
        shutil.copytree(ROOT / "profiles", workdir / "profiles")

    output = run_snakemake(limited, "--cores", "4")
    assert "Using workflow specific profile profiles/default" in output
    assert re.search(r"Provided resources: gpu=.*\b1\b", output)  # gpu=Resource("gpu", 1)
    times = job_intervals(limited)
    gpu_jobs = [times[name] for name in ("gpu1", "gpu2", "gpu3")]
    for i, a in enumerate(gpu_jobs):
        for b in gpu_jobs[i + 1 :]:
            assert not overlaps(a, b), times
    # the CPU job is not held back: it runs beside one of the GPU jobs
    assert any(overlaps(times["cpu"], interval) for interval in gpu_jobs), times

    # the control: without the profile the same GPU jobs do run together
    run_snakemake(free, "--cores", "4", "--workflow-profile", "none")
    times = job_intervals(free)
    assert overlaps(times["gpu1"], times["gpu2"]) or overlaps(times["gpu2"], times["gpu3"])
