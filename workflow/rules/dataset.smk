rule dataset:
    input:
        code=code("dataset", "catalog"),
    output:
        manifest="results/dataset/manifest.parquet",
        list=variant_list("original"),
        images=directory("results/images/original"),
        skipped="results/dataset/skipped.csv",
        duplicates="results/dataset/duplicates.csv",
    params:
        spec=json.dumps(config["dataset"], sort_keys=True),
    log:
        "logs/dataset.log",
    benchmark:
        "results/timings/dataset.tsv"
    shell:
        "risbench dataset --spec {params.spec:q} --images-dir {output.images}"
        " --manifest {output.manifest} --list {output.list}"
        " --skipped {output.skipped} --duplicates {output.duplicates} 2> {log}"


rule catalog:
    input:
        lists=[variant_list(v) for v in VARIANTS],
        code=code("catalog"),
    output:
        "results/dataset/images.parquet",
    log:
        "logs/catalog.log",
    shell:
        "risbench catalog --out {output} {input.lists} 2> {log}"
