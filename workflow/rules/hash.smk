rule hash:
    input:
        list=variant_list("{variant}"),
        code=code("hashing", "phash", "store"),
    output:
        directory("results/descriptors/{hash}/{variant}.zarr"),
    log:
        "logs/hash/{hash}/{variant}.log",
    benchmark:
        "results/timings/hash/{hash}/{variant}.tsv"
    wildcard_constraints:
        hash=alternation(config["hashes"]),
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    shell:
        "risbench hash-store --descriptor {wildcards.hash} --list {input.list}"
        " --out {output} 2> {log}"
