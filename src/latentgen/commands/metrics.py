"""Collect one model–dataset–corruption's accuracies over runs and checkpoints into one tidy CSV.

Concatenates the probe CSVs (from `latentgen probe`: one per checkpoint, of every run, in any
order; or any concatenation of them) and adds the model's own accuracies from each run's
train_log.csv as rows with probe = layer = "model" (split test = test_acc, train_corrupted =
running train_acc_corrupted, train_true = train_acc_true; the initial model's empty train
columns are left out). Rows are ordered by run and epoch (each checkpoint's rows as its probe
CSV lists them), then the model rows. Writes the CSV and a provenance sidecar (.json next to it)
with the config hash, git commit, versions, seeds and the sha256 of every input.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from latentgen.paper.metrics import parse_train_logs, write_metrics
    from latentgen.provenance import parse_json

    config = parse_json(args.config_json, "--config-json")
    seeds = parse_json(args.seeds, "--seeds")
    frame, sidecar = write_metrics(args.probes, parse_train_logs(args.train_logs), args.out, config=config,
                                   seeds=seeds)
    n_model = int((frame["probe"] == "model").sum())
    print(f"{len(frame)} rows ({len(frame) - n_model} probe, {n_model} model) -> {args.out}, {sidecar}")
    return 0
