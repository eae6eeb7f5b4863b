# Helpers shared by the stage files: configuration checks, paths, command prefixes.
# Nothing here imports torch: parsing the workflow must stay fast (it happens once per
# cluster job too).

import json
import os
import shlex
import sys
from pathlib import Path

# this checkout's latentgen (torch-free modules only: registry, config, figures)
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from latentgen import config_entries, registry  # noqa: E402
from latentgen.workflow.config import check_config, command_line, corruption_tag  # noqa: E402
from latentgen.paper.figures import FIGURES  # noqa: E402
from latentgen.workflow.gpu_slots import GPU_UNITS, jobs_per_gpu_override  # noqa: E402
from latentgen.workflow.plan import LAYOUT, PRIORITY, SCHEDULING_KEYS, JobPlan  # noqa: E402

# the whole configuration checked (schema, registry names, every command option by the command's
# own parser) and its defaults filled in, before any job; a bad key stops here, naming it
config.update(check_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))
# external architectures and image folders (latentgen.config_entries): every job resolves their names from this
config_entries.export(config["external"])

# every job of the build, and what each needs (latentgen.workflow.plan): the input functions below read it
# ($LATENTGEN_JOBS_PER_GPU, checked here: a bad value stops the workflow before any job)
PLAN = JobPlan(config, jobs_per_gpu=jobs_per_gpu_override())
OUT = config["outdir"].rstrip("/")
DEVICE = config["device"]
CUDA = DEVICE == "cuda"
RUNS = sorted(config["runs"])
CORRUPTIONS = [corruption_tag(c) for c in sorted(config["corruptions"])]
THREADS = config["threads"]
SEEDS = config["seeds"]
# the models as the jobs' parameters and provenance see them (where a job runs is not what it computes)
MODELS = {name: {k: v for k, v in m.items() if k not in SCHEDULING_KEYS} for name, m in config["models"].items()}
MODEL_BY_PAIR = {(m["arch"], m["dataset"]): m for m in MODELS.values()}
NAME_BY_PAIR = {(m["arch"], m["dataset"]): name for name, m in MODELS.items()}
DATASETS_USED = sorted({m["dataset"] for m in MODELS.values()})

# file layout (docs/architecture.md)
def out(path):
    return f"{OUT}/{path}"


def log_file(path):
    return f"{OUT}/logs/{path}"


def bench_file(path):
    return f"{OUT}/benchmarks/{path}"


DATA = out(LAYOUT["data"])
LABELS = out(LAYOUT["labels"])
MANIFEST = out(LAYOUT["manifest"])
TRAIN_LOG = out(LAYOUT["train_log"])
RUN_PROBES = out(LAYOUT["run_probes"])
FINAL_PROBES = out(LAYOUT["final_probes"])
METRICS = out(LAYOUT["metrics"])
METRICS_PROVENANCE = out(LAYOUT["metrics_provenance"])
TAG = "{arch}/{dataset}/c{corruption}"  # log and benchmark names below log_file()/bench_file()


# How jobs call latentgen: `python -m latentgen.prefork ...` (below). This checkout's src/ goes first on
# PYTHONPATH, so a conda environment (which holds the dependencies, not latentgen) runs this
# checkout's code; without conda, `python` is the interpreter running Snakemake (which has
# latentgen and its dependencies), put first on PATH. Jobs inherit both variables.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [str(Path(workflow.basedir) / "src"), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    ),
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
)
# Jobs run `python -m latentgen.prefork COMMAND`, which is `python -m latentgen.prefork COMMAND` unless
# `prefork: true` asks for a warm, forking server (no 2–4 s of imports per job).
os.environ.update(LATENTGEN_PREFORK="1" if config["prefork"] else "0")
# GPU jobs (latentgen.workflow.plan.GPU_RULES) hold a GPU, or a share of one (a model's runs_per_gpu):
# `--resources gpu=N` counts GPUs, and the jobs are charged in gpu_units, GPU_UNITS per GPU, so
# that runs sharing a GPU four ways fit four to a GPU beside whole-GPU jobs. Snakemake's count only
# caps them; the gpu_slots wrapper puts each on a GPU with its share free (CUDA_VISIBLE_DEVICES).
# On SLURM each GPU job asks for a GPU of its own (profiles/slurm: gpu: 1) and gpu_units is not capped.
_GPUS = workflow.global_resources.get("gpu")
if CUDA and _GPUS is not None and _GPUS.value is not None:
    workflow.register_resource("gpu_units", int(_GPUS.value) * GPU_UNITS)


