#!/usr/bin/env bash
# Snakemake (--sdm conda) runs this in a freshly created environment, in its own
# working directory and with its own environment variables: the workflow sets
# RISBENCH_ROOT to the checkout it was read from (workflow/rules/common.smk).
# Editable, so that the jobs run the code the workflow's code inputs track.
# --no-deps: conda installed the dependencies; risbench's metadata would add torch
# to the light environment, and the weights' metadata pins torch 1.6.
set -euo pipefail
root="${RISBENCH_ROOT:?RISBENCH_ROOT is unset: create this environment through the risbench workflow}"
if [ ! -f "$root/pyproject.toml" ] || [ ! -f "$root/requirements-nodeps.txt" ]; then
    echo "RISBENCH_ROOT=$root is not a risbench checkout (no pyproject.toml)" >&2
    exit 1
fi
python -m pip install --no-deps -e "$root"
python -m pip install --no-deps -r "$root/requirements-nodeps.txt"
