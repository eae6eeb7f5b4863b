"""Collect one model–dataset–corruption's accuracies over runs and checkpoints into one tidy CSV.

Concatenates the per-checkpoint probe CSVs (from `latentgen probe`) of every run and adds the
model's own accuracies from each run's train_log.csv as rows with probe = layer = "model"
(split test = test_acc, train_corrupted = running train_acc_corrupted, train_true =
train_acc_true; the initial model's empty train columns are left out). Writes the CSV and a
provenance sidecar (.json next to it) with the config hash, git commit, versions, seeds and the
sha256 of every input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLIT_COLUMNS = {"test": "test_acc", "train_corrupted": "train_acc_corrupted", "train_true": "train_acc_true"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probes", nargs="+", required=True, help="probe CSVs (any order)")
    parser.add_argument("--train-logs", nargs="+", required=True, metavar="RUN=PATH",
                        help="each run's train_log.csv, as RUN=PATH")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--config-json", default=None, help="the configuration that produced it (JSON), for provenance")
    parser.add_argument("--seeds", default=None, help="seeds used (JSON object), for provenance")


def _parse_json(text: str | None, what: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def _parse_logs(items: list[str]) -> dict[int, Path]:
    logs = {}
    for item in items:
        run, sep, path = item.partition("=")
        if not sep or not run.strip().lstrip("-").isdigit():
            raise ValueError(f"--train-logs entry {item!r} is not RUN=PATH")
        if int(run) in logs:
            raise ValueError(f"--train-logs names run {run} twice")
        logs[int(run)] = Path(path)
    return logs


def collect(probe_paths: list[str], train_logs: dict[int, Path]):
    """The tidy frame: probe rows sorted by run and epoch, then the model rows."""
    import pandas as pd

    from latentgen.figures import COLUMNS, MODEL_LAYER, read_metrics

    probes = read_metrics(probe_paths)
    for column in ("model", "dataset", "corruption"):
        values = probes[column].unique()
        if len(values) != 1:
            raise ValueError(f"probe CSVs mix several {column} values: {', '.join(map(str, values))}")
    model, dataset, corruption = (probes[c].iloc[0] for c in ("model", "dataset", "corruption"))
    runs = set(int(r) for r in probes["run"].unique())
    if runs != set(train_logs):
        raise ValueError(f"probe CSVs cover runs {sorted(runs)} but train logs are given for runs {sorted(train_logs)}")
    bad = probes[(probes["accuracy"] < 0) | (probes["accuracy"] > 1) | probes["accuracy"].isna()]
    if not bad.empty:
        raise ValueError(f"probe accuracy {bad['accuracy'].iloc[0]} outside [0, 1] "
                         f"(run {bad['run'].iloc[0]}, epoch {bad['epoch'].iloc[0]})")
    dup = probes.duplicated(["run", "epoch", "layer", "probe", "split"])
    if dup.any():
        row = probes[dup].iloc[0]
        raise ValueError(f"duplicate probe rows for run {row['run']} epoch {row['epoch']} "
                         f"{row['probe']} {row['layer']} {row['split']}")
    # stable sort keeps each CSV's layer order
    probes = probes.sort_values(["run", "epoch"], kind="stable")

    model_rows = []
    for run, path in sorted(train_logs.items()):
        if not path.is_file():
            raise FileNotFoundError(f"train log {path} (run {run}) does not exist")
        log = pd.read_csv(path)
        missing = [c for c in ["epoch", *SPLIT_COLUMNS.values()] if c not in log.columns]
        if missing:
            raise ValueError(f"train log {path} lacks the columns {', '.join(missing)}")
        for split, column in SPLIT_COLUMNS.items():
            part = log[["epoch", column]].dropna()
            if ((part[column] < 0) | (part[column] > 1)).any():
                raise ValueError(f"train log {path}: {column} outside [0, 1] (fractions expected)")
            model_rows.append(pd.DataFrame({
                "model": model, "dataset": dataset, "corruption": corruption, "run": run,
                "epoch": part["epoch"].astype(int), "layer": MODEL_LAYER, "probe": "model",
                "split": split, "accuracy": part[column],
            }))
    frame = pd.concat([probes[COLUMNS], *model_rows], ignore_index=True)
    return frame


def run(args: argparse.Namespace) -> int:
    from latentgen._io import atomic_path
    from latentgen.provenance import build_record, write_sidecar

    config = _parse_json(args.config_json, "--config-json")
    seeds = _parse_json(args.seeds, "--seeds")
    logs = _parse_logs(args.train_logs)
    frame = collect(args.probes, logs)
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False)
    manifests = [p.parent / "manifest.json" for p in logs.values() if (p.parent / "manifest.json").is_file()]
    probed = frame[frame["probe"] != "model"]
    epochs = {int(r): sorted(int(e) for e in g["epoch"].unique()) for r, g in probed.groupby("run")}
    record = build_record(inputs=[*args.probes, *map(str, logs.values()), *map(str, manifests)],
                          outputs=[args.out], config=config, seeds=seeds,
                          extra={"model": str(frame["model"].iloc[0]), "dataset": str(frame["dataset"].iloc[0]),
                                 "corruption": float(frame["corruption"].iloc[0]), "probed_epochs": epochs})
    sidecar = write_sidecar(args.out, record)
    print(f"{len(frame)} rows ({len(probed)} probe, {len(frame) - len(probed)} model) -> {args.out}, {sidecar}")
    return 0
