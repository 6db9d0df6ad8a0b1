import json
import os
import re
import shlex
from pathlib import Path

from risbench import codedeps, placement, results
from risbench import config as risbench_config

# Names the schema cannot know (modifications, hashes, layers, weights, devices)
# are checked here, before any job is scheduled. Nothing here imports torch,
# zarr or pandas: every cluster job parses this workflow again.
try:
    risbench_config.check(config)
    placement.check_devices(config)
except risbench_config.ConfigError as error:
    raise WorkflowError(f"config: {error}") from None

VARIANTS = risbench_config.variants(config)
MODIFIED = VARIANTS[1:]
DESCRIPTORS = risbench_config.descriptors(config)
PROTOCOLS = risbench_config.protocols(config)
PAIRS = risbench_config.pairs(config)
HASHES = list(config["hashes"])
# compress (rules/compress.smk): the split every benchmark leaves out, or None.
TRAINING_SPLIT = risbench_config.training_split(config)
# Relative to the working directory, as Snakemake expects of input paths.
SRC = os.path.relpath(Path(workflow.current_basedir).parents[1] / "src" / "risbench")
# The rules' conda environments (workflow/envs/) install this checkout in their
# post-deploy script, which Snakemake runs with this process's environment.
os.environ.update(
    RISBENCH_ROOT=os.path.abspath(Path(workflow.current_basedir).parents[1])
)


def code(*modules):
    """The package modules a job runs (the named ones and everything they import,
    read from the source): editing one reruns exactly the jobs that use it."""
    return codedeps.code_files(SRC, *modules)


def alternation(names):
    return "|".join(re.escape(name) for name in names) or "$^"


def variant_list(variant):
    return f"results/images/{variant}.parquet"


def store(descriptor, variant):
    return f"results/descriptors/{descriptor}/{variant}.zarr"


def benchmark_result(protocol, descriptor, distance, suffix):
    return f"results/benchmark/{protocol}/{descriptor}__{distance}.{suffix}"


def run_index(descriptor, distance):
    return results.run_index_path(descriptor, distance)


def named_args(option, names, paths):
    """`--option NAME=PATH` for each pair, quoted for the shell."""
    return " ".join(
        f"--{option} {shlex.quote(f'{name}={path}')}"
        for name, path in zip(names, paths, strict=True)
    )


def threads(wanted):
    return placement.threads(config, wanted)


def benchmark_threads(wildcards):
    """Hamming sweeps are integer popcounts: one thread; the others' matrix
    products and kernels get benchmark.threads (at most a node's CPUs)."""
    if wildcards.distance == "hamming":
        return 1
    return threads(config["benchmark"]["threads"])


def mem_mb(base):
    """A rule's memory request: `base` MB per attempt, at most a node's memory."""
    return lambda wildcards, attempt: placement.mem_mb(config, base, attempt)


def runtime(base):
    return lambda wildcards, attempt: base * attempt


def all_pairs():
    """Every configured (descriptor, distance) pair."""
    return PAIRS


def summary_outputs():
    """The summary's tables and figures, decided by the config alone (one owner:
    risbench.results)."""
    return results.summary_outputs(MODIFIED, PROTOCOLS)


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
    """The benchmark settings one job depends on (its own distance's grid only;
    not its thread request, a resource)."""
    spec = {
        k: v
        for k, v in config["benchmark"].items()
        if k not in ("protocols", "radius", "threads")
    }
    spec["radius"] = {
        wildcards.distance: config["benchmark"]["radius"].get(wildcards.distance)
    }
    if TRAINING_SPLIT:  # compress configured: the codes' training groups leave
        spec["training_split"] = TRAINING_SPLIT
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


def summary_runs():
    """The run indexes the summary reads: every pair's, or (screening) an input
    function that asks for the survivors' once the last checkpoint has run."""
    if not screening_stages():
        return [run_index(*pair) for pair in all_pairs()]
    return lambda wildcards: [run_index(*pair) for pair in final_pairs()]


def summary_timings(files):
    """`files` (timing files of every job) without screening; else an input
    function that leaves out the benchmark timings of pairs screened out."""
    if not screening_stages():
        return files

    def survivors(wildcards):
        kept = {benchmark_timing(*pair) for pair in final_pairs()}
        screened = {benchmark_timing(*pair) for pair in all_pairs()} - kept
        return [f for f in files if f not in screened]

    return survivors


def benchmark_timing(descriptor, distance):
    return f"results/timings/benchmark/{descriptor}__{distance}.tsv"
