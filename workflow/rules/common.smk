import json
import os
import re
from pathlib import Path

from risbench import config as risbench_config

# Names the schema cannot know (modifications, hashes, layers, weights) are
# checked here, before any job is scheduled.
try:
    risbench_config.check(config)
except risbench_config.ConfigError as error:
    raise WorkflowError(f"config: {error}") from None

VARIANTS = risbench_config.variants(config)
MODIFIED = VARIANTS[1:]
DESCRIPTORS = risbench_config.descriptors(config)
PROTOCOLS = risbench_config.protocols(config)
# Relative to the working directory, as Snakemake expects of input paths.
SRC = os.path.relpath(Path(workflow.current_basedir).parents[1] / "src" / "risbench")
# For --use-conda; the supported install is scripts/install.sh (README).
CONDA_ENV = "../../environment.yml"


def code(*modules):
    """The package modules a job runs; editing one reruns the jobs that use it."""
    return [os.path.join(SRC, f"{module}.py") for module in ("cli", *modules)]


def alternation(names):
    return "|".join(re.escape(name) for name in names) or "$^"


def variant_list(variant):
    return f"results/images/{variant}.parquet"


def store(descriptor, variant):
    return f"results/descriptors/{descriptor}/{variant}.zarr"


def protocol_variants(protocol):
    if protocol.startswith("single-"):
        return list(dict.fromkeys(["original", protocol.removeprefix("single-")]))
    return VARIANTS


def benchmark_outputs(suffix):
    return [
        f"results/benchmark/{protocol}/{descriptor}__{distance}.{suffix}"
        for protocol in PROTOCOLS
        for descriptor in DESCRIPTORS
        for distance in risbench_config.distances(config, descriptor)
    ]


def summary_outputs():
    """The summary's tables and figures, decided by the config alone. The
    robustness figure is made only when a modification runs at two or more
    strengths (sweeps, or e.g. `rotate` and `rotate-2`) under the single protocol."""
    from risbench import modify

    tables = ["table3_all", "table4_single", "distances", "ranked", "timing"]
    figures = ["prf_radius", "f1_by_modification", "distance_histograms", "examples"]
    strengths = {}
    if any(protocol.startswith("single-") for protocol in PROTOCOLS):
        for variant in MODIFIED:
            steps = modify.parse_variant(variant)
            if len(steps) == 1 and steps[0][1] is not None:
                strengths.setdefault(steps[0][0], set()).add(steps[0][1])
    if any(len(values) > 1 for values in strengths.values()):
        figures.append("robustness")
    return [
        f"results/tables/{name}.{ext}" for name in tables for ext in ("csv", "md")
    ] + [f"results/figures/{name}.png" for name in figures]


def print_table3():
    table = Path("results/tables/table3_all.md")
    if table.exists():
        print("\nBest F1 per descriptor, all modifications (paper Table 3):\n")
        print(table.read_text())
        print(
            "Tables: results/tables/, figures: results/figures/. The HTML report with all\n"
            "of them: snakemake --report results/report.html (with this run's --configfile\n"
            "and --config options, if any)."
        )


def benchmark_spec(wildcards):
    """The benchmark settings one table depends on (its own distance's grid only)."""
    spec = {
        k: v for k, v in config["benchmark"].items() if k not in ("protocols", "radius")
    }
    spec["radius"] = {
        wildcards.distance: config["benchmark"]["radius"].get(wildcards.distance)
    }
    return json.dumps(spec, sort_keys=True)
