import json
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
SRC = Path(workflow.basedir).parent / "src" / "risbench"


def code(*modules):
    """The package modules a rule runs: editing one reruns the jobs that use it."""
    return [str(SRC / f"{module}.py") for module in ("cli", *modules)]


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
    return [
        "results/tables/table3_all.csv",
        "results/tables/table3_all.md",
        "results/tables/table4_single.csv",
        "results/tables/table4_single.md",
        "results/figures/prf_radius.png",
    ]


def print_table3():
    table = Path("results/tables/table3_all.md")
    if table.exists():
        print("\nBest F1 per descriptor, all modifications (paper Table 3):\n")
        print(table.read_text())


wildcard_constraints:
    variant=alternation(VARIANTS),
    descriptor=alternation(DESCRIPTORS),
    protocol=alternation(PROTOCOLS),
    distance="hamming|rv|cosine|angular|euclidean",
