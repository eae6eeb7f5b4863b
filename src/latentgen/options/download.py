"""The options of `latentgen download` (its command: ``latentgen.commands.download``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=argtypes.dataset_name,
                        help="dataset name (built in, or a configuration's imagefolder: dataset)")
    parser.add_argument("--data-root", help="folder holding (or receiving) the raw files; not needed for digits")
    parser.add_argument("--out", required=True, help="prepared dataset file to write (.npz)")
    parser.add_argument("--no-download", action="store_true",
                        help="never touch the network: fail, naming the files, if they are absent")
