"""The workflow's job plan: every job a configuration runs, computed once, without torch.

:class:`JobPlan` turns a checked configuration (``latentgen.workflow.config.check_config``) into the jobs
``snakemake`` runs for its default target — rule, wildcards, threads, whether it holds a GPU,
inputs and outputs (paths under ``outdir``, :data:`LAYOUT`). The Snakefile's input functions
read what each job needs from it, ``latentgen estimate`` prices its jobs, the SLURM profile's
GPU rules are checked against :data:`GPU_RULES` (the one place that says which rules use a GPU),
and the tests compare it with what Snakemake runs.

Most of the graph is known before anything runs. Only the repair jobs depend on a run's
epochs (the final one, or every probed one), known once it is trained: :class:`JobPlan` takes
``epochs(name, corruption, run) -> (saved epochs, final epoch)``; the default reads the run's
``manifest.json`` and leaves out the repair jobs of runs not trained yet
(``latentgen estimate`` passes the epochs it expects instead).

Who needs what (the default target, ``rule all``):

- figures read the *metrics* of their group's models (``figures.groups``) at their degrees;
  ``claims.csv`` the metrics of every group model at every degree;
- metrics read each run's *run probe table* (the checkpoints on the grid), so those runs'
  ``probe_run`` jobs track the grid (``--checkpoints grid``); a model only the tables use is
  probed at its final checkpoint alone (``--checkpoints final``);
- the 2025 tables and claims read the *final probe table* of every run of ``tables.models``,
  their training logs, and (``table_relabel``, claims) the relabel results of the models in
  both ``tables.models`` and ``relabel.models``;
- the repair figure reads the repair tables of ``repair.models``' runs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from latentgen import registry
from latentgen.workflow.config import corruption_tag
from latentgen.paper.figures import FIGURES
from latentgen.paper.tables import INPUT_KINDS
from latentgen.workflow.gpu_slots import GPU_UNITS, Prefix

# file layout under outdir (docs/architecture.md); wildcards as in the rules
LAYOUT = {
    "data": "data/{dataset}.npz",
    "labels": "labels/{dataset}/c{corruption}.npz",
    "manifest": "runs/{arch}/{dataset}/c{corruption}/run{run}/manifest.json",
    "train_log": "runs/{arch}/{dataset}/c{corruption}/run{run}/train_log.csv",
    "run_probes": "probes/{arch}/{dataset}/c{corruption}/run{run}.csv",
    "final_probes": "probes/{arch}/{dataset}/c{corruption}/run{run}.final.csv",
    "input_cache": "probes/input-cache",
    "activations": "activations/{arch}/{dataset}/c{corruption}/run{run}",
    "metrics": "metrics/{arch}/{dataset}/c{corruption}.csv",
    "metrics_provenance": "metrics/{arch}/{dataset}/c{corruption}.json",
    "repair_table": "repair/{arch}/{dataset}/c{corruption}/run{run}/epoch{epoch}.csv",
    "relabel_result": "relabel/{arch}/{dataset}/c{corruption}/run{run}/{subspaces}/result.csv",
}
# the rules whose jobs run on the workflow's device (with device: cuda, each holds a GPU or a share of one)
GPU_RULES = frozenset({"train", "probe_run", "repair", "relabel"})
# the GPU rules whose jobs share a GPU by their model's `runs_per_gpu`; the others take a whole one
# (the probe and repair jobs fit on a checkpoint's activations: memory, not launches, bounds them)
SHARED_RULES = frozenset({"train"})
# model keys that place jobs, not what they compute: left out of every job's provenance (a new value reruns nothing)
SCHEDULING_KEYS = frozenset({"runs_per_gpu"})
# Snakemake priorities: a finished run is probed before more runs start training
PRIORITY = {"probe_run": 2}
# the threads key (config `threads`) of each rule that is not its own
THREADS_KEY = {"probe_run": "probe", "relabel": "train", "fig_repair": "figure", "fig_repair_epochs": "figure",
               "claims": "figure", "table": "figure"}


@dataclass
class Job:
    """One job of the workflow: ``rule`` with ``wildcards``; ``model`` is the config model name."""

    rule: str
    wildcards: dict
    threads: int
    gpu: bool
    gpu_units: int = 0  # its share of a GPU, of gpu_slots.GPU_UNITS (0: none)
    inputs: tuple = ()
    outputs: tuple = ()
    model: str = ""
    priority: int = 0
    deps: list = field(default_factory=list)  # indices of the jobs that make its inputs


def manifest_epochs(outdir: str | Path) -> Callable:
    """``epochs(name, corruption, run)`` from the runs' manifests under ``outdir`` (None: not trained)."""

    def epochs(plan: "JobPlan", name: str, corruption: str, run: int):
        path = Path(plan.path("manifest", **plan.run_wildcards(name, corruption, run)))
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        return sorted(int(e) for e in manifest["epochs"]), int(manifest["final_epoch"])

    return epochs


