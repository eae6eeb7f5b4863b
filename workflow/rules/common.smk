# Helpers shared by the stage files: configuration checks, paths, command prefixes.
# Nothing here imports torch: parsing the workflow must stay fast (it happens once per
# cluster job too).

import json
import os
import shlex
import sys
from pathlib import Path

# latentgen.figures is importable without torch, pandas or matplotlib; this checkout's copy
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from latentgen.figures import FIGURES  # noqa: E402

# which datasets each architecture supports (latentgen.models.ARCHITECTURES[arch].datasets;
# tests/test_config_schema.py keeps the two equal)
SUPPORTED_DATASETS = {
    "mlp": ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100"),
    "cnn": ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100"),
    "alexnet": ("digits", "cifar100", "tiny_imagenet"),
    "resnet18": ("digits", "cifar10"),
}

GRID_DEFAULT = {"dense_until": 20, "dense_step": 2, "step": 5}


def config_error(key, message):
    return ValueError(f"config key '{key}': {message}")


def corruption_tag(c):
    """How a degree appears in paths: 0.2 -> '0.2', 1 -> '1.0'."""
    return repr(round(float(c), 6))


def check_config(cfg):
    """Checks the JSON schema cannot express; raises ValueError naming the key."""
    tags = [corruption_tag(c) for c in cfg["corruptions"]]
    if len(set(tags)) != len(tags):
        raise config_error("corruptions", f"degrees repeat after rounding: {cfg['corruptions']}")
    pairs = {}
    for name, model in cfg["models"].items():
        arch, dataset = model["arch"], model["dataset"]
        if dataset not in SUPPORTED_DATASETS[arch]:
            raise config_error(f"models.{name}.dataset", f"architecture {arch!r} does not support dataset "
                               f"{dataset!r} (supported: {', '.join(SUPPORTED_DATASETS[arch])})")
        if (arch, dataset) in pairs:
            raise config_error(f"models.{name}", f"{arch} on {dataset} is already configured as "
                               f"models.{pairs[arch, dataset]}; each model–dataset pair may appear once")
        pairs[arch, dataset] = name
    groups = cfg["figures"]["groups"]
    for group, names in groups.items():
        for i, name in enumerate(names):
            if name not in cfg["models"]:
                raise config_error(f"figures.groups.{group}[{i}]", f"model {name!r} is not in 'models' "
                                   f"(configured: {', '.join(cfg['models'])})")
    configured = {float(t) for t in tags}
    for fig in cfg["figures"]["build"]:
        group, rows = FIGURES[fig].group, FIGURES[fig].corruptions
        if not groups.get(group):
            raise config_error("figures.build", f"{fig} plots the {group!r} models but "
                               f"'figures.groups.{group}' lists none")
        if rows is not None and not configured.intersection(rows):
            raise config_error("figures.build", f"{fig} plots corruption degrees {list(rows)}, none of "
                               f"which is in 'corruptions' {cfg['corruptions']}")


def model_settings(cfg, name):
    model = dict(cfg["models"][name])
    model["grid"] = {**GRID_DEFAULT, **cfg.get("grid", {}), **model.get("grid", {})}
    model.setdefault("probe_final", False)
    model.setdefault("train_args", {})
    return model


check_config(config)

OUT = config["outdir"].rstrip("/")
DEVICE = config["device"]
CUDA = DEVICE == "cuda"
RUNS = sorted(config["runs"])
CORRUPTIONS = [corruption_tag(c) for c in sorted(config["corruptions"])]
THREADS = config["threads"]
SEEDS = config["seeds"]
MODELS = {name: model_settings(config, name) for name in config["models"]}
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


DATA = out("data/{dataset}.npz")
LABELS = out("labels/{dataset}/c{corruption}.npz")
RUN = out("runs/{arch}/{dataset}/c{corruption}/run{run}")
MANIFEST = out("runs/{arch}/{dataset}/c{corruption}/run{run}/manifest.json")
TRAIN_LOG = out("runs/{arch}/{dataset}/c{corruption}/run{run}/train_log.csv")
ACTIVATIONS = out("activations/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.h5")
PROBES = out("probes/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.csv")
RUN_PROBES = out("probes/{arch}/{dataset}/c{corruption}/run{run}.csv")
METRICS = out("metrics/{arch}/{dataset}/c{corruption}.csv")
METRICS_PROVENANCE = out("metrics/{arch}/{dataset}/c{corruption}.json")
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
# GPU jobs take a GPU of their own (Snakemake's gpu resource only counts them)
GPU_PREFIX = "python -m latentgen.gpu_slots --" if CUDA else ""
GPU = 1 if CUDA else 0
# the probe rule removes its (temp) activation file after success, unless --notemp keeps temp files
KEEP_ACTIVATIONS = "yes" if workflow.storage_settings.notemp else "no"


