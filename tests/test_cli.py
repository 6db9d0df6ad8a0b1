"""The command line: its help is plain text, every option explains itself, and
the commands for people are listed apart from the workflow's steps."""

import argparse
import subprocess
import sys

import pytest

from risbench import __version__, cli


def _parsers():
    """(name, parser) of every command and sub-command."""
    found = []

    def walk(name, parser):
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, sub in action.choices.items():
                    walk(f"{name} {child}".strip(), sub)

    walk("", cli.parser())
    return found


@pytest.mark.parametrize("name, parser", _parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_has_help_and_help_is_plain_text(name, parser):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"risbench {name}: {action.option_strings or action.dest} has no help"
    text = parser.format_help()
    assert "``" not in text and ":func:" not in text, text  # no RST markup
    assert "\\t" not in text and "\t" not in text, text


def test_people_commands_are_listed_apart_from_the_workflow_steps():
    text = cli.parser().format_help()
    people, steps = text.split("commands:")[1].split("workflow steps (run by the rules):")
    assert "hash " in people and "hash-store" not in people
    for step in ("dataset", "hash-store", "benchmark", "screen", "summarize"):
        assert f"  {step} " in steps
    assert set(cli.FOR_PEOPLE) | set(cli.WORKFLOW_STEPS) == set(
        cli.parser()._subparsers._group_actions[0].choices
    )


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "risbench.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"risbench {__version__}"


def test_hash_and_benchmark_jobs_never_import_torch(tmp_path):
    """The light jobs pay for no deep-learning import: a hash job and a benchmark
    job, run as the rules run them, leave torch out of sys.modules."""
    from pathlib import Path

    photos = sorted((Path(__file__).parent / "data" / "golden" / "images").glob("*.png"))[:3]
    code = f"""
import json, sys
import pandas as pd
from risbench import catalog, cli
paths = {[str(p) for p in photos]!r}
ids = [p.rsplit("/", 1)[-1][:-4] for p in paths]
manifest = pd.DataFrame({{"image_id": ids, "role": "base", "path": paths}})
catalog.original_list(manifest).to_parquet("original.parquet")
cli.main(["hash-store", "--list", "original.parquet", "--store", "dct=dct.zarr",
          "--store", "rv=rv.zarr", "--store", "colorhash=colorhash.zarr"])
spec = {{"beta": 1.0, "device": "cpu", "exclude_self": False, "radius": {{}}, "tile_mb": 8,
        "top_k": 2}}
cli.main(["benchmark", "--descriptor", "dct", "--distance", "hamming", "--list",
          "original=original.parquet", "--store", "original=dct.zarr", "--spec",
          json.dumps(spec), "--table", "all=all.parquet", "--stats", "all=all.json"])
print(sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "all.json").exists() and (tmp_path / "rv.zarr").exists()
