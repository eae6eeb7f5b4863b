"""The options of `latentgen corrupt` (its command: ``latentgen.commands.corrupt``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source


STRICT_MASK = {"auto": None, "yes": True, "no": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=argtypes.dataset_name,
                        help="dataset name (built in, or a configuration's imagefolder: dataset)")
    parser.add_argument("--corruption", required=True, type=argtypes.unit_interval, help="degree c in [0, 1]")
    parser.add_argument("--seed", type=argtypes.nonnegative_int, default=registry.LABEL_SEED,
                        help=f"numpy seed (default {registry.LABEL_SEED}, as the authors)")
    parser.add_argument("--out", required=True, help="label file to write (.npz)")
    add_data_source(parser)
    parser.add_argument("--strict-mask", choices=list(STRICT_MASK), default="auto",
                        help="mask rand < c instead of <= c; auto = as the authors' code (only Tiny ImageNet)")
    parser.add_argument("--noise", choices=["uniform", "pair", "matrix", "file"], default="uniform",
                        help="uniform (the authors': any class), pair (y -> y+1 mod K), matrix (from row y of "
                             "--noise-file's K×K transition matrix) or file (--noise-file holds the labels)")
    parser.add_argument("--noise-file", help="the transition matrix (.npy/.csv) or the noisy labels (.npy/.csv)")
