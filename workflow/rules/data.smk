# Stage 1: raw dataset -> prepared .npz (images as stored, true labels, normalisation).
# Runs on the submit host under a cluster executor: compute nodes often have no network.

localrules:
    download,


rule download:
    output:
        DATA,
    log:
        log_file("download/{dataset}.log"),
    benchmark:
        bench_file("download/{dataset}.tsv")
    params:
        source=lambda wc: "" if wc.dataset == "digits" else f"--data-root {shlex.quote(config['data_root'])}",
        network="" if config["download"] else "--no-download",
    threads: THREADS["download"]
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m latentgen.prefork download --dataset {wildcards.dataset} {params.source} {params.network}"
        " --out {output} > {log} 2>&1"
