# The paper's tables and figures, and the captions of `snakemake --report`.


report: "../report/workflow.rst"


# The Snakemake `benchmark:` file of every job the summary covers.
TIMING_FILES = [rules.dataset.benchmark] + expand(
    rules.modify.benchmark, variant=MADE_VARIANTS
)
if HASHES:
    TIMING_FILES += expand(rules.hash.benchmark, variant=VARIANTS)
for model_key in config["models"]:
    TIMING_FILES += expand(
        getattr(rules, f"extract_{model_key}").benchmark, variant=VARIANTS
    )
TIMING_FILES += COMPRESS_TIMINGS
TIMING_FILES += [benchmark_timing(*pair) for pair in all_pairs()]

# What the report's result lists show (sorted by this label), per output name.
REPORT_TITLES = {
    "table3_all": "1. Table 3: best F1 per descriptor, protocol all",
    "table4_single": "2. Table 4: best F1 per modification",
    "distances": "3. Distances of similar and dissimilar pairs",
    "ranked": "4. Ranked retrieval: recall@k, mAP, micro-AP",
    "timing": "5. Time and memory per stage",
    "examples": "1. Example images (Fig. 3)",
    "f1_by_modification": "2. Best F1 per modification (Fig. 4)",
    "prf_radius": "3. Precision, recall, F1 against radius (Figs. 5-7)",
    "distance_histograms": "4. Distance distributions",
    "robustness": "5. Robustness to modification strength",
    "operating_points": "6. Operating points: recall at fixed precision",
    "thresholds": "7. Thresholds to deploy per descriptor",
    "failures": "8. Failures: queries that miss their original",
    "pr_curve": "3b. Precision-recall curves",
    "failure_gallery": "6. Failure gallery: hardest queries",
    "bytes_f1": "9. Best F1 against bytes per image",
}

# Tables (their rounded, sortable HTML page) and figures go into the HTML report,
# each with its caption under workflow/report/; the CSV (every value unrounded)
# and Markdown copies of the tables stay out of it.
REPORT_CATEGORIES = {".html": "Tables", ".png": "Figures"}
SUMMARY_REPORTED = []
for path in summary_outputs():
    name, suffix = Path(path).stem, Path(path).suffix
    if suffix not in REPORT_CATEGORIES:
        SUMMARY_REPORTED.append(path)
        continue
    category = REPORT_CATEGORIES[suffix]
    labels = {"title": REPORT_TITLES.get(name, name), "file": Path(path).name}
    caption = f"../report/{name}.rst"
    marked = report(path, caption=caption, category=category, labels=labels)
    SUMMARY_REPORTED.append(marked)


rule summarize:
    input:
        runs=summary_runs(),
        timings=summary_timings(TIMING_FILES),
        images="results/dataset/images.parquet",
        code=code("report"),
    output:
        SUMMARY_REPORTED,
    log:
        "logs/summarize.log",
    localrule: True
    conda:
        "../envs/risbench.yaml"
    params:
        robustness=(
            "--robustness"
            if "results/figures/robustness.png" in summary_outputs()
            else ""
        ),
        l2_normalized=risbench_config.l2_normalized(config),
        own_variants=risbench_config.dataset_variants(config),
    shell:
        "risbench summarize --tables-dir results/tables --figures-dir results/figures"
        " --runs {input.runs:q} --timings {input.timings:q} --images {input.images:q}"
        " {params.robustness} --l2-normalized {params.l2_normalized:q}"
        " --own-variants {params.own_variants:q} 2> {log:q}"
