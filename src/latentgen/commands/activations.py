"""Dump one checkpoint's probe-layer activations (full train and test sets) to an HDF5 file.

Writes FILE.h5 with train/<layer>, test/<layer> (float32 N×d, compressed unless --compression
none), train/labels_true, train/labels_corrupted and test/labels, and root attributes naming the
model, dataset, corruption, run, epoch and config hash; complete=1 is set last and the file
appears only when finished. The corrupted labels are the checkpoint's own: from --labels, else the label file the
checkpoint recorded, else recomputed from its recorded seed; all are checked against the
checkpoint's labels digest. The data source defaults to what the checkpoint recorded.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from latentgen.probing.activations import dump_activations, open_activations
    from latentgen.devices import set_threads

    set_threads(args.threads)
    layers = None
    if args.layers:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    out = dump_activations(args.checkpoint, args.out, data_root=args.data_root, prepared=args.prepared,
                           labels=args.labels, batch_size=args.batch_size, device=args.device, layers=layers,
                           compression=args.compression, batchnorm=args.batchnorm)
    with open_activations(out) as acts:
        sizes = acts.sizes()
        n_train, n_test = len(acts.labels("train")), len(acts.labels("test"))
    print(f"{args.checkpoint}: {n_train} train / {n_test} test images, layers "
          + ", ".join(f"{k} ({v})" for k, v in sizes.items()) + f" -> {out}")
    return 0
