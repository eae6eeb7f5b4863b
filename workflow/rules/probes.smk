# Stage 5: the probes of one checkpoint on its activations -> a small tidy CSV; then one CSV per
# run (all its probed checkpoints, known from the run's manifest). Grid checkpoints get the TMLR
# figures' MASC, VeLPIC and VeLPIC weight transfer; the final checkpoint (every checkpoint with
# probes: {checkpoints: grid}) also the 2025 paper's families and label sets (config `probes`),
# and a clean model's also every other degree's label file (-exp3).
#
# The activation file is temp(), but Snakemake defers deleting temp() files while any checkpoint
# job (here: any training run) is still to finish, which would let activations pile up for the
# whole experiment; so the probe job deletes its own input once its table is written
# (`--delete-activations`; not with --notemp).


rule probe:
    input:
        activations=ACTIVATIONS,
        manifest=MANIFEST,
        data=DATA,
        extra_labels=lambda wildcards: list(clean_model_labels(wildcards).values()),
    output:
        PROBES,
    log:
        log_file(f"probe/{TAG}/run{{run}}/epoch{{epoch}}.log"),
    benchmark:
        bench_file(f"probe/{TAG}/run{{run}}/epoch{{epoch}}.tsv")
    params:
        checkpoint=checkpoint_file,
        options=probe_options,
        device=DEVICE,
        gpu=GPU_PREFIX,
        delete_activations="" if workflow.storage_settings.notemp else "--delete-activations",
    group:
        "probe_checkpoint"
    priority: 2
    threads: THREADS["probe"]
    resources:
        gpu=GPU,
    conda:
        "../../envs/probe.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork probe --activations {input.activations}"
        " --checkpoint {params.checkpoint} --prepared {input.data} --device {params.device} --threads {threads}"
        " {params.options} {params.delete_activations} --out {output} > {log} 2>&1"


rule run_probes:
    input:
        run_probe_files,
    output:
        RUN_PROBES,
    log:
        log_file(f"run_probes/{TAG}/run{{run}}.log"),
    benchmark:
        bench_file(f"run_probes/{TAG}/run{{run}}.tsv")
    priority: 3
    threads: 1
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.prefork concat --inputs {input} --out {output} > {log} 2>&1"
