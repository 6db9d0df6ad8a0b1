rule summarize:
    input:
        stats=benchmark_outputs("json"),
        code=code("report"),
    output:
        summary_outputs(),
    log:
        "logs/summarize.log",
    shell:
        "risbench summarize --tables-dir results/tables --figures-dir results/figures"
        " {input.stats} 2> {log}"
