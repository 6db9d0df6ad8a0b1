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
        variant=alternation(MODIFIED),
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        reencode=(
            f"--reencode-quality {config['reencode_quality']}"
            if config["reencode_quality"]
            else ""
        ),
    shell:
        "risbench modify --variant {wildcards.variant} --originals {input.originals}"
        " --images-dir {output.images} --list {output.list} {params.reencode} 2> {log}"
