"""Stands in for conda in tests (there is none in CI): answers the checks that
Snakemake makes, and "creates" an environment as a folder holding the env file
it was given and a `python` that only records its arguments (pip.log), so a
test can read back what a post-deploy script asked pip to do. Installed by a
test as `<home>/bin/conda`, with `<home>/bin/activate` beside it."""

import json
import sys
from pathlib import Path

home = Path(__file__).resolve().parents[1]
args = sys.argv[1:]
if args == ["--version"]:
    print("conda 25.1.1")
elif args == ["info", "--json"]:
    print(json.dumps({"conda_prefix": str(home), "platform": "linux-64"}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({"get": {"channel_priority": "strict"}}))
elif args[:2] == ["env", "create"]:
    env_file = Path(args[args.index("--file") + 1])
    prefix = Path(args[args.index("--prefix") + 1])
    (prefix / "bin").mkdir(parents=True)
    (prefix / "received.yaml").write_text(env_file.read_text())
    python = prefix / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{prefix / "pip.log"}"\n')
    python.chmod(0o755)
elif args[:1] != ["clean"]:
    sys.exit(f"fake conda: unexpected arguments {args}")
