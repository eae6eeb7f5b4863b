# Stage 8: repair without retraining (issue 6). For every run of the models listed in
# config["repair"]["models"], the final checkpoint (or, with checkpoints: grid, every probed
# checkpoint) gets `latentgen repair`: K-FAC factors from the training inputs, the sweep of the
# curvature edit over layer sets × rho, its controls, and the VeLPIC transfer as a reference.
# Then results/fig_repair.pdf (+ .csv, .json) and results/repair_summary.csv from the final
# checkpoints. Included by the Snakefile after figures.smk; uses common.smk's helpers.

REPAIR_DEFAULTS = {
    "models": [],
    "checkpoints": "final",
    "rhos": [1.0, 0.99, 0.98, 0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.60, 0.50, 0.40, 0.30],
    "methods": ["kfac", "svd", "random", "kfac_velpic"],
    "layer_sets": {},
    "fisher": "true",
    "factor_subset": None,
    "seed": 0,
}
REPAIR = {**REPAIR_DEFAULTS, **config.get("repair", {})}
REPAIR["fisher"] = "true" if REPAIR["fisher"] is True else str(REPAIR["fisher"])  # YAML reads `true` as a boolean
for _i, _name in enumerate(REPAIR["models"]):
    if _name not in MODELS:
        raise config_error(f"repair.models[{_i}]", f"model {_name!r} is not in 'models' "
                           f"(configured: {', '.join(MODELS)})")
for _arch in REPAIR["layer_sets"]:
    if _arch not in SUPPORTED_DATASETS:
        raise config_error(f"repair.layer_sets.{_arch}", f"unknown architecture {_arch!r}")

REPAIR_TABLE = out("repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.csv")
REPAIR_LAYERS = out("repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.layers.csv")
REPAIR_PROVENANCE = out("repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.json")


def repair_checkpoint(wildcards):
    """The checkpoint file of one repair job: known once its training run (a checkpoint) is done."""
    run = {k: wildcards[k] for k in ("arch", "dataset", "corruption", "run")}
    manifest = checkpoints.train.get(**run).output.manifest
    return str(Path(manifest).parent / "checkpoints" / f"epoch{wildcards.epoch}.pt")


def repair_options(wildcards):
    """`latentgen repair` options from the configuration (layer sets per architecture, if given)."""
    options = (f"--rhos {' '.join(str(r) for r in REPAIR['rhos'])} --fisher {REPAIR['fisher']}"
               f" --seed {REPAIR['seed']}")
    options += " --methods " + " ".join(REPAIR["methods"])
    sets = REPAIR["layer_sets"].get(wildcards.arch)
    if sets:
        options += " --layer-sets " + " ".join(shlex.quote(s) for s in sets)
    if REPAIR["factor_subset"]:
        options += f" --factor-subset {int(REPAIR['factor_subset'])}"
    return options


def repair_tables(which):
    """Input function: the repair tables of every configured run, at the final epoch ("final")
    or at every probed epoch ("grid"); each run resolves its own training checkpoint."""

    def tables(wildcards):
        files = []
        for name in REPAIR["models"]:
            model = MODELS[name]
            for corruption in CORRUPTIONS:
                for run in RUNS:
                    keys = dict(arch=model["arch"], dataset=model["dataset"], corruption=corruption, run=run)
                    manifest = checkpoints.train.get(**keys).output.manifest
                    if which == "final":
                        epochs = [int(json.loads(Path(manifest).read_text())["final_epoch"])]
                    else:
                        epochs = probed_epochs(manifest, model)
                    files += [REPAIR_TABLE.format(epoch=e, **keys) for e in epochs]
        return files

    return tables


def repair_targets(wildcards):
    """What `rule all` builds for the repair stage: the figure, the summary, and with
    checkpoints: grid the tables of every probed checkpoint too (nothing without repair models)."""
    if not REPAIR["models"]:
        return []
    targets = [out("fig_repair.pdf"), out("repair_summary.csv")]
    if REPAIR["checkpoints"] == "grid":
        targets += repair_tables("grid")(wildcards)
    return targets


rule repair:
    input:
        checkpoint=repair_checkpoint,
        data=DATA,
        labels=LABELS,
    output:
        table=REPAIR_TABLE,
        layers=REPAIR_LAYERS,
        provenance=REPAIR_PROVENANCE,
    log:
        log_file(f"repair/{TAG}/run{{run}}/epoch{{epoch}}.log"),
    benchmark:
        bench_file(f"repair/{TAG}/run{{run}}/epoch{{epoch}}.tsv")
    params:
        options=repair_options,
        device=DEVICE,
        gpu=GPU_PREFIX,
        config_json=lambda wildcards: json.dumps({"repair": REPAIR, "seeds": SEEDS}, sort_keys=True),
    threads: THREADS.get("repair", 2)
    resources:
        gpu=GPU,
    conda:
        "../../envs/probe.yaml"
    shell:
        "{params.gpu} python -m latentgen.prefork repair --checkpoint {input.checkpoint} --labels {input.labels}"
        " --prepared {input.data} --out {output.table} --device {params.device} --threads {threads}"
        " {params.options} --config-json {params.config_json:q} --quiet > {log} 2>&1"


rule fig_repair:
    input:
        repair_tables("final"),
    output:
        pdf=report(out("fig_repair.pdf"), caption="../report/fig_repair.rst", category="Figures",
                   labels={"figure": "Repair (K-FAC edit vs VeLPIC transfer)"}),
        csv=out("fig_repair.csv"),
        provenance=out("fig_repair.json"),
        summary=out("repair_summary.csv"),
    log:
        log_file("figures/fig_repair.log"),
    benchmark:
        bench_file("figures/fig_repair.tsv")
    params:
        config_json=lambda wildcards: json.dumps({"repair": REPAIR, "models": {n: MODELS[n] for n in REPAIR["models"]},
                                                  "corruptions": CORRUPTIONS, "runs": RUNS}, sort_keys=True),
    threads: THREADS["figure"]
    conda:
        "../../envs/plot.yaml"
    shell:
        "python -m latentgen.repair_figures --inputs {input} --pdf {output.pdf} --csv {output.csv}"
        " --summary {output.summary} --provenance {output.provenance} --config-json {params.config_json:q}"
        " > {log} 2>&1"
