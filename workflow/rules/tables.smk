# Stage 10 (the 2025 paper): its tables, one rule per entry of latentgen.paper.tables.TABLES
# (`snakemake results/table_masc.csv` builds one, and only what it needs), each as .csv, .tex and
# .md with a provenance sidecar and, for two of them, a bar chart; then results/claims.csv, the
# papers' quantitative claims evaluated on this build.

for name in TABLES_CFG["build"]:
    spec = TABLES[name]

    rule:
        name:
            name
        input:
            **table_inputs(name),
        output:
            csv=report(out(f"{name}.csv"), caption=f"../report/{name}.rst", category="Tables",
                       labels={"table": name}),
            tex=out(f"{name}.tex"),
            md=out(f"{name}.md"),
            provenance=out(f"{name}.json"),
            **({"pdf": report(out(f"{spec.figure}.pdf"), caption=f"../report/{spec.figure}.rst",
                              category="Figures", labels={"figure": spec.figure})} if spec.figure else {}),
        log:
            log_file(f"tables/{name}.log"),
        benchmark:
            bench_file(f"tables/{name}.tsv")
        params:
            name=name,
            inputs=lambda wildcards, input: " ".join(
                f"--{kind.replace('_', '-')} {' '.join(input[kind])}" for kind in input.keys()),
            pdf=(lambda wildcards, output: f"--pdf {output.pdf}") if spec.figure else "",
            prefix=lambda wildcards, output: output.csv[: -len(".csv")],
            config_json=json.dumps({"tables": TABLES_CFG, "probes": PROBES_2025, "relabel": RELABEL}, sort_keys=True),
        threads: THREADS["figure"]
        conda:
            "../../envs/plot.yaml"
        shell:
            "python -m latentgen.prefork table --name {params.name} {params.inputs} --out-prefix {params.prefix}"
            " {params.pdf} --config-json {params.config_json:q} > {log} 2>&1"


rule claims:
    input:
        **table_inputs("claims"),
    output:
        csv=report(out("claims.csv"), caption="../report/claims.rst", category="Tables", labels={"table": "claims"}),
        provenance=out("claims.json"),
    log:
        log_file("tables/claims.log"),
    benchmark:
        bench_file("tables/claims.tsv")
    params:
        config_json=json.dumps({"tables": TABLES_CFG, "probes": PROBES_2025, "relabel": RELABEL,
                                "figures": config["figures"]}, sort_keys=True),
    threads: THREADS["figure"]
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.prefork claims --probes {input.probes} --train-logs {input.train_logs}"
        " --relabel {input.relabel} --metrics {input.metrics} --out {output.csv}"
        " --config-json {params.config_json:q} > {log} 2>&1"
