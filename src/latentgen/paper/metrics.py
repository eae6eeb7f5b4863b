"""One model–dataset–corruption's metrics table: every probe row of every run, and the model's own.

:func:`collect` reads probe CSVs (``latentgen probe``'s per-checkpoint files, or any
concatenation of them, such as one file per run) and each run's ``train_log.csv`` and returns
the tidy frame; :func:`write_metrics` writes it with its provenance sidecar.

Only the probe rows the TMLR figures read enter the table (:func:`tmlr_rows`): probes
:data:`TMLR_PROBES` fit on the corrupted labels. A probe CSV with more families or label sets
(``latentgen probe --families ... --fit-labels corrupted,true``) therefore gives the same table,
byte for byte, as one with the default families only; its other rows are for the 2025 paper's
tables (``latentgen.paper.tables``). The table's columns are the figures' (no ``fit_labels``).

Row order: the probe rows by run, then epoch, each checkpoint's rows in the order its probe CSV
lists them (a stable sort), then the model rows run by run (split test, train_corrupted,
train_true; epochs ascending). The probe rows of one checkpoint come from one file, so the table
is the same byte for byte however the files are split or ordered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

# the model's own accuracy per split: the train log's column
SPLIT_COLUMNS = {"test": "test_acc", "train_corrupted": "train_acc_corrupted", "train_true": "train_acc_true"}
# the probe rows the TMLR figures read: these probes, fit on the labels the model was trained with
TMLR_PROBES = ("masc", "velpic", "transfer", "transfer_bias")
TMLR_FIT_LABELS = "corrupted"


def read_probe_rows(paths: Iterable[str | os.PathLike]):
    """The TMLR figures' rows of the probe CSVs (:func:`tmlr_rows`), in the figures' columns."""
    from latentgen.paper.figures import read_metrics

    return read_metrics(paths, rows=tmlr_rows)


def tmlr_rows(frame):
    """The rows of a probe frame the TMLR figures use: probe in :data:`TMLR_PROBES`, fit on the
    corrupted labels (every row of a table without ``fit_labels``, as written before it existed)."""
    keep = frame["probe"].isin(TMLR_PROBES)
    if "fit_labels" in frame.columns:
        keep &= frame["fit_labels"] == TMLR_FIT_LABELS
    return frame[keep].reset_index(drop=True)


def parse_train_logs(items: Iterable[str]) -> dict[int, Path]:
    """``["1=run1/train_log.csv", ...]`` → ``{1: Path(...)}``; ValueError on a malformed or repeated run."""
    logs = {}
    for item in items:
        run, sep, path = item.partition("=")
        if not sep or not run.strip().lstrip("-").isdigit():
            raise ValueError(f"--train-logs entry {item!r} is not RUN=PATH")
        if int(run) in logs:
            raise ValueError(f"--train-logs names run {run} twice")
        logs[int(run)] = Path(path)
    return logs


def collect(probe_paths: Iterable[str | os.PathLike], train_logs: Mapping[int, str | os.PathLike]):
    """The tidy frame: probe rows sorted by run and epoch, then the model rows."""
    import pandas as pd

    from latentgen.paper.figures import COLUMNS, MODEL_LAYER

    probes = read_probe_rows(probe_paths)
    if probes.empty:
        raise ValueError(f"the probe CSVs hold no rows of {', '.join(TMLR_PROBES)} fit on the "
                         f"{TMLR_FIT_LABELS} labels (the TMLR figures' probes)")
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
        path = Path(path)
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
    return pd.concat([probes[COLUMNS], *model_rows], ignore_index=True)


def probed_epochs(frame) -> dict[int, list[int]]:
    """``{run: sorted probed epochs}`` of a metrics frame."""
    probed = frame[frame["probe"] != "model"]
    return {int(r): sorted(int(e) for e in g["epoch"].unique()) for r, g in probed.groupby("run")}


def write_metrics(probe_paths: Iterable[str | os.PathLike], train_logs: Mapping[int, str | os.PathLike],
                  out: str | os.PathLike, config=None, seeds=None):
    """Write the :func:`collect` table to ``out`` (atomically) and its provenance sidecar.

    The sidecar records every input (probe CSVs, train logs and the runs' manifest.json next to
    them), the config, the seeds and the probed epochs. Returns ``(frame, sidecar path)``.
    """
    from latentgen._io import atomic_path
    from latentgen.provenance import build_record, write_sidecar

    probe_paths = [str(p) for p in probe_paths]
    logs = {int(run): Path(path) for run, path in train_logs.items()}
    frame = collect(probe_paths, logs)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    manifests = [p.parent / "manifest.json" for p in logs.values() if (p.parent / "manifest.json").is_file()]
    record = build_record(inputs=[*probe_paths, *map(str, logs.values()), *map(str, manifests)],
                          outputs=[str(out)], config=config, seeds=seeds,
                          extra={"model": str(frame["model"].iloc[0]), "dataset": str(frame["dataset"].iloc[0]),
                                 "corruption": float(frame["corruption"].iloc[0]),
                                 "probed_epochs": probed_epochs(frame)})
    return frame, write_sidecar(out, record)
