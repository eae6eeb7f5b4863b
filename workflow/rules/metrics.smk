# Stage 6: one tidy table per model, dataset and corruption degree: every run's probe rows and
# the model's own accuracies from each run's training log, with a provenance sidecar.


rule metrics:
    input:
        probes=expand(RUN_PROBES, run=RUNS, allow_missing=True),
        logs=expand(TRAIN_LOG, run=RUNS, allow_missing=True),
    output:
        csv=METRICS,
        provenance=METRICS_PROVENANCE,
    log:
        log_file(f"metrics/{TAG}.log"),
    benchmark:
        bench_file(f"metrics/{TAG}.tsv")
    params:
        logs=train_log_args,
        config_json=provenance_config,
        seeds=json.dumps(SEEDS, sort_keys=True),
    threads: THREADS["metrics"]
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.prefork metrics --probes {input.probes} --train-logs {params.logs} --out {output.csv}"
        " --config-json {params.config_json:q} --seeds {params.seeds:q} > {log} 2>&1"
