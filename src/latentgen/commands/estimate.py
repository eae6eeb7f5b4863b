"""What a configuration costs before it runs: device-hours, disk and the projected wall time.

Times a short real sample of every kind of job the config plans (training steps of each model,
one checkpoint's activation dump and probes at full width, one repair factor pass) on this
machine, multiplies by the planned work (runs × corruptions × expected epochs, checkpoints on
the grid, probes, repair sweeps) and schedules the jobs on --cores CPU cores and --gpus GPUs.
Expected epochs: the authors' recorded final epochs (SPEC §4) where a model leaves max_epochs
unset, else max_epochs. Datasets not found (OUTDIR/data/NAME.npz or the raw files under
data_root) are timed on random images of the real shape, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


COLUMNS = ("model", "stage", "jobs", "seconds_per_job", "device_hours", "core_hours", "activations_gb", "data")


def format_table(summary: dict) -> str:
    """The human-readable table and the projection."""
    def cell(value):
        if value is None:
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    header = ["model", "stage", "jobs", "s/job", "device-h", "core-h", "acts GB", "data"]
    body = [[cell(r[c]) for c in COLUMNS] for r in summary["rows"]]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in [header, *body]]
    wall = summary["projected_wall_seconds"]
    where = f"{summary['gpus']} GPU(s) + {summary['cores']} cores" if summary["gpus"] else f"{summary['cores']} CPU cores"
    lines += ["", f"{summary['jobs']} jobs, {summary['device_hours']:.4g} device-hours "
                  f"({summary['core_hours']:.4g} core-hours), measured on {summary['device']}",
              f"projected wall time on {where}: {wall:.4g} s = {wall / 3600:.4g} h = {wall / 86400:.4g} days",
              f"largest checkpoint's activations (held by its probe job, a group of layers at a time): "
              f"{summary['largest_activations_gb']:.3g} GB"]
    sources = {}
    for name, found in summary["epoch_sources"].items():
        for source in found:
            sources.setdefault(source, []).append(name)
    lines.append("epochs per run from " + "; ".join(f"{s}: {', '.join(n)}" for s, n in sources.items()))
    for name, shared in summary.get("shared_training", {}).items():
        lines.append(f"{name}: {shared['runs_per_gpu']} training runs share a GPU, measured {shared['speedup']:.3g}× "
                     f"one run's rate")
    if summary["random_data"]:
        lines.append(f"timed on random images of the real shape (dataset not found): {', '.join(summary['random_data'])}")
    if summary["untimed_probe_families"]:
        lines.append(f"probe families not timed (counted as 0 s): {', '.join(summary['untimed_probe_families'])}")
    lines.append(f"estimate took {summary['estimate_seconds']:.1f} s")
    return "\n".join(lines)


def write_csv(summary: dict, path) -> Path:
    """The table as CSV, plus a total row carrying the projected wall time."""
    import csv

    from latentgen._io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "projected_wall_seconds"])
        writer.writeheader()
        for row in summary["rows"]:
            writer.writerow(row)
        writer.writerow({"model": "(total)", "stage": "(all)", "jobs": summary["jobs"],
                         "device_hours": summary["device_hours"], "core_hours": summary["core_hours"],
                         "activations_gb": summary["largest_activations_gb"],
                         "projected_wall_seconds": summary["projected_wall_seconds"]})
    return Path(path)


def run(args: argparse.Namespace) -> int:
    from latentgen.workflow.estimate import estimate

    start = time.perf_counter()

    def say(message):
        if not args.quiet:
            print(f"estimate [{time.perf_counter() - start:5.1f} s]: {message}", file=sys.stderr, flush=True)

    summary = estimate(args.configfile, args.schema, cores=args.cores, gpus=args.gpus, device=args.device,
                       progress=say)
    if args.out:
        write_csv(summary, args.out)
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0
