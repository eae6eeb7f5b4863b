# Stage 3: training, a Snakemake checkpoint: training stops early (target accuracy), so the
# epochs saved are known only afterwards, from manifest.json.
#
# Only manifest.json (written last) and train_log.csv are declared outputs. Snakemake deletes
# a job's outputs before it reruns it, and resuming an interrupted run needs the checkpoints
# folder and resume.pt to survive, so those are deliberately not outputs.


checkpoint train:
    input:
        data=DATA,
        labels=LABELS,
    output:
        manifest=MANIFEST,
        train_log=TRAIN_LOG,
    log:
        log_file(f"train/{TAG}/run{{run}}.log"),
    benchmark:
        bench_file(f"train/{TAG}/run{{run}}.tsv")
    params:
        options=train_options,
        device=DEVICE,
        gpu=gpu_prefix("train"),
    threads: THREADS["train"]
    resources:
        gpu_units=gpu_units_of("train"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork train --arch {wildcards.arch} --dataset {wildcards.dataset}"
        " --corruption {wildcards.corruption} --run {wildcards.run} --out $(dirname {output.manifest})"
        " --prepared {input.data} --labels {input.labels} {params.options}"
        " --device {params.device} --threads {threads} --quiet > {log} 2>&1"
