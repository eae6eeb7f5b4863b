# Stage 9 (the 2025 paper): relabel-and-retrain on each run's final checkpoint, for the models in
# config["relabel"]["models"] and each kind of MASC subspaces. Like training, only the result
# (written last) is declared: the relabelled label file and resume.pt beside it must survive a
# rerun so an interrupted job resumes.


rule relabel:
    input:
        checkpoint=relabel_checkpoint,
        data=DATA,
        labels=LABELS,
    output:
        result=RELABEL_RESULT,
        provenance=RELABEL_PROVENANCE,
    log:
        log_file(f"relabel/{TAG}/run{{run}}/{{subspaces}}.log"),
    benchmark:
        bench_file(f"relabel/{TAG}/run{{run}}/{{subspaces}}.tsv")
    params:
        options=command_line("relabel", {k: RELABEL[k] for k in ("max_epochs", "patience") if RELABEL.get(k) is not None}),
        device=DEVICE,
        gpu=gpu_prefix("relabel"),
        config_json=lambda wildcards: json.dumps({"relabel": RELABEL, "seeds": SEEDS}, sort_keys=True),
    threads: THREADS["train"]
    resources:
        gpu_units=gpu_units_of("relabel"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork relabel --checkpoint {input.checkpoint} --labels {input.labels}"
        " --prepared {input.data} --subspaces {wildcards.subspaces} --out $(dirname {output.result})"
        " {params.options} --device {params.device} --threads {threads} --config-json {params.config_json:q}"
        " --quiet > {log} 2>&1"
