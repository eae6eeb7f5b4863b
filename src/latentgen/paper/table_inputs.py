"""Reading the 2025 tables' inputs (``latentgen.paper.tables``): the final-model probe tables, the train
logs and the relabel results, each checked (columns, fractions, duplicates, identities)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from latentgen import contracts

if TYPE_CHECKING:
    import pandas as pd

PROBE_COLUMNS = list(contracts.PROBE_COLUMNS)
# the relabel results' columns the tables read
RELABEL_COLUMNS = [c for c in contracts.RELABEL_RESULT_COLUMNS if c not in contracts.RELABEL_PROVENANCE_COLUMNS]
KEYS = ["model", "dataset", "corruption"]


def _read_csv(path, columns: Sequence[str], what: str) -> "pd.DataFrame":
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    frame = pd.read_csv(path, dtype={c: str for c in ("model", "dataset", "layer", "probe", "fit_labels", "split",
                                                       "subspaces")})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks the columns {', '.join(missing)}")
    frame = frame[list(columns)].copy()
    frame["corruption"] = frame["corruption"].astype(float).round(6)
    frame["_file"] = str(path)
    return frame


def _check_fractions(frame: "pd.DataFrame", columns: Sequence[str], what: str) -> None:
    for column in columns:
        values = frame[column]
        bad = frame[values.notna() & ((values < 0) | (values > 1))]
        if not bad.empty:
            raise ValueError(f"{what} {bad['_file'].iloc[0]}: {column} {bad[column].iloc[0]} outside [0, 1] "
                             f"(fractions expected)")


def read_probe_tables(paths: Sequence[str | os.PathLike]) -> "pd.DataFrame":
    """The final-model probe tables, concatenated and checked (columns, fractions, duplicates)."""
    import pandas as pd

    if not paths:
        raise ValueError("no probe tables given")
    frame = pd.concat([_read_csv(p, PROBE_COLUMNS, "probe table") for p in paths], ignore_index=True)
    # an empty accuracy is a probe that could not be fit (the probe job logged why): it stays NaN
    for column in ("fit_labels", "layer", "probe", "split"):
        if frame[column].isna().any():
            raise ValueError(f"probe table {frame.loc[frame[column].isna(), '_file'].iloc[0]}: empty {column}")
    _check_fractions(frame, ["accuracy"], "probe table")
    dup = frame.duplicated(PROBE_COLUMNS[:-1], keep=False)
    if dup.any():
        row = frame[dup].iloc[0]
        files = sorted(set(frame.loc[dup, "_file"]))
        raise ValueError(f"duplicate probe rows ({row['model']}-{row['dataset']} c={row['corruption']} run {row.run} "
                         f"epoch {row['epoch']} {row['probe']} {row['fit_labels']} {row['layer']} {row['split']}) "
                         f"in {', '.join(files)}")
    return frame


def train_log_identity(path: str | os.PathLike) -> tuple[str, str, float, int]:
    """(model, dataset, corruption, run) of a train log: its manifest.json, else its path."""
    path = Path(path)
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
            return str(m["arch"]), str(m["dataset"]), round(float(m["corruption"]), 6), int(m["run"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{manifest} does not name the run of {path} ({exc!r})") from None
    parts = path.parts
    match = len(parts) >= 5 and re.fullmatch(r"c([0-9.]+)", parts[-3]) and re.fullmatch(r"run(\d+)", parts[-2])
    if not match:
        raise ValueError(f"train log {path}: no manifest.json beside it and its path is not "
                         f".../{{arch}}/{{dataset}}/c{{c}}/run{{r}}/train_log.csv, so its run is unknown")
    return parts[-5], parts[-4], round(float(parts[-3][1:]), 6), int(parts[-2][3:])


def read_train_logs(paths: Sequence[str | os.PathLike]) -> "pd.DataFrame":
    """One row per run: ``model,dataset,corruption,run,final_epoch,model_test`` (its last logged epoch)."""
    import pandas as pd

    if not paths:
        raise ValueError("no train logs given")
    rows = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"train log {path} does not exist")
        log = pd.read_csv(path)
        if "epoch" not in log.columns or "test_acc" not in log.columns:
            raise ValueError(f"train log {path} lacks the columns epoch, test_acc")
        if log.empty:
            raise ValueError(f"train log {path} has no rows")
        last = log.loc[log["epoch"].idxmax()]
        value = float(last["test_acc"])
        if not 0 <= value <= 1:
            raise ValueError(f"train log {path}: test_acc {value} outside [0, 1] (fractions expected)")
        rows.append((*train_log_identity(path), int(last["epoch"]), value, str(path)))
    frame = pd.DataFrame(rows, columns=[*KEYS, "run", "final_epoch", "model_test", "_file"])
    dup = frame.duplicated([*KEYS, "run"], keep=False)
    if dup.any():
        raise ValueError(f"train logs {', '.join(frame.loc[dup, '_file'])} are of the same run")
    return frame


def read_relabel(paths: Sequence[str | os.PathLike]) -> "pd.DataFrame":
    import pandas as pd

    if not paths:
        raise ValueError("no relabel results given")
    frame = pd.concat([_read_csv(p, RELABEL_COLUMNS, "relabel results") for p in paths], ignore_index=True)
    _check_fractions(frame, [c for c in RELABEL_COLUMNS if "acc" in c or "agreement" in c], "relabel results")
    dup = frame.duplicated([*KEYS, "run", "subspaces"], keep=False)
    if dup.any():
        raise ValueError(f"relabel results repeat a run × subspaces in {', '.join(sorted(set(frame['_file'][dup])))}")
    return frame


