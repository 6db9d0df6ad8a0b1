# One rule per configured model: a model's descriptors (every layer, pooling and
# normalisation) come out of one forward pass, so they are one job per variant.
for model_key, model_spec in config["models"].items():
    model_descriptors = risbench_config.model_descriptors(model_key, model_spec)

    rule:
        name:
            f"extract_{model_key}"
        input:
            list=variant_list("{variant}"),
            code=code("features"),
        output:
            [directory(store(name, "{variant}")) for name in model_descriptors],
        log:
            f"logs/extract/{model_key}/{{variant}}.log",
        benchmark:
            f"results/timings/extract/{model_key}/{{variant}}.tsv"
        conda:
            "../envs/torch.yaml"
        threads: threads(config["extract"]["threads"])
        resources:
            gpu=int(placement.uses_gpu(config, "extract")),
            mem_mb=mem_mb(16000),
            runtime=runtime(240),
        params:
            model=model_key,
            spec=json.dumps(model_spec, sort_keys=True),
            stores=lambda wildcards, output, names=model_descriptors: named_args(
                "store", names, output
            ),
            device=config["extract"]["device"],
            batch_size=config["extract"]["batch_size"],
            workers=config["extract"]["workers"],
        shell:
            "risbench extract --model {params.model:q} --spec {params.spec:q}"
            " --list {input.list:q} {params.stores} --device {params.device}"
            " --batch-size {params.batch_size} --workers {params.workers} 2> {log:q}"
