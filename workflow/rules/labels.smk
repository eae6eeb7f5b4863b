# Stage 2: seeded label corruption, one label file per dataset and degree (shared by every
# model and run, as in the authors' code).


rule corrupt:
    input:
        DATA,
    output:
        LABELS,
    log:
        log_file("corrupt/{dataset}/c{corruption}.log"),
    benchmark:
        bench_file("corrupt/{dataset}/c{corruption}.tsv")
    params:
        seed=SEEDS["labels"],
        options=corrupt_options,
    threads: THREADS["corrupt"]
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m latentgen.prefork corrupt --dataset {wildcards.dataset} --corruption {wildcards.corruption}"
        " --seed {params.seed} --prepared {input} {params.options} --out {output} > {log} 2>&1"
