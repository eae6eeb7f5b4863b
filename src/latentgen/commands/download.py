"""Fetch a dataset's raw files (if allowed) and write its prepared .npz.

The prepared file holds the images as stored (uint8; float32 for digits), the true labels and the
normalisation constants, so training and activation jobs load it in seconds without torchvision or
the network. Raw files go under --data-root in torchvision's layout; files already there are used
as they are and no network is touched. digits needs no data root.
"""

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


def run(args: argparse.Namespace) -> int:
    from latentgen.datasets import prepare_dataset, read_prepared

    out = prepare_dataset(args.dataset, args.data_root, args.out, download=not args.no_download)
    raw = read_prepared(out, args.dataset)
    print(f"{args.dataset}: {len(raw.train_y)} train / {len(raw.test_y)} test images -> {out}")
    return 0
