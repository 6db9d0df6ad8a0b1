# Only the variants risbench makes: a data set's own variants come from the dataset job.
MADE_VARIANTS = risbench_config.made_variants(config)


rule modify:
    input:
        originals=variant_list("original"),
        code=code("modify", "catalog"),
    output:
        images=directory("results/images/{variant}"),
        list="results/images/{variant}.parquet",
    log:
        "logs/modify/{variant}.log",
    benchmark:
        "results/timings/modify/{variant}.tsv"
    wildcard_constraints:
        variant=alternation(MADE_VARIANTS),
    conda:
        "../envs/risbench.yaml"
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime(120),
    params:
        reencode=(
            f"--reencode-quality {config['reencode_quality']}"
            if config["reencode_quality"]
            else ""
        ),
    shell:
        "risbench modify --variant {wildcards.variant:q} --originals {input.originals:q}"
        " --images-dir {output.images:q} --list {output.list:q} {params.reencode} 2> {log:q}"
