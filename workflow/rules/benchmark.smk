# One job per descriptor and distance: it reads the descriptor's stores once and
# writes every protocol's table, stats and per-query outcomes at the best radius
# (`all` and `distractors` from one sweep), and a run index naming them for the
# summary.
rule benchmark:
    input:
        lists=[variant_list(v) for v in VARIANTS],
        stores=lambda w: [store(w.descriptor, v) for v in VARIANTS],
        code=code("benchmark"),
    output:
        tables=[
            benchmark_result(p, "{descriptor}", "{distance}", "parquet")
            for p in PROTOCOLS
        ],
        stats=[
            benchmark_result(p, "{descriptor}", "{distance}", "json")
            for p in PROTOCOLS
        ],
        queries=[
            benchmark_result(p, "{descriptor}", "{distance}", "queries.parquet")
            for p in PROTOCOLS
        ],
        run=run_index("{descriptor}", "{distance}"),
    log:
        "logs/benchmark/{descriptor}__{distance}.log",
    benchmark:
        benchmark_timing("{descriptor}", "{distance}")
    conda:
        "../envs/cupy.yaml"
        if placement.uses_gpu(config, "benchmark")
        else "../envs/risbench.yaml"
    threads: benchmark_threads
    resources:
        gpu=int(placement.uses_gpu(config, "benchmark")),
        mem_mb=mem_mb(16000),
        runtime=runtime(240),
    params:
        spec=benchmark_spec,
        inputs=lambda w, input: named_args("list", VARIANTS, input.lists)
        + " "
        + named_args("store", VARIANTS, input.stores),
        outputs=lambda w, output: named_args("table", PROTOCOLS, output.tables)
        + " "
        + named_args("stats", PROTOCOLS, output.stats)
        + " "
        + named_args("queries", PROTOCOLS, output.queries),
    shell:
        "risbench benchmark --descriptor {wildcards.descriptor} --distance {wildcards.distance}"
        " {params.inputs} --spec {params.spec:q} {params.outputs}"
        " --run-index {output.run:q} 2> {log:q}"
