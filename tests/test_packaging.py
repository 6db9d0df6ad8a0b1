"""pyproject.toml and environment.yml name the same dependencies with the same bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of packages whose PyPI name differs.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(
        _split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    )
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            found.update(_split(r) for r in entry["pip"])
            continue
        name, spec = _split(entry)
        if name not in ("python", "pip"):
            found[CONDA_TO_PYPI.get(name, name)] = spec
    assert found == wanted


def test_nodeps_requirements_are_pinned_and_installed_by_the_install_script():
    lines = [
        line
        for line in (ROOT / "requirements-nodeps.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines and all("==" in line for line in lines)
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in script
    assert "bash scripts/install.sh" in (ROOT / ".ci" / "run").read_text()
