"""The options of `latentgen estimate` (its command: ``latentgen.commands.estimate``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentgen import argtypes, registry


REPO = Path(__file__).resolve().parents[3]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", default="config.yaml", help="workflow config (default config.yaml)")
    parser.add_argument("--schema", default=str(REPO / "workflow" / "schemas" / "config.schema.yaml"),
                        help="config schema (default: this checkout's)")
    parser.add_argument("--cores", type=argtypes.positive_int, help="CPU cores to project for (default: this machine's)")
    parser.add_argument("--gpus", type=argtypes.nonnegative_int,
                        help="GPUs to project for (default: this machine's CUDA devices; needs CUDA timings)")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="where the samples are timed (auto = CUDA when available)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", help="also write the table as CSV to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
