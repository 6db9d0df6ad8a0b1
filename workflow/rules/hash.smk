# Every configured hash of one variant comes out of one job: each image is
# decoded once for all of them (as one forward pass serves every CNN tap).
if HASHES:

    rule hash:
        input:
            list=variant_list("{variant}"),
            code=code("hashing"),
        output:
            [directory(store(name, "{variant}")) for name in HASHES],
        log:
            "logs/hash/{variant}.log",
        benchmark:
            "results/timings/hash/{variant}.tsv"
        conda:
            "../envs/risbench.yaml"
        resources:
            mem_mb=mem_mb(4000),
            runtime=runtime(120),
        params:
            stores=lambda wildcards, output: named_args("store", HASHES, output),
        shell:
            "risbench hash-store --list {input.list:q} {params.stores} 2> {log:q}"
