# Stage 4: one checkpoint's layer activations on the full train and test sets (HDF5). The file
# is temporary: it is deleted as soon as its probe job has read it. Probes outrank activations
# (priority), so each file is probed right after it is written and the activations on disk at
# any moment are bounded by the number of jobs running at once, not by the length of a run.
# activations + probe of one checkpoint form a group (one cluster submission per checkpoint).


rule activations:
    input:
        manifest=MANIFEST,
        data=DATA,
        labels=LABELS,
    output:
        temp(ACTIVATIONS),
    log:
        log_file(f"activations/{TAG}/run{{run}}/epoch{{epoch}}.log"),
    benchmark:
        bench_file(f"activations/{TAG}/run{{run}}/epoch{{epoch}}.tsv")
    params:
        checkpoint=checkpoint_file,
        options=command_line("activations", config["activation_args"]),
        device=DEVICE,
        gpu=GPU_PREFIX,
    group:
        "probe_checkpoint"
    priority: 1
    threads: THREADS["activations"]
    resources:
        gpu=GPU,
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork activations --checkpoint {params.checkpoint} --prepared {input.data}"
        " --labels {input.labels} --device {params.device} --threads {threads}"
        " {params.options} --out {output} > {log} 2>&1"
