"""Fetch a dataset's raw files (if allowed) and write its prepared .npz.

The prepared file holds the images as stored (uint8; float32 for digits), the true labels and the
normalisation constants, so training and activation jobs load it in seconds without torchvision or
the network. Raw files go under --data-root in torchvision's layout; files already there are used
as they are and no network is touched. digits needs no data root.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from latentgen.data.datasets import prepare_dataset, read_prepared

    out = prepare_dataset(args.dataset, args.data_root, args.out, download=not args.no_download)
    raw = read_prepared(out, args.dataset)
    print(f"{args.dataset}: {len(raw.train_y)} train / {len(raw.test_y)} test images -> {out}")
    return 0
