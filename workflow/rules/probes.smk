# Stage 5: MASC, VeLPIC and the VeLPIC weight transfer on one checkpoint's activations -> a small
# tidy CSV; then one CSV per run (all its probed checkpoints, known from the run's manifest).
#
# The probe job deletes its activation file itself once it succeeded: Snakemake defers deleting
# temp() files until every checkpoint job (here: every training run) has finished, which would
# let activations pile up for the whole length of the experiment.


rule probe:
    input:
        activations=ACTIVATIONS,
        manifest=MANIFEST,
        data=DATA,
    output:
        PROBES,
    log:
        log_file(f"probe/{TAG}/run{{run}}/epoch{{epoch}}.log"),
    benchmark:
        bench_file(f"probe/{TAG}/run{{run}}/epoch{{epoch}}.tsv")
    params:
        checkpoint=checkpoint_file,
        options=cli_args(config["probe_args"]),
        device=DEVICE,
        gpu=GPU_PREFIX,
        keep_activations=KEEP_ACTIVATIONS,
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
        " {params.options} --out {output} > {log} 2>&1"
        " && {{ [ {params.keep_activations} = yes ] || rm -f {input.activations}; }}"


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
        # concatenate with one header, refusing files whose headers differ; write via a temp file
        "awk 'FNR == 1 {{ if (NR == 1) {{ header = $0; print; }} else if ($0 != header) "
        "{{ print FILENAME \": header differs\" | \"cat 1>&2\"; exit 1 }} next }} {{ print }}' {input}"
        " > {output}.tmp 2> {log} && mv {output}.tmp {output}"
