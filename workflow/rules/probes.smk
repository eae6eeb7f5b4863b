# Stage 4: one job per training run probes every checkpoint the build needs (latentgen probe-run):
# on the run's device it computes each checkpoint's activations into memory and fits the probe
# families there — no activation file unless `activations: keep` exports one. Runs of the figure
# groups' models are probed at every grid checkpoint (their run table feeds the metrics), the
# others at the final checkpoint only; the final checkpoint also gets the 2025 paper's families
# and label sets (config `probes`; every checkpoint with probes: {checkpoints: grid}), and a clean
# model's also every other degree's label file (-exp3). Input-layer rows are fit once and shared
# between jobs (probes/input-cache). Interrupted? The job resumes from its last probed checkpoint.


rule probe_run:
    input:
        manifest=MANIFEST,
        data=DATA,
        labels=LABELS,
        extra_labels=clean_model_labels,
    output:
        run=RUN_PROBES,
        final=FINAL_PROBES,
    log:
        log_file(f"probe_run/{TAG}/run{{run}}.log"),
    benchmark:
        bench_file(f"probe_run/{TAG}/run{{run}}.tsv")
    params:
        options=probe_run_options,
        keep=keep_activations_option,
        cache=out(LAYOUT["input_cache"]),
        device=DEVICE,
        gpu=gpu_prefix("probe_run"),
    priority: PRIORITY["probe_run"]
    threads: THREADS["probe"]
    resources:
        gpu_units=gpu_units_of("probe_run"),
    conda:
        "../../envs/probe.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork probe-run --run-dir $(dirname {input.manifest})"
        " --prepared {input.data} --labels {input.labels} --device {params.device} --threads {threads}"
        " {params.options} {params.keep} --input-cache {params.cache}"
        " --out {output.run} --final-out {output.final} > {log} 2>&1"