def cli_args(options):
    """{'batch_size': 32, 'shuffle': True} -> "--batch-size 32 --shuffle true" (shell-quoted)."""
    parts = []
    for key, value in options.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        flag = key.replace("_", "-")
        parts += [f"--{flag}", shlex.quote(str(value))]
    return " ".join(parts)


def model_of(wildcards):
    return MODEL_BY_PAIR[(wildcards.arch, wildcards.dataset)]


def probed_epochs(manifest_path, model):
    """Epochs to probe for one finished run: the saved grid epochs, plus the final one if asked."""
    manifest = json.loads(Path(manifest_path).read_text())
    epochs = sorted(int(e) for e in manifest["epochs"])
    final = int(manifest["final_epoch"])
    grid = model["grid"]

    def on_grid(e):
        if e in (0, 1):
            return True
        if e <= grid["dense_until"]:
            return e % grid["dense_step"] == 0
        return (e - grid["dense_until"]) % grid["step"] == 0

    return [e for e in epochs if on_grid(e) or (e == final and model["probe_final"])]


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
    options = {
        "seed": SEEDS["train_base"] + int(wildcards.run),
        "grid_dense_until": model["grid"]["dense_until"],
        "grid_dense_step": model["grid"]["dense_step"],
        "grid_step": model["grid"]["step"],
    }
    if model.get("max_epochs") is not None:
        options["max_epochs"] = model["max_epochs"]
    if model.get("train_subset") is not None:
        options["train_subset"] = model["train_subset"]
    options.update(model["train_args"])
    return cli_args(options)


def checkpoint_file(wildcards, input):
    return str(Path(input.manifest).parent / "checkpoints" / f"epoch{wildcards.epoch}.pt")


def run_probe_files(wildcards):
    """The probe CSVs of one run: known only once its training (a checkpoint) has finished.
    Each run resolves its own checkpoint here, so all runs train in parallel."""
    manifest = checkpoints.train.get(**wildcards).output.manifest
    epochs = probed_epochs(manifest, model_of(wildcards))
    return [PROBES.format(epoch=e, **wildcards) for e in epochs]


def train_log_args(wildcards, input):
    return " ".join(f"{run}={path}" for run, path in zip(RUNS, input.logs))


def figure_rows(fig):
    return [corruption_tag(c) for c in FIGURES[fig].rows(config["corruptions"])]


def figure_metrics(fig):
    """The metrics files a figure reads: its group's models (columns) × its degrees (rows)."""
    names = config["figures"]["groups"].get(FIGURES[fig].group, [])
    return [METRICS.format(arch=MODELS[n]["arch"], dataset=MODELS[n]["dataset"], corruption=c)
            for n in names for c in figure_rows(fig)]


def figure_config(fig):
    return json.dumps({"figure": fig, "groups": config["figures"]["groups"], "models": MODELS,
                       "corruptions": CORRUPTIONS, "runs": RUNS}, sort_keys=True)


# models whose probed runs end at their own final epoch (probe_final), for the figures' alignment
OWN_FINAL = " ".join(f"{m['arch']}:{m['dataset']}" for m in MODELS.values() if m["probe_final"])


# figures whose model group the configuration fills (the others cannot be built)
BUILDABLE = [fig for fig in FIGURES if config["figures"]["groups"].get(FIGURES[fig].group) and figure_rows(fig)]


# --------------------------------------------------------------------------------------------
# repair stage (repair.smk): configuration, paths and input functions

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
    """What the default target builds for the repair stage: the figure, the summary, and with
    checkpoints: grid the figure over training from every probed checkpoint (nothing without
    repair models)."""
    if not REPAIR["models"]:
        return []
    targets = [out("fig_repair.pdf"), out("repair_summary.csv")]
    if REPAIR["checkpoints"] == "grid":
        targets.append(out("fig_repair_epochs.pdf"))
    return targets
