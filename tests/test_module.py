"""The workflow used as a Snakemake module from another folder: it plans the
run its config asks for, and its conda environments install this checkout.

A module resolves paths against the module's files (schema, rules, env files)
and the caller's working directory (config, results), so these run from a
scratch folder that holds nothing of the repository but a config file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_copy import load_test_config

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "golden" / "images"
ENVS = ROOT / "workflow" / "envs"

CALLER = f"""\
configfile: "my-config.yaml"


module risbench:
    snakefile:
        "{ROOT}/workflow/Snakefile"
    config:
        config


use rule * from risbench as risbench_*
"""


@pytest.fixture
def caller(tmp_path):
    """A folder with a Snakefile that uses the workflow as a module, and the
    `.test` config reading the golden photos."""
    config = load_test_config()
    config["dataset"]["folder"] = str(PHOTOS)
    (tmp_path / "my-config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(CALLER)
    return tmp_path


def _snakemake(folder: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _job_counts(log: str) -> dict[str, int]:
    table = log[log.index("Job stats:") :]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_module_dry_run_plans_the_configured_jobs(caller):
    counts = _job_counts(_snakemake(caller, "-n"))
    # .test config: originals + blur + rotate = 3 variants; hashes dhash, dct;
    # mobilenet_v2 features avg with normalize none and l2 = 2 descriptors;
    # distances hamming (hashes), cosine (floats): 2 + 2 benchmark jobs
    assert counts == {
        "risbench_dataset": 1,
        "risbench_modify": 2,
        "risbench_catalog": 1,
        "risbench_hash": 3,
        "risbench_extract_mobilenet_v2": 3,
        "risbench_benchmark": 4,
        "risbench_summarize": 1,
        "risbench_all": 1,
        "total": 16,
    }


def _fake_conda(home: Path) -> dict:
    """tests/data/fake_conda/conda.py installed as `home/bin/conda`; the
    environment variables that put it first on PATH."""
    (home / "bin").mkdir()
    script = (ROOT / "tests" / "data" / "fake_conda" / "conda.py").read_text()
    (home / "bin" / "conda").write_text(f"#!{sys.executable}\n{script}")
    (home / "bin" / "conda").chmod(0o755)
    (home / "bin" / "activate").write_text('PATH="$1/bin:$PATH"\n')
    return {**os.environ, "PATH": f"{home / 'bin'}:{os.environ['PATH']}"}


def test_module_conda_envs_install_this_checkout(caller, tmp_path_factory):
    env = _fake_conda(tmp_path_factory.mktemp("conda"))
    envs = caller / "envs"
    args = ("--sdm", "conda", "--conda-create-envs-only", "--conda-prefix", str(envs))
    _snakemake(caller, *args, env=env)
    created = {
        received.read_text(): (received.parent / "pip.log").read_text().splitlines()
        for received in envs.glob("*/received.yaml")
    }
    # the rules of this config use the light and the torch environment, each
    # set up by the post-deploy script with RISBENCH_ROOT set by the workflow
    assert set(created) == {(ENVS / f"{name}.yaml").read_text() for name in ("risbench", "torch")}
    for calls in created.values():
        assert calls == [
            f"-m pip install --no-deps -e {ROOT}",
            f"-m pip install --no-deps -r {ROOT}/requirements-nodeps.txt",
        ]
    # conda is handed a copy of each env file in the environments' folder: a
    # relative path in a pip: section would resolve there, not in this repository
    assert {p.parent for p in envs.glob("*.yaml")} == {envs}