def _model_name(wildcards):
    return NAME_BY_PAIR[(wildcards.arch, wildcards.dataset)]


def gpu_units_of(rule):
    """The `gpu_units` resource of ``rule``'s jobs (latentgen.workflow.plan.JobPlan.gpu_units)."""
    return lambda wildcards: PLAN.gpu_units(rule, _model_name(wildcards))


def gpu_prefix(rule):
    """The command prefix that places ``rule``'s job on a GPU with its share free (nothing on the CPU)."""
    return lambda wildcards: PLAN.gpu_prefix(rule, _model_name(wildcards))


def model_of(wildcards):
    return MODEL_BY_PAIR[(wildcards.arch, wildcards.dataset)]


def provenance_config(wildcards):
    """The slice of the configuration a metrics file depends on (its provenance hash)."""
    name = NAME_BY_PAIR[(wildcards.arch, wildcards.dataset)]
    return json.dumps({"model": name, **MODELS[name], "corruption": float(wildcards.corruption),
                       "runs": RUNS, "seeds": SEEDS, "device": DEVICE, "label_args": config["label_args"],
                       "activation_args": config["activation_args"], "probe_args": config["probe_args"]},
                      sort_keys=True)


def train_options(wildcards):
    """`latentgen train` options of one run: its seed, the grid, the model's settings."""
    model = model_of(wildcards)
    options = {"seed": SEEDS["train_base"] + int(wildcards.run),
               **{f"grid_{key}": value for key, value in model["grid"].items()}}
    options.update({key: model[key] for key in ("max_epochs", "train_subset") if model.get(key) is not None})
    options.update(model["train_args"])
    return command_line("train", options)


# label files of the configuration (models' `labels:`): (dataset, degree) -> the file, written by `corrupt --noise file`
LABEL_FILES = {(m["dataset"], c): m["labels"] for m in MODELS.values() if m.get("labels") for c in m["corruptions"]}


def corrupt_options(wildcards):
    """`latentgen corrupt` options of one label file: the configured ones, or a model's own labels."""
    path = LABEL_FILES.get((wildcards.dataset, wildcards.corruption))
    if path is None:
        return command_line("corrupt", config["label_args"])
    return command_line("corrupt", {"noise": "file", "noise_file": path})


def train_log_args(wildcards, input):
    return " ".join(f"{run}={path}" for run, path in zip(RUNS, input.logs))


def figure_rows(fig):
    return PLAN.figure_rows(fig)


def figure_metrics(fig):
    return PLAN.figure_inputs(fig)


def figure_config(fig):
    return json.dumps({"figure": fig, "groups": config["figures"]["groups"], "models": MODELS,
                       "corruptions": CORRUPTIONS, "runs": RUNS}, sort_keys=True)


# models whose probed runs end at their own final epoch (probe_final), for the figures' alignment
OWN_FINAL = " ".join(f"{m['arch']}:{m['dataset']}" for m in MODELS.values() if m["probe_final"])


# figures whose model group the configuration fills (the others cannot be built)
BUILDABLE = PLAN.buildable_figures(built_only=False)


def probe_run_options(wildcards):
    """`latentgen probe-run` options of one run (latentgen.workflow.plan.JobPlan.probe_run_options)."""
    name = NAME_BY_PAIR[(wildcards.arch, wildcards.dataset)]
    return command_line("probe-run", PLAN.probe_run_options(name, wildcards.corruption, wildcards.dataset))


def keep_activations_option(wildcards):
    """`activations: keep`: the run's activation files are written as an export."""
    if config["activations"] != "keep":
        return ""
    return f"--keep-activations {shlex.quote(out(LAYOUT['activations'].format(**wildcards)))}"


def clean_model_labels(wildcards):
    """-exp3: a clean model's 2025 checkpoints are also probed with every other degree's labels."""
    return [LABELS.format(dataset=wildcards.dataset, corruption=c) for c in PLAN.clean_model_degrees(wildcards.corruption, NAME_BY_PAIR[(wildcards.arch, wildcards.dataset)])]


