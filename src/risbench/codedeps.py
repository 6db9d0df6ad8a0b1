"""The package modules a job runs: the transitive closure of ``risbench`` imports.

A workflow rule declares as code inputs the module that implements its job and
every ``risbench`` module that module imports, directly or through others, at
the top or inside a function (lazy imports count: they run too). The closure is
read from the source with :mod:`ast`, never by importing, so the workflow's
parse stays cheap. The command line (``cli.py``) is never part of it: it only
parses arguments, so editing a help text reruns nothing.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "risbench"


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules (names without the package prefix) one module imports;
    ``__init__`` when it takes a name from the package itself."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            base = base.removeprefix(PACKAGE).lstrip(".") if node.level == 0 else base
            if base:
                found.add(base.split(".")[0])
                continue
            for alias in node.names:  # from risbench import x / from . import x
                found.add(alias.name if alias.name in modules else "__init__")
    return found & (modules | {"__init__"})


@cache
def _graph(package_dir: str) -> dict[str, set[str]]:
    files = {p.stem: p for p in Path(package_dir).glob("*.py")}
    return {
        name: _imported(ast.parse(path.read_text(), str(path)), set(files))
        for name, path in files.items()
    }


def closure(package_dir: str | Path, *modules: str) -> list[str]:
    """Module names reachable from ``modules`` (themselves included), sorted."""
    graph = _graph(str(package_dir))
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in graph:
            raise ValueError(f"{package_dir}: no module {name}.py")
        seen.add(name)
        todo.extend(graph[name] - seen)
    return sorted(seen)


def code_files(package_dir: str | Path, *modules: str) -> list[str]:
    """The files of :func:`closure`, as paths under ``package_dir``."""
    return [str(Path(package_dir) / f"{name}.py") for name in closure(package_dir, *modules)]
