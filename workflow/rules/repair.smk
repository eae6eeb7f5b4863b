# Stage 8: repair without retraining (issue 6). For every run of the models listed in
# config["repair"]["models"], the final checkpoint (or, with checkpoints: grid, every probed
# checkpoint) gets `latentgen repair`: K-FAC factors from the training inputs, the sweep of the
# curvature edit over layer sets × rho, its controls, and the VeLPIC transfer as a reference.
# Then results/fig_repair.pdf (+ .csv, .json) and results/repair_summary.csv from the final
# checkpoints. Included by the Snakefile after figures.smk; uses common.smk's helpers.
# Its helpers (configuration, paths, input functions) are in common.smk.


rule repair:
    input:
        checkpoint=repair_checkpoint,
        data=DATA,
        labels=LABELS,
    output:
        table=REPAIR_TABLE,
        layers=REPAIR_LAYERS,
        provenance=REPAIR_PROVENANCE,
    log:
        log_file(f"repair/{TAG}/run{{run}}/epoch{{epoch}}.log"),
    benchmark:
        bench_file(f"repair/{TAG}/run{{run}}/epoch{{epoch}}.tsv")
    params:
        options=repair_options,
        device=DEVICE,
        gpu=gpu_prefix("repair"),
        config_json=lambda wildcards: json.dumps({"repair": REPAIR, "seeds": SEEDS}, sort_keys=True),
    threads: THREADS["repair"]
    resources:
        gpu_units=gpu_units_of("repair"),
    conda:
        "../../envs/probe.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork repair --checkpoint {input.checkpoint} --labels {input.labels}"
        " --prepared {input.data} --out {output.table} --device {params.device} --threads {threads}"
        " {params.options} --config-json {params.config_json:q} --quiet > {log} 2>&1"


rule fig_repair:
    input:
        repair_tables("final"),
    output:
        pdf=report(out("fig_repair.pdf"), caption="../report/fig_repair.rst", category="Figures",
                   labels={"figure": "Repair (K-FAC edit vs VeLPIC transfer)"}),
        csv=out("fig_repair.csv"),
        provenance=out("fig_repair.json"),
        summary=out("repair_summary.csv"),
    log:
        log_file("figures/fig_repair.log"),
    benchmark:
        bench_file("figures/fig_repair.tsv")
    params:
        config_json=lambda wildcards: json.dumps({"repair": REPAIR, "models": {n: MODELS[n] for n in REPAIR["models"]},
                                                  "corruptions": CORRUPTIONS, "runs": RUNS}, sort_keys=True),
    threads: THREADS["figure"]
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.prefork figure --name fig_repair --inputs {input} --out {output.pdf} --csv {output.csv}"
        " --summary {output.summary} --config-json {params.config_json:q} > {log} 2>&1"


rule fig_repair_epochs:
    input:
        repair_tables("grid"),
    output:
        pdf=report(out("fig_repair_epochs.pdf"), caption="../report/fig_repair_epochs.rst", category="Figures",
                   labels={"figure": "Repair over training (every probed checkpoint)"}),
        csv=out("fig_repair_epochs.csv"),
        provenance=out("fig_repair_epochs.json"),
    log:
        log_file("figures/fig_repair_epochs.log"),
    benchmark:
        bench_file("figures/fig_repair_epochs.tsv")
    params:
        config_json=lambda wildcards: json.dumps({"repair": REPAIR, "models": {n: MODELS[n] for n in REPAIR["models"]},
                                                  "corruptions": CORRUPTIONS, "runs": RUNS}, sort_keys=True),
    threads: THREADS["figure"]
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.prefork figure --name fig_repair_epochs --inputs {input} --out {output.pdf}"
        " --csv {output.csv} --config-json {params.config_json:q} > {log} 2>&1"
