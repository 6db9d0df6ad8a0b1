# Compact codes (config `compress`; docs/design.md, "Compact descriptors"): one
# job per source descriptor fits every configured method once on the training
# split, keeps each fitted encoder (encoder.npz beside the code's stores) and
# writes each code's store for every variant (seconds of work: a job
# a store would spend them starting interpreters and refitting).
from risbench import compress as risbench_compress
from risbench import encoders as risbench_encoders

COMPRESS_METHODS = {
    source: {risbench_compress.descriptor_name(source, spec): spec for spec in specs}
    for source, specs in risbench_compress.sources(config).items()
}

# The jobs' Snakemake benchmark files (the summary's timing table reads them).
COMPRESS_TIMINGS = [
    f"results/timings/compress/{source}.tsv" for source in COMPRESS_METHODS
]

for compress_source, compress_methods in COMPRESS_METHODS.items():
    # rule names are identifiers: a source's . + - become _
    compress_rule = re.sub(r"[^A-Za-z0-9_]", "_", compress_source)
    compress_outputs = [
        (f"{name}/{variant}", store(name, variant))
        for name in compress_methods
        for variant in VARIANTS
    ]
    # each fitted encoder, kept so that `risbench index` encodes new photos alike
    compress_encoders = {
        name: risbench_encoders.encoder_path(name) for name in compress_methods
    }

    rule:
        name:
            f"compress_{compress_rule}"
        input:
            lists=[variant_list(v) for v in VARIANTS],
            stores=[store(compress_source, v) for v in VARIANTS],
            code=code("compress"),
        output:
            [directory(path) for _, path in compress_outputs],
            list(compress_encoders.values()),
        log:
            f"logs/compress/{compress_source}.log",
        benchmark:
            COMPRESS_TIMINGS[list(COMPRESS_METHODS).index(compress_source)]
        conda:
            "../envs/risbench.yaml"
        resources:
            mem_mb=mem_mb(8000),
            runtime=runtime(120),
        params:
            source=compress_source,
            spec=json.dumps(
                {
                    "methods": compress_methods,
                    "split": config["compress"]["split"],
                    "pq_nbits": config["compress"]["pq_nbits"],
                },
                sort_keys=True,
            ),
            inputs=named_args("list", VARIANTS, [variant_list(v) for v in VARIANTS])
            + " "
            + named_args(
                "store", VARIANTS, [store(compress_source, v) for v in VARIANTS]
            ),
            outputs=named_args(
                "output",
                [k for k, _ in compress_outputs],
                [p for _, p in compress_outputs],
            )
            + " "
            + named_args(
                "encoder", list(compress_encoders), list(compress_encoders.values())
            ),
        shell:
            "risbench compress --source {params.source:q} --spec {params.spec:q}"
            " {params.inputs} {params.outputs} 2> {log:q}"
