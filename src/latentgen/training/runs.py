"""What every resumable run shares: its folder, atomic saves, a CSV log, and kill points for tests.

Training (``latentgen.training.loop``), relabel-and-retrain (``latentgen.repair.relabel``), the
probe job of a run (``latentgen.probing.run``) and any future method that retrains write their
state the same way: each file through a temp file and a rename (``atomic_path``), so a process
killed at any point leaves either the old file or the new one, and the temp files it left
(``.NAME.*.tmp``) are removed when the run resumes.

Kill points: a test sets an environment variable to ``"E"`` or ``"E:stage"`` and the process
SIGKILLs itself at that point of epoch (or checkpoint) E, to interrupt a real run for real.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from pathlib import Path

import torch

from latentgen._io import atomic_path

# training and relabel-and-retrain: "E" or "E:stage" (stage default "resume")
KILL_ENV = "LATENTGEN_TEST_KILL"


def kill_point(epoch: int, stage: str, env: str = KILL_ENV, default_stage: str = "resume") -> None:
    """SIGKILL this process if ``$env`` names this point (``"E"`` means ``"E:default_stage"``)."""
    wanted = os.environ.get(env)
    if not wanted:
        return
    target, _, target_stage = wanted.partition(":")
    if int(target) == epoch and (target_stage or default_stage) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


class RunFolder:
    """A run's output folder; subclasses name its files. ``subfolders`` also hold temp files."""

    subfolders: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def remove_stale_temporaries(self) -> None:
        """Temp files left by a process killed mid-write (``atomic_path`` names them .NAME.*.tmp)."""
        for folder in (self.root, *(self.root / name for name in self.subfolders)):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)


def save_torch_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file and a rename."""
    # through a file object: torch.save names the archive after a path, and the temp name is random
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def load_torch(path: str | os.PathLike, what: str, fix: str = ""):
    """A file of plain tensors and containers (``weights_only=True``); a missing or unreadable one is an
    error naming ``what`` and the file (and ``fix``, what the user can do about it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, or an object weights_only refuses
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{what} {path} is corrupt, truncated or not a plain-tensor file: {reason}"
                         + (f"; {fix}" if fix else "")) from None


def format_csv(columns: list[str], rows: list[dict]) -> str:
    """A run's log as CSV text: ``columns`` in order, None as an empty cell, ``seconds`` to 1 ms."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else (f"{row[k]:.3f}" if k == "seconds" else row[k])
                         for k in columns})
    return buf.getvalue()


def read_json(path: str | os.PathLike) -> dict:
    """A run's JSON record; an unreadable one is a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from None