class JobPlan:
    """The jobs of a checked configuration ``cfg`` (module docstring)."""

    def __init__(self, cfg: dict, epochs: Callable | None = None, jobs_per_gpu: int | None = None):
        self.cfg = cfg
        self.jobs_per_gpu = jobs_per_gpu  # $LATENTGEN_JOBS_PER_GPU (gpu_slots.jobs_per_gpu_override): every GPU job's
        self.outdir = str(cfg["outdir"]).rstrip("/")
        self.models = cfg["models"]
        self.corruptions = [corruption_tag(c) for c in sorted(cfg["corruptions"])]
        self.runs = sorted(cfg["runs"])
        self.gpu = cfg["device"] == "cuda"
        self._epochs = epochs or manifest_epochs(self.outdir)

    # -- facts the rules read ----------------------------------------------------------------

    def path(self, kind: str, **wildcards) -> str:
        return f"{self.outdir}/{LAYOUT[kind].format(**wildcards)}"

    def model_corruptions(self, name: str) -> list[str]:
        """The degrees of ``name``'s runs: the configuration's, or the one of its label file
        (``labels:``, latentgen.workflow.external_config)."""
        return list(self.models[name].get("corruptions") or self.corruptions)

    def dataset_corruptions(self, dataset: str, names) -> list[str]:
        """The label files of ``dataset`` the models ``names`` train on (their degrees)."""
        tags = {c for n in names if self.models[n]["dataset"] == dataset for c in self.model_corruptions(n)}
        return [c for c in self.corruptions if c in tags] + sorted(tags - set(self.corruptions))

    def gpu_share(self, rule: str, name: str) -> int:
        """How many jobs like ``rule``'s of model ``name`` share one GPU (the override, else the
        model's ``runs_per_gpu`` for :data:`SHARED_RULES`, else 1)."""
        if self.jobs_per_gpu:
            return self.jobs_per_gpu
        return int(self.models[name].get("runs_per_gpu", 1)) if rule in SHARED_RULES and name else 1

    def gpu_units(self, rule: str, name: str) -> int:
        """The ``gpu_units`` a job holds: its share of :data:`GPU_UNITS` on a CUDA build, else 0."""
        return GPU_UNITS // self.gpu_share(rule, name) if self.gpu and rule in GPU_RULES else 0

    def gpu_prefix(self, rule: str, name: str) -> Prefix | str:
        """What a job's command starts with: the gpu_slots wrapper with its share on a CUDA build, else nothing."""
        return Prefix(self.gpu_share(rule, name)) if self.gpu and rule in GPU_RULES else ""

    def run_wildcards(self, name: str, corruption: str, run: int) -> dict:
        m = self.models[name]
        return dict(arch=m["arch"], dataset=m["dataset"], corruption=corruption, run=run)

    def buildable_figures(self, built_only: bool = True) -> list[str]:
        """Figures whose model group the configuration fills (of ``figures.build``, or of all)."""
        groups = self.cfg["figures"]["groups"]
        names = self.cfg["figures"]["build"] if built_only else list(FIGURES)
        return [f for f in names if groups.get(FIGURES[f].group) and FIGURES[f].rows(self.cfg["corruptions"])]

    def figure_rows(self, fig: str) -> list[str]:
        return [corruption_tag(c) for c in FIGURES[fig].rows(self.cfg["corruptions"])]

    def group_models(self) -> list[str]:
        """Models of the figure groups: their runs are probed along the grid (metrics)."""
        return sorted({n for group in self.cfg["figures"]["groups"].values() for n in group})

    def metrics_path(self, name: str, corruption: str) -> str:
        m = self.models[name]
        return self.path("metrics", arch=m["arch"], dataset=m["dataset"], corruption=corruption)

    def figure_inputs(self, fig: str) -> list[str]:
        """The metrics files a figure reads: its group's models (columns) × its degrees (rows)."""
        names = self.cfg["figures"]["groups"].get(FIGURES[fig].group, [])
        return [self.metrics_path(n, c) for n in names for c in self.figure_rows(fig)]

    def metrics_keys(self) -> list[tuple[str, str]]:
        """(model, degree) of every metrics table the figures and claims read."""
        keys = {(n, c) for f in self.buildable_figures() for n in self.cfg["figures"]["groups"][FIGURES[f].group]
                for c in self.figure_rows(f)}
        if self.claims():
            keys |= {(n, c) for n in self.group_models() for c in self.corruptions}
        return sorted(keys)

    def tables(self) -> list[str]:
        return list((self.cfg.get("tables") or {}).get("build") or [])

    def claims(self) -> bool:
        return bool((self.cfg.get("tables") or {}).get("claims"))

    def table_needs(self) -> set[str]:
        """Input kinds the built tables and claims read (latentgen.paper.tables.TABLES[...].needs)."""
        from latentgen.paper.tables import TABLES

        needs = {kind for t in self.tables() for kind in (*TABLES[t].needs, *TABLES[t].optional)}
        return needs | ({"probes", "train_logs", "relabel", "metrics"} if self.claims() else set())

    def table_models(self) -> list[str]:
        return list((self.cfg.get("tables") or {}).get("models") or [])

    def relabel_models(self) -> list[str]:
        """Models relabelled and retrained: those of relabel.models the tables or claims read."""
        if "relabel" not in self.table_needs():
            return []
        return [m for m in self.table_models() if m in (self.cfg.get("relabel") or {}).get("models", [])]

    def tracks_grid(self, name: str) -> bool:
        """Does the probe job of ``name``'s runs probe every grid checkpoint (not only the final)?"""
        return name in {n for n, _ in self.metrics_keys()}

    def probed_models(self) -> list[str]:
        """Models whose runs get a probe job (metrics or the final probe tables need them)."""
        final = self.table_models() if "probes" in self.table_needs() else []
        return [n for n in self.models if self.tracks_grid(n) or n in final]

    def clean_model_degrees(self, corruption: str, name: str | None = None) -> list[str]:
        """Degrees whose labels a clean model's 2025 checkpoints are also probed with (-exp3); none
        for a model trained on its own label file (``labels:``: its dataset has no other degrees)."""
        if name is not None and self.models[name].get("labels"):
            return []
        if not self.cfg["probes"]["clean_model_subspaces"] or float(corruption) != 0.0:
            return []
        return [c for c in self.corruptions if float(c) > 0]

    def probe_run_options(self, name: str, corruption: str, dataset: str) -> dict:
        """``latentgen probe-run`` options of one run (its paths aside): probe_args at every
        checkpoint, the 2025 families at the final one (every one with probes.checkpoints: grid)."""
        model = self.models[name]
        options = dict(self.cfg["probe_args"])
        activation = dict(self.cfg["activation_args"])
        if "batch_size" in activation:
            options["activation_batch_size"] = activation.pop("batch_size")
        options.update(activation)
        options["checkpoints"] = "grid" if self.tracks_grid(name) else "final"
        if model["probe_final"]:
            options["probe_final"] = True
        paper = self.cfg["probes"]
        extra = [f"{c}={self.path('labels', dataset=dataset, corruption=c)}" for c in self.clean_model_degrees(corruption, name)]
        prefix = "" if paper["checkpoints"] == "grid" else "final_"
        options.update({f"{prefix}families": paper["families"], f"{prefix}fit_labels": paper["fit_labels"]})
        if extra:
            options[f"{prefix}extra_labels"] = extra
        return options

    def run_epochs(self, name: str, corruption: str, run: int) -> tuple[list[int], int] | None:
        """(saved epochs, final epoch) of one run (None: not known yet)."""
        return self._epochs(self, name, corruption, run)

    def repair_epochs(self, name: str, corruption: str, run: int) -> list[int] | None:
        """The repaired epochs of one run (None: not known yet)."""
        epochs = self.run_epochs(name, corruption, run)
        if epochs is None:
            return None
        saved, final = epochs
        if self.cfg["repair"]["checkpoints"] != "grid":
            return [final]
        model = self.models[name]
        return registry.probed_epochs(saved, final, model["grid"], model["probe_final"])

    # -- the jobs -------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """Every job of the default target, dependencies as indices, in an order they can run in."""
        jobs: list[Job] = []
        made: dict[str, int] = {}  # output path -> job index
        threads = self.cfg["threads"]

        def add(rule, wildcards, inputs, outputs, model=""):
            n = int(threads.get(THREADS_KEY.get(rule, rule), 1)) if rule != "all" else 1
            deps = sorted({made[i] for i in inputs if i in made})
            jobs.append(Job(rule, dict(wildcards), n, self.gpu and rule in GPU_RULES, self.gpu_units(rule, model),
                            tuple(inputs), tuple(outputs), model, PRIORITY.get(rule, 0), deps))
            for o in outputs:
                made[o] = len(jobs) - 1
            return outputs

        trained = dict.fromkeys([*self.probed_models(), *self.cfg["repair"]["models"], *self.relabel_models()])
        datasets = dict.fromkeys(self.models[n]["dataset"] for n in trained)
        for ds in datasets:
            add("download", {"dataset": ds}, [], [self.path("data", dataset=ds)])
        for ds in datasets:
            for c in self.dataset_corruptions(ds, trained):
                add("corrupt", {"dataset": ds, "corruption": c}, [self.path("data", dataset=ds)],
                    [self.path("labels", dataset=ds, corruption=c)])
        for name in trained:
            for c in self.model_corruptions(name):
                for r in self.runs:
                    w = self.run_wildcards(name, c, r)
                    add("train", w, [self.path("data", **w), self.path("labels", **w)],
                        [self.path("manifest", **w), self.path("train_log", **w)], name)
        for name in self.probed_models():
            for c in self.model_corruptions(name):
                for r in self.runs:
                    w = self.run_wildcards(name, c, r)
                    extra = [self.path("labels", dataset=w["dataset"], corruption=x) for x in self.clean_model_degrees(c, name)]
                    add("probe_run", w, [self.path("manifest", **w), self.path("data", **w), self.path("labels", **w),
                                         *extra], [self.path("run_probes", **w), self.path("final_probes", **w)], name)
        for name, c in self.metrics_keys():
            w = {k: v for k, v in self.run_wildcards(name, c, 0).items() if k != "run"}
            runs = [self.run_wildcards(name, c, r) for r in self.runs]
            add("metrics", w, [*(self.path("run_probes", **x) for x in runs), *(self.path("train_log", **x) for x in runs)],
                [self.path("metrics", **w), self.path("metrics_provenance", **w)], name)
        targets: list[str] = []
        for fig in self.buildable_figures():
            targets += add(fig, {}, self.figure_inputs(fig), [f"{self.outdir}/{fig}.pdf"])
        targets += self._repair_jobs(add)
        targets += self._paper2025_jobs(add)
        add("all", {}, targets, [])
        return jobs

    def _repair_jobs(self, add) -> list[str]:
        names = self.cfg["repair"]["models"]
        if not names:
            return []
        final, grid = [], []
        for name in names:
            for c in self.model_corruptions(name):
                for r in self.runs:
                    w = self.run_wildcards(name, c, r)
                    epochs = self.repair_epochs(name, c, r)
                    for e in epochs or ():
                        table = add("repair", {**w, "epoch": e}, [self.path("data", **w), self.path("labels", **w),
                                                                  self.path("manifest", **w)],
                                    [self.path("repair_table", **w, epoch=e)], name)
                        grid += table
                        if e == self.run_epochs(name, c, r)[1]:
                            final += table
        targets = add("fig_repair", {}, final, [f"{self.outdir}/fig_repair.pdf"])
        if self.cfg["repair"]["checkpoints"] == "grid":
            targets += add("fig_repair_epochs", {}, grid, [f"{self.outdir}/fig_repair_epochs.pdf"])
        return targets

    def run_paths(self, kind: str, names) -> list[str]:
        """``kind`` (a LAYOUT entry with run wildcards) of every run of the models ``names``."""
        return [self.path(kind, **self.run_wildcards(n, c, r)) for n in names for c in self.model_corruptions(n)
                for r in self.runs]

    def relabel_results(self) -> list[str]:
        subspaces = (self.cfg.get("relabel") or {}).get("subspaces") or ()
        return [self.path("relabel_result", **self.run_wildcards(n, c, r), subspaces=s)
                for n in self.relabel_models() for c in self.model_corruptions(n) for r in self.runs
                for s in subspaces]

    def table_inputs(self, name: str) -> dict[str, list[str]]:
        """What table ``name`` reads (``latentgen.paper.tables.TABLES[name].needs``; ``claims``: every kind)."""
        from latentgen.paper.tables import TABLES

        needs = INPUT_KINDS if name == "claims" else (*TABLES[name].needs, *TABLES[name].optional)
        inputs = {"probes": lambda: self.run_paths("final_probes", self.table_models()),
                  "train_logs": lambda: self.run_paths("train_log", self.table_models()),
                  "relabel": self.relabel_results,
                  "metrics": lambda: [self.metrics_path(n, c) for n in self.group_models() for c in self.corruptions]}
        return {kind: inputs[kind]() for kind in INPUT_KINDS if kind in needs}

    def _paper2025_jobs(self, add) -> list[str]:
        relabel = self.cfg.get("relabel") or {}
        for name in self.relabel_models():
            for c in self.model_corruptions(name):
                for r in self.runs:
                    w = self.run_wildcards(name, c, r)
                    for s in relabel["subspaces"]:
                        add("relabel", {**w, "subspaces": s}, [self.path("data", **w), self.path("labels", **w),
                                                               self.path("manifest", **w)],
                            [self.path("relabel_result", **w, subspaces=s)], name)
        targets = []
        for name in [*self.tables(), *(["claims"] if self.claims() else [])]:
            inputs = [p for paths in self.table_inputs(name).values() for p in paths]
            targets += add(name, {}, inputs, [f"{self.outdir}/{name}.csv"])
        return targets

    def counts(self) -> Counter:
        """Jobs per rule."""
        return Counter(job.rule for job in self.jobs())
