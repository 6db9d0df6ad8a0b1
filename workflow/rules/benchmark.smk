rule benchmark:
    input:
        lists=lambda w: [variant_list(v) for v in protocol_variants(w.protocol)],
        stores=lambda w: [store(w.descriptor, v) for v in protocol_variants(w.protocol)],
        code=code("protocols", "metrics", "distance", "catalog", "store"),
    output:
        table="results/benchmark/{protocol}/{descriptor}__{distance}.parquet",
        stats="results/benchmark/{protocol}/{descriptor}__{distance}.json",
    log:
        "logs/benchmark/{protocol}/{descriptor}__{distance}.log",
    benchmark:
        "results/timings/benchmark/{protocol}/{descriptor}__{distance}.tsv"
    conda:
        CONDA_ENV
    threads: lambda wildcards: 1 if wildcards.distance == "hamming" else 4
    resources:
        gpu=1 if config["benchmark"]["device"] == "cuda" else 0,
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        spec=benchmark_spec,
        inputs=lambda w: " ".join(
            f"--list {v}={variant_list(v)} --store {v}={store(w.descriptor, v)}"
            for v in protocol_variants(w.protocol)
        ),
    shell:
        "risbench benchmark --protocol {wildcards.protocol} --distance {wildcards.distance}"
        " {params.inputs} --spec {params.spec:q}"
        " --table {output.table} --stats {output.stats} 2> {log}"
