"""What a configuration costs before it runs (``latentgen estimate``; README "What it costs").

:func:`measure` times a short real sample of every kind of job the config plans, with the project's
own code, on this machine and the estimate's device (medians of repeats, each stage's threads or
one if faster); :func:`plan` multiplies the per-job times into the workflow's job graph and
:func:`simulate` schedules it on ``cores`` CPU cores and ``gpus`` GPUs. Images: the real dataset when
found (``OUTDIR/data/NAME.npz``, or raw files under ``data_root``, not Tiny ImageNet's JPEGs), else
random images of the real shape (flagged ``random``).

- **train**: ``training.train_one_epoch`` on ``models.build_model`` with the run's optimizer and
  batch size, × batches per epoch; per epoch also the test evaluation and the resume state (bytes ÷
  measured ``torch.save`` rate); epochs from :data:`RECORDED_EPOCHS` (SPEC §4) where ``max_epochs``
  is unset, else ``max_epochs`` (also a cap on the recorded ones); 500 where nothing is recorded.
- **activations**: ``activations.write_split`` (hooked forward, compressed HDF5) on a sample.
- **probe** (one thread, per layer shape, random activations of the real width with feature scales
  (1+j)^-α): the shared MASC/VeLPIC fit on ``FIT_CLASSES`` classes scaled by the cost model
  K·(w_e·e³ + w_g·n_k·d·e)/workers (e = min(d, n_k); w_e, w_g measured seconds per flop of an eigh
  and a Gram product; the sample's remainder by rows); scores on ``SCORE_ROWS`` rows by rows (MASC's
  also by r); baselines on ``BASELINE_ROWS`` rows by rows (k-NN by rows²); the HDF5 read; the
  transfer's forward passes. On a GPU (:func:`probe_sample`, :func:`fit_seconds`): the whole layer
  (every class, up to ``GPU_PROBE_BYTES``; classes are decomposed one after another there) and
  ``GPU_SCORE_ROWS`` scored rows — times of small matrices would overstate a GPU's full-size work;
  each baseline also on ``GPU_BASELINE_SCALE`` × the rows, a fixed part and one growing with size
  separated (:func:`two_point_seconds`); every family run once untimed first (CUDA's start-up).
  The training step is the job's: a CUDA graph where ``latentgen train`` takes one by default.
- **repair**: ``repair.collect_factors`` on ``REPAIR_ROWS`` inputs × rows; an eigh per factor (cubic
  beyond ``EIGH_MAX``); the inputs' features once (a forward pass); per evaluation the head's
  forward pass (``forward_head``: the linear layers; a whole pass for a model without it) and four
  float64 GEMMs per edited layer.
- **relabel**: activations, MASC fits and ``relabel.max_epochs`` epochs (an upper bound).
- bookkeeping jobs: :data:`SMALL_JOBS`; the others pay :data:`JOB_OVERHEAD_S` (+ imports without prefork).
- **runs sharing a GPU** (a model's ``runs_per_gpu`` K > 1, or ``$LATENTGEN_JOBS_PER_GPU``): on a GPU,
  K concurrent runs' aggregate rate over one run's is measured (``training.shared_device``); each
  run then takes K / that speed-up times its time alone, and holds 1/K of a GPU.

Scheduling (:func:`simulate`): the workflow's job graph; a job holds ``min(threads, cores)`` cores
and, with ``gpus > 0``, a GPU stage its share of one GPU (``gpu_units`` of ``gpu_slots.GPU_UNITS``,
the plan's); whenever a job ends, ready jobs start in Snakemake's priority order while cores and
GPU units last (a greedy list schedule). Wall = :data:`WORKFLOW_START_S` + its length. GPU
projections need GPU timings (``--device cuda``).
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import time
from dataclasses import dataclass, field


from latentgen import registry
from latentgen.training.hyperparameters import TrainConfig
from latentgen.workflow.config import load_config
from latentgen.workflow.cost_measurement import ModelCost, measure
from latentgen.workflow.gpu_slots import GPU_UNITS, jobs_per_gpu_override

# Final epochs of the authors' runs (SPEC §4, "Observed final epochs") by (arch, dataset) and
# corruption; a tuple gives runs 1, 2, 3 (later runs: their mean). MLP-MNIST: run 1 of [D]
# mlp_mnist.py, used for every run; CNN-MNIST: 41 at c = 0, the 500 cap above; AlexNet-Tiny
# ImageNet: `final_epoch_tiny` of [D] plotting_pytorch.py, 0-based model_{e} indices, so + 1.
RECORDED_EPOCHS = {
    ("mlp", "mnist"): {0.0: 58, 0.2: 298, 0.4: 298, 0.6: 263, 0.8: 296, 1.0: 336},
    ("cnn", "mnist"): {0.0: 41, 0.2: 500, 0.4: 500, 0.6: 500, 0.8: 500, 1.0: 500},
    ("alexnet", "tiny_imagenet"): {0.0: (176, 179, 168), 0.2: (185, 195, 194), 0.4: (264, 241, 273),
                                   0.6: (450, 427, 429), 0.8: (500, 500, 500), 1.0: (500, 500, 500)},
}
MAX_EPOCHS = TrainConfig.max_epochs  # the cap of `latentgen train` (--max-epochs)

# Measured on the demo (2 cores, idle, prefork; results/demo/benchmarks/ on 2026-11-30: 437 jobs,
# 150 s wall for 284 s of summed job time): whole bookkeeping jobs, seconds each (download =
# preparing the .npz from files on disk; a first download's network transfer is not counted) ...
SMALL_JOBS = {"download": 4.0, "corrupt": 0.1, "metrics": 0.15, "figure": 1.0,
              "fig_repair": 2.8, "table": 1.0}
JOB_OVERHEAD_S = 0.1  # ... the start and end of a forked job (a whole activations job took 0.14-0.33 s)
WORKFLOW_START_S = 8.0  # ... and Snakemake's own start, DAG updates and end (150 s − 284 s / 2 cores)



# --------------------------------------------------------------------------------------------
# the plan: per-job seconds × the workflow's job graph (arithmetic only, no torch)


@dataclass
class Job:
    stage: str
    model: str
    seconds: float
    threads: int
    gpu: bool
    deps: list = field(default_factory=list)
    priority: int = 0
    gpu_units: int = GPU_UNITS  # its share of a GPU when ``gpu`` (gpu_slots.GPU_UNITS: a whole one)


def expected_epochs(arch: str, dataset: str, corruption: float, run: int, max_epochs: int | None) -> tuple[int, str]:
    """Epochs one run trains, and where the number comes from ("SPEC §4", "max_epochs" or "cap")."""
    recorded = RECORDED_EPOCHS.get((arch, dataset), {})
    value = next((v for c, v in recorded.items() if abs(c - float(corruption)) < 1e-9), None)
    if isinstance(value, tuple):
        value = value[run - 1] if run <= len(value) else round(sum(value) / len(value))
    if value is not None and (max_epochs is None or int(max_epochs) >= value):
        return int(value), "SPEC §4"
    return (int(max_epochs), "max_epochs") if max_epochs is not None else (MAX_EPOCHS, "cap")


def expected_run_epochs(plan, name: str, corruption: str, run: int) -> tuple[list[int], int]:
    """(saved epochs, final epoch) a run is expected to end with (``latentgen.workflow.plan``'s ``epochs``)."""
    model = plan.models[name]
    final, _ = expected_epochs(model["arch"], model["dataset"], float(corruption), run, model.get("max_epochs"))
    saved = registry.checkpoint_grid(final, **model["grid"])
    return (saved if saved[-1] == final else saved + [final]), final


def _stage(rule: str) -> str:
    """The estimate's name for a rule's kind of job (one per figure or table rule)."""
    if rule.startswith("fig") and rule not in ("fig_repair", "fig_repair_epochs"):
        return "figure"
    if rule.startswith("table_") or rule == "claims":
        return "table"
    return "fig_repair" if rule == "fig_repair_epochs" else rule


def plan(cfg: dict, costs: dict[str, ModelCost], *, cores: int, gpus: int = 0,
         job_overhead: float = JOB_OVERHEAD_S, small: dict | None = None, jobs_per_gpu: int | None = None) -> list[Job]:
    """The workflow's jobs for ``cfg`` (``config.load_config``'s result) with their seconds: the jobs
    of ``latentgen.workflow.plan.JobPlan`` with the runs' expected epochs, each priced from ``costs``
    (``jobs_per_gpu``: ``$LATENTGEN_JOBS_PER_GPU``, as the workflow reads it)."""
    from latentgen.workflow.plan import GPU_RULES, JobPlan

    small = {**SMALL_JOBS, **(small or {})}
    job_plan = JobPlan(cfg, epochs=expected_run_epochs, jobs_per_gpu=jobs_per_gpu)
    paper = cfg.get("probes") or {}
    jobs: list[Job] = []
    for job in job_plan.jobs():
        if job.rule == "all":
            continue
        stage, cost = _stage(job.rule), costs.get(job.model)
        w = job.wildcards
        if stage in small:
            seconds = small[stage]
        elif stage == "train":
            saved, final = expected_run_epochs(job_plan, job.model, w["corruption"], w["run"])
            seconds = cost.train_start + final * cost.train_epoch + len(saved) * cost.checkpoint + job_overhead
            share = job_plan.gpu_share(job.rule, job.model)
            if gpus and share > 1:  # K runs on one GPU: each K / speed-up times as long as alone
                if cost.train_shared_runs != share:
                    raise ValueError(f"{job.model}: {share} training runs per GPU, but the speed-up was measured "
                                     f"for {cost.train_shared_runs}")
                seconds *= share / cost.train_shared_speedup
        elif stage == "probe_run":
            saved, final = expected_run_epochs(job_plan, job.model, w["corruption"], w["run"])
            model = job_plan.models[job.model]
            tracked = (registry.probed_epochs(saved, final, model["grid"], model["probe_final"])
                       if job_plan.tracks_grid(job.model) else [])
            final_probe = cost.probe_final if cost.probe_final is not None else cost.probe
            per_tracked = final_probe if paper.get("checkpoints") == "grid" else cost.probe
            others = [e for e in tracked if e != final]
            extra = len(job_plan.clean_model_degrees(w["corruption"], job.model)) * cost.probe_final_labels
            seconds = (cost.load + len(others) * (cost.forward + per_tracked) + cost.forward + final_probe + extra
                       - len(others) * cost.probe_input + job_overhead)  # the input layer's rows: fit once per job
        elif stage == "repair":
            seconds = cost.repair + job_overhead
        elif stage == "relabel":
            seconds = cost.relabel + job_overhead
        else:
            raise AssertionError(f"no cost for rule {job.rule!r}")
        jobs.append(Job(stage, job.model, seconds, min(job.threads, cores), gpus > 0 and job.rule in GPU_RULES,
                        list(job.deps), job.priority, GPU_UNITS // job_plan.gpu_share(job.rule, job.model)))
    return jobs


def simulate(jobs: list[Job], cores: int, gpus: int = 0) -> float:
    """Length in seconds of the greedy list schedule of ``jobs`` (module docstring)."""
    waiting = [len(j.deps) for j in jobs]
    children: list[list[int]] = [[] for _ in jobs]
    for i, job in enumerate(jobs):
        for d in job.deps:
            children[d].append(i)
    units = [j.gpu_units if j.gpu else 0 for j in jobs]  # a job's share of the GPUs' units
    ready: dict[tuple, list] = {}  # (threads, units) -> heap of (-priority, id): few kinds, cheap to scan

    def release(i):
        heapq.heappush(ready.setdefault((jobs[i].threads, units[i]), []), (-jobs[i].priority, i))

    for i in (i for i, n in enumerate(waiting) if n == 0):
        release(i)
    # Snakemake's count of gpu_units (gpus × GPU_UNITS); which GPU a share lands on is not modelled
    free_cores, free_units, now, running, done = cores, gpus * GPU_UNITS, 0.0, [], 0
    while done < len(jobs):
        while True:  # start the best ready job that fits, until none does
            fitting = [(heap[0], kind) for kind, heap in ready.items()
                       if heap and kind[0] <= free_cores and kind[1] <= free_units]
            if not fitting:
                break
            (_, i), kind = min(fitting)
            heapq.heappop(ready[kind])
            free_cores, free_units = free_cores - jobs[i].threads, free_units - units[i]
            heapq.heappush(running, (now + jobs[i].seconds, i))
        if not running:
            raise ValueError("jobs that can never start (a GPU job without GPUs, or a dependency cycle)")
        now, i = heapq.heappop(running)
        free_cores, free_units, done = free_cores + jobs[i].threads, free_units + units[i], done + 1
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                release(child)
    return now


def summarise(cfg: dict, costs: dict[str, ModelCost], jobs: list[Job], cores: int, gpus: int) -> dict:
    """One row per model and stage (jobs, s/job, device- and core-hours, ...), totals, projected wall time."""
    rows = {}
    for job in jobs:
        n, seconds, core = rows.get((job.model, job.stage), (0, 0.0, 0.0))
        rows[job.model, job.stage] = (n + 1, seconds + job.seconds, core + job.seconds * job.threads)
    table = [{"model": model or "(all)", "stage": stage, "jobs": n, "seconds_per_job": seconds / n,
              "device_hours": seconds / 3600, "core_hours": core / 3600,
              "activations_gb": costs[model].activation_bytes / 1e9 if stage == "probe_run" else None,
              "data": costs[model].data if model in costs else ""}
             for (model, stage), (n, seconds, core) in rows.items()]
    return {"projected_wall_seconds": WORKFLOW_START_S + simulate(jobs, cores, gpus),
            "device_hours": sum(r["device_hours"] for r in table), "core_hours": sum(r["core_hours"] for r in table),
            "jobs": len(jobs), "cores": cores, "gpus": gpus,
            "largest_activations_gb": max((c.activation_bytes for c in costs.values()), default=0) / 1e9,
            "random_data": sorted(n for n, c in costs.items() if c.data == "random"), "rows": table}


def estimate(configfile, schema, *, cores: int | None = None, gpus: int | None = None, device: str = "auto",
             progress=None) -> dict:
    """Measure, plan and schedule ``configfile``: the summary of :func:`summarise` plus how it was measured."""
    begin = time.perf_counter()
    if (cores is not None and cores < 1) or (gpus is not None and gpus < 0):
        raise ValueError(f"--cores must be >= 1 and --gpus >= 0, got {cores} and {gpus}")
    if gpus and device == "cpu":
        raise ValueError("--gpus needs GPU job times: use --device cuda (or auto on a machine with CUDA), not cpu")
    cfg = load_config(configfile, schema)
    if not cfg.get("models"):
        raise ValueError(f"{configfile} configures no models: nothing to estimate")
    import torch
    from latentgen.devices import resolve_device  # refuses an unknown device or CUDA where there is none
    resolved = resolve_device(device)
    if gpus and resolved.type != "cuda":
        raise ValueError(f"--gpus {gpus}: this machine has no CUDA device to time GPU jobs on")
    gpus = (torch.cuda.device_count() if resolved.type == "cuda" else 0) if gpus is None else gpus
    cores = cores or os.cpu_count() or 1
    from latentgen.workflow.plan import JobPlan
    override = jobs_per_gpu_override()  # as the workflow reads it: a bad value stops here
    shares = {n: JobPlan(cfg, jobs_per_gpu=override).gpu_share("train", n) for n in cfg["models"]}
    costs, info = measure(cfg, device=resolved, cores=cores, progress=progress, shares=shares if gpus else None)
    overhead = JOB_OVERHEAD_S + (0.0 if cfg.get("prefork") else info["import_seconds"])
    jobs = plan(cfg, costs, cores=cores, gpus=gpus, job_overhead=overhead, jobs_per_gpu=override)
    summary = summarise(cfg, costs, jobs, cores, gpus)
    summary["model_costs"] = {n: dataclasses.asdict(c) for n, c in costs.items()}  # seconds per job part
    summary["shared_training"] = {n: {"runs_per_gpu": k, "speedup": costs[n].train_shared_speedup}
                                  for n, k in shares.items() if gpus and k > 1}
    sources = {n: sorted({expected_epochs(m["arch"], m["dataset"], c, r, m.get("max_epochs"))[1] for c in
                          cfg["corruptions"] for r in cfg["runs"]}) for n, m in cfg["models"].items()}
    summary.update(info, machine_cores=os.cpu_count(), config=str(configfile), job_overhead_seconds=overhead,
                   epoch_sources=sources, estimate_seconds=time.perf_counter() - begin)
    return summary
