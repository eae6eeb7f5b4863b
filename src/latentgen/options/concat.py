"""The options of `latentgen concat` (its command: ``latentgen.commands.concat``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", required=True, help="CSV files with one shared header, in order")
    parser.add_argument("--out", required=True, help="CSV to write")
