# MIRFLICKR-25k (dataset.source: mirflickr): the archive is a cache kept beside
# the unpacked folder (with its .part while downloading), not a rule output, so
# that no rerun deletes a finished or half-finished download.
MIRFLICKR_ARCHIVE = "results/download/mirflickr25k.zip"
MIRFLICKR_DIR = "results/download/mirflickr25k"
# Copies of the dataset reports in the log folder: Snakemake deletes the outputs of
# a failed job (results/dataset/*.csv), never its logs, and these say why it failed.
DATASET_REPORTS = "logs/dataset"
# Variants a data set brings (source variants: its folders beside originals/; source
# pairs: its queries): the dataset job writes their folders and lists, byte-exact
# copies of the user's files; no modify job makes them.
DATASET_VARIANTS = risbench_config.dataset_variants(config)
VARIANTS_ROOT = "results/images"


rule download_mirflickr:
    output:
        directory(MIRFLICKR_DIR),
    log:
        "logs/download_mirflickr.log",
    localrule: True
    conda:
        "../envs/risbench.yaml"
    params:
        url=config["dataset"]["url"],
        sha256=(
            f"--sha256 {config['dataset']['sha256']}"
            if config["dataset"]["sha256"]
            else ""
        ),
        archive=MIRFLICKR_ARCHIVE,
        # dataset.max_unpacked_gb (not set: 50 x the archive's size) bounds the unpack
        max_unpacked=(
            f"--max-unpacked-gb {config['dataset']['max_unpacked_gb']}"
            if config["dataset"].get("max_unpacked_gb")
            else ""
        ),
    shell:
        "risbench download --url {params.url:q} {params.sha256} --archive {params.archive}"
        " --unpack-to {output} {params.max_unpacked} 2> {log}"


rule dataset:
    input:
        code=code("dataset", "layouts", "catalog"),
        unpacked=[MIRFLICKR_DIR] if config["dataset"]["source"] == "mirflickr" else [],
        # a pairs data set's ground truth: editing it reruns the dataset job
        truth=(
            [config["dataset"]["ground_truth"]]
            if config["dataset"]["source"] == "pairs"
            else []
        ),
    output:
        manifest="results/dataset/manifest.parquet",
        list=variant_list("original"),
        images=directory("results/images/original"),
        skipped="results/dataset/skipped.csv",
        duplicates="results/dataset/duplicates.csv",
        near_duplicates="results/dataset/near_duplicates.csv",
        own_lists=[variant_list(v) for v in DATASET_VARIANTS],
        own_images=[directory(f"{VARIANTS_ROOT}/{v}") for v in DATASET_VARIANTS],
    log:
        main="logs/dataset.log",
        skipped=f"{DATASET_REPORTS}/skipped.csv",
        duplicates=f"{DATASET_REPORTS}/duplicates.csv",
        near_duplicates=f"{DATASET_REPORTS}/near_duplicates.csv",
    benchmark:
        "results/timings/dataset.tsv"
    conda:
        "../envs/risbench.yaml"
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime(120),
    params:
        spec=json.dumps(config["dataset"], sort_keys=True),
        source_dir=MIRFLICKR_DIR,
        reports_dir=DATASET_REPORTS,
        variants_root=f"--variants-root {VARIANTS_ROOT}" if DATASET_VARIANTS else "",
    shell:
        "risbench dataset --spec {params.spec:q} --images-dir {output.images}"
        " --manifest {output.manifest} --list {output.list}"
        " --skipped {output.skipped} --duplicates {output.duplicates}"
        " --near-duplicates {output.near_duplicates} --source-dir {params.source_dir}"
        " --reports-dir {params.reports_dir:q} {params.variants_root} 2> {log.main:q}"


rule catalog:
    input:
        lists=[variant_list(v) for v in VARIANTS],
        code=code("catalog"),
    output:
        "results/dataset/images.parquet",
    log:
        "logs/catalog.log",
    localrule: True
    conda:
        "../envs/risbench.yaml"
    shell:
        "risbench catalog --out {output:q} {input.lists:q} 2> {log:q}"
