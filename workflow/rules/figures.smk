# Stage 7: the paper's figures, one rule per figure (`snakemake fig3` or
# `snakemake results/fig3.pdf` runs only what that figure needs). Each writes the PDF, its source
# data (tidy CSV) and a provenance sidecar (.json).

for fig in BUILDABLE:

    rule:
        name:
            fig
        input:
            figure_metrics(fig),
        output:
            pdf=report(out(f"{fig}.pdf"), caption=f"../report/{fig}.rst", category="Figures",
                       labels={"figure": fig.replace("fig", "Figure ")}),
            csv=out(f"{fig}.csv"),
            provenance=out(f"{fig}.json"),
        log:
            log_file(f"figures/{fig}.log"),
        benchmark:
            bench_file(f"figures/{fig}.tsv")
        params:
            name=fig,
            rows=" ".join(figure_rows(fig)),
            model_epoch0=config["figures"]["model_epoch0"],
            own_final=OWN_FINAL,
            config_json=figure_config(fig),
            seeds=json.dumps(SEEDS, sort_keys=True),
        threads: THREADS["figure"]
        conda:
            "../../envs/plot.yaml"
        shell:
            "python -m latentgen.prefork figure --name {params.name} --metrics {input} --out {output.pdf} --csv {output.csv}"
            " --corruptions {params.rows} --model-epoch0 {params.model_epoch0} --own-final {params.own_final}"
            " --config-json {params.config_json:q} --seeds {params.seeds:q} > {log} 2>&1"
