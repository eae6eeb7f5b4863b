"""One module per ``python -m latentgen`` command: ``add_arguments(parser)`` and ``run(args)``."""

from __future__ import annotations

import argparse

RAW_FILES_HELP = "folder with the raw dataset files (not needed for digits)"


def add_data_source(parser: argparse.ArgumentParser, data_root_help: str = RAW_FILES_HELP) -> None:
    """``--data-root`` or ``--prepared`` (at most one): where a command reads a dataset's images."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-root", help=data_root_help)
    source.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")
