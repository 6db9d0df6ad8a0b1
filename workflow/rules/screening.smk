# Staged screening (config `screening.stages`, paper §6.4). Stage s benchmarks its
# candidate descriptor × distance pairs under protocol `all` on the first N base
# groups, read from the full descriptor stores; the checkpoint `screen` keeps
# those above min_f1 and/or the top_k; stage s+1's candidates and the full-size
# benchmarks (summary_benchmarks in common.smk) are the survivors. Without
# stages no target asks for these rules.


rule screen_benchmark:
    input:
        lists=[variant_list(v) for v in VARIANTS],
        stores=lambda w: [store(w.descriptor, v) for v in VARIANTS],
        code=code("benchmark"),
    output:
        table="results/screening/stage{stage}/{descriptor}__{distance}.parquet",
        stats="results/screening/stage{stage}/{descriptor}__{distance}.json",
    log:
        "logs/screening/stage{stage}/{descriptor}__{distance}.log",
    benchmark:
        "results/screening/timings/stage{stage}/{descriptor}__{distance}.tsv"
    wildcard_constraints:
        stage=r"[1-9]\d*",
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
        bases=lambda w: screening_stages()[int(w.stage) - 1]["bases"],
        spec=benchmark_spec,
        inputs=lambda w, input: named_args("list", VARIANTS, input.lists)
        + " "
        + named_args("store", VARIANTS, input.stores),
    shell:
        "risbench benchmark --descriptor {wildcards.descriptor} --distance {wildcards.distance}"
        " --bases {params.bases} {params.inputs} --spec {params.spec:q}"
        " --table all={output.table:q} --stats all={output.stats:q} 2> {log:q}"


checkpoint screen:
    input:
        stats=lambda w: [
            f"results/screening/stage{w.stage}/{descriptor}__{distance}.json"
            for descriptor, distance in screening_candidates(w.stage)
        ],
        code=code("screening"),
    output:
        screening_stage_table("{stage}"),
    log:
        "logs/screening/stage{stage}.log",
    wildcard_constraints:
        stage=r"[1-9]\d*",
    localrule: True
    conda:
        "../envs/risbench.yaml"
    params:
        bases=lambda w: screening_stages()[int(w.stage) - 1]["bases"],
        rule=lambda w: " ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in screening_stages()[int(w.stage) - 1].items()
            if key in ("min_f1", "top_k") and value is not None
        ),
    shell:
        "risbench screen stage --stage {wildcards.stage} --bases {params.bases} {params.rule}"
        " --out {output:q} {input.stats:q} 2> {log:q}"


# Every stage, then the survivors' full-size `all` results (when that protocol runs).
rule screening_table:
    input:
        stages=[screening_stage_table(s + 1) for s in range(len(screening_stages()))],
        final=lambda w: (
            [
                benchmark_result("all", descriptor, distance, "json")
                for descriptor, distance in final_pairs()
            ]
            if "all" in PROTOCOLS
            else []
        ),
        images="results/dataset/images.parquet",
        code=code("screening"),
    output:
        csv=report(
            "results/tables/screening.csv",
            caption=(
                "../report/screening.rst"
                if Path(workflow.current_basedir, "../report/screening.rst").exists()
                else None
            ),
            category="Tables",
            labels={
                "title": "6. Screening stages (paper §6.4)",
                "file": "screening.csv",
            },
        ),
        markdown="results/tables/screening.md",
    log:
        "logs/screening/table.log",
    localrule: True
    conda:
        "../envs/risbench.yaml"
    shell:
        "risbench screen table --stages {input.stages} --final {input.final}"
        " --images {input.images:q} --csv {output.csv:q} --markdown {output.markdown:q} 2> {log:q}"
