include: "workflow/Snakefile"


# Snakemake never takes the default target from an included file, so the
# top-level Snakefile names it: `snakemake` alone builds `rule all`.
rule default:
    default_target: True
    input:
        rules.all.input,
