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


# Staged screening (config `screening`, paper §6.4; rules in screening.smk). With
# no stages these return exactly what the workflow uses without screening.


def screening_stages():
    """The configured stages, checked: bases strictly increasing, each stage
    with a min_f1 or a top_k that is not null."""
    stages = config["screening"]["stages"]
    for i, stage in enumerate(stages):
        if stage.get("min_f1") is None and stage.get("top_k") is None:
            raise WorkflowError(
                f"config: screening.stages[{i}]: give min_f1 or top_k (or both)"
            )
        if i and stage["bases"] <= stages[i - 1]["bases"]:
            raise WorkflowError(
                f"config: screening.stages[{i}].bases = {stage['bases']}: stages must grow "
                f"(the previous stage has {stages[i - 1]['bases']})"
            )
    return stages


def all_pairs():
    """Every configured (descriptor, distance) pair."""
    return [
        (descriptor, distance)
        for descriptor in DESCRIPTORS
        for distance in risbench_config.distances(config, descriptor)
    ]


def screening_stage_table(stage):
    return f"results/screening/stage{stage}.csv"


def screening_kept(stage):
    """The pairs stage `stage` (1, 2, ...) kept: known once its checkpoint ran."""
    from risbench import screening

    return screening.kept_pairs(checkpoints.screen.get(stage=str(stage)).output[0])


def screening_candidates(stage):
    """The pairs stage `stage` benchmarks: all of them, then the previous survivors."""
    return all_pairs() if int(stage) == 1 else screening_kept(int(stage) - 1)


def final_pairs():
    """The pairs the full-size benchmarks run for: all of them, or the last
    stage's survivors (call only from an input function when screening)."""
    stages = screening_stages()
    return screening_kept(len(stages)) if stages else all_pairs()


def screening_outputs():
    """The screening table when screening is configured (for rule all)."""
    if not screening_stages():
        return []
    return [f"results/tables/screening.{ext}" for ext in ("csv", "md")]


def summary_benchmarks(suffix):
    """The summary's benchmark files: the full cross product without screening
    (the list `benchmark_outputs` gives), else an input function that asks for
    the survivors' benchmarks once the last stage's checkpoint has run."""
    if not screening_stages():
        return benchmark_outputs(suffix)

    def survivors(wildcards):
        pairs = final_pairs()
        return [
            f"results/benchmark/{protocol}/{descriptor}__{distance}.{suffix}"
            for protocol in PROTOCOLS
            for descriptor, distance in pairs
        ]

    return survivors


def summary_timings(files):
    """`files` (timing files of every job) without screening; else an input
    function that leaves out the benchmark timings of pairs screened out."""
    if not screening_stages():
        return files

    def survivors(wildcards):
        kept = {f"{descriptor}__{distance}" for descriptor, distance in final_pairs()}
        prefix = "results/timings/benchmark/"
        return [f for f in files if not f.startswith(prefix) or Path(f).stem in kept]

    return survivors


def summary_pairs():
    """The summary's `--pairs`: every pair without screening; else the pairs of
    its benchmark inputs (a params function of the job's input)."""
    if not screening_stages():
        return " ".join(
            f"{descriptor}__{distance}" for descriptor, distance in all_pairs()
        )
    return lambda wildcards, input: " ".join(
        dict.fromkeys(Path(path).stem for path in input.stats)
    )
