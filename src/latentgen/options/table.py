"""The options of `latentgen table` (its command: ``latentgen.commands.table``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from latentgen.paper.outputs import names

    parser.add_argument("--name", required=True, help=f"table: {', '.join(names('table'))}")
    parser.add_argument("--probes", nargs="*", default=[], help="final-model probe tables (tidy CSVs with fit_labels)")
    parser.add_argument("--train-logs", nargs="*", default=[],
                        help="the runs' train_log.csv (each run named by the manifest.json beside it, else by "
                             "its path .../{arch}/{dataset}/c{c}/run{r}/train_log.csv)")
    parser.add_argument("--relabel", nargs="*", default=[], help="relabel-and-retrain result CSVs")
    parser.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, .tex, .md and the sidecar PREFIX.json")
    parser.add_argument("--pdf", default=None, help="the table's bar chart to write (table_masc, table_baselines)")
    parser.add_argument("--config-json", default=None, help="the configuration (JSON), for provenance")
    parser.add_argument("--no-provenance", action="store_true", help="do not write the .json sidecar")