# --------------------------------------------------------------------------------------------
# repair stage (repair.smk): configuration, paths and input functions

REPAIR = config["repair"]

REPAIR_TABLE = out(LAYOUT["repair_table"])
REPAIR_LAYERS = out("repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.layers.csv")
REPAIR_PROVENANCE = out("repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.json")


def repair_checkpoint(wildcards):
    """The checkpoint file of one repair job: known once its training run (a checkpoint) is done."""
    run = {k: wildcards[k] for k in ("arch", "dataset", "corruption", "run")}
    manifest = checkpoints.train.get(**run).output.manifest
    return str(Path(manifest).parent / "checkpoints" / f"epoch{wildcards.epoch}.pt")


def repair_options(wildcards):
    """`latentgen repair` options: the configured ones, and the layer sets of this architecture."""
    options = {key: REPAIR[key] for key in ("rhos", "methods", "fisher", "factor_subset", "seed")
               if REPAIR.get(key) is not None}
    if REPAIR["layer_sets"].get(wildcards.arch):
        options["layer_sets"] = REPAIR["layer_sets"][wildcards.arch]
    return command_line("repair", options)


def repair_tables(which):
    """Input function: the repair tables of every configured run, at the final epoch ("final")
    or at every probed epoch ("grid"); each run resolves its own training checkpoint."""

    def tables(wildcards):
        files = []
        for name in REPAIR["models"]:
            for corruption in PLAN.model_corruptions(name):
                for run in RUNS:
                    keys = PLAN.run_wildcards(name, corruption, run)
                    checkpoints.train.get(**keys)  # the run's epochs are known once it is trained
                    epochs = PLAN.repair_epochs(name, corruption, run)
                    if which == "final":
                        epochs = [PLAN.run_epochs(name, corruption, run)[1]]
                    files += [REPAIR_TABLE.format(epoch=e, **keys) for e in epochs]
        return files

    return tables


def repair_targets(wildcards):
    """What the default target builds for the repair stage: the figure, the summary, and with
    checkpoints: grid the figure over training from every probed checkpoint (nothing without
    repair models)."""
    if not REPAIR["models"]:
        return []
    targets = [out("fig_repair.pdf"), out("repair_summary.csv")]
    if REPAIR["checkpoints"] == "grid":
        targets.append(out("fig_repair_epochs.pdf"))
    return targets


# --------------------------------------------------------------------------------------------
# the 2025 paper (final-model probes, relabel-and-retrain, tables, claims): configuration,
# paths and input functions

from latentgen.paper.tables import TABLES  # noqa: E402  (torch-free)

PROBES_2025 = config["probes"]
RELABEL = config["relabel"]
TABLES_CFG = config["tables"]
RELABEL_RESULT = out(LAYOUT["relabel_result"])
RELABEL_PROVENANCE = out("relabel/{arch}/{dataset}/c{corruption}/run{run}/{subspaces}/result.json")


def final_epoch(keys):
    """The final epoch of one run: known once its training (a checkpoint) has finished."""
    manifest = checkpoints.train.get(**keys).output.manifest
    return int(json.loads(Path(manifest).read_text())["final_epoch"])


def relabel_checkpoint(wildcards):
    keys = {k: wildcards[k] for k in ("arch", "dataset", "corruption", "run")}
    manifest = checkpoints.train.get(**keys).output.manifest
    return str(Path(manifest).parent / "checkpoints" / f"epoch{final_epoch(keys)}.pt")


def table_inputs(name):
    """What table ``name`` (or ``claims``) reads: latentgen.workflow.plan.JobPlan.table_inputs."""
    return PLAN.table_inputs(name)


def paper2025_targets(wildcards):
    """The 2025 paper's tables (with their bar charts) and claims.csv."""
    targets = []
    for name in TABLES_CFG["build"]:
        targets.append(out(f"{name}.csv"))
        if TABLES[name].figure:
            targets.append(out(f"{TABLES[name].figure}.pdf"))
    if TABLES_CFG["claims"]:
        targets.append(out("claims.csv"))
    return targets
