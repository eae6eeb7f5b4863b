"""The options of `latentgen claims` (its command: ``latentgen.commands.claims``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probes", nargs="*", default=[], help="final-model probe tables (the 2025 claims)")
    parser.add_argument("--train-logs", nargs="*", default=[],
                        help="the runs' train_log.csv (the model's own final test accuracy)")
    parser.add_argument("--relabel", nargs="*", default=[], help="relabel-and-retrain result CSVs")
    parser.add_argument("--metrics", nargs="*", default=[], help="TMLR metrics CSVs (the TMLR claims)")
    parser.add_argument("--out", required=True, help="claims CSV to write")
    parser.add_argument("--config-json", default=None, help="the configuration (JSON), for provenance")
    parser.add_argument("--no-provenance", action="store_true", help="do not write the .json sidecar")
