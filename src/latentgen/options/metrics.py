"""The options of `latentgen metrics` (its command: ``latentgen.commands.metrics``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probes", nargs="+", required=True,
                        help="probe CSVs: every checkpoint's of every run, or per-run concatenations (any order)")
    parser.add_argument("--train-logs", nargs="+", required=True, metavar="RUN=PATH",
                        help="each run's train_log.csv, as RUN=PATH")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--config-json", default=None, help="the configuration that produced it (JSON), for provenance")
    parser.add_argument("--seeds", default=None, help="seeds used (JSON object), for provenance")
