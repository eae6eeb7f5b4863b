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

from latentgen import registry
from latentgen.options import types as argtypes
from latentgen.commands import add_data_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (RUN/checkpoints/epochE.pt)")
    parser.add_argument("--out", required=True, help="HDF5 file to write")
    add_data_source(parser)
    parser.add_argument("--labels", help="the label file the model was trained with (checked against the checkpoint)")
    parser.add_argument("--layers", help="comma-separated probe layers (default: all of the model's)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=500, help="images per forward pass (default 500)")
    parser.add_argument("--compression", choices=registry.ACTIVATION_COMPRESSIONS,
                        default=registry.ACTIVATION_COMPRESSIONS[0],
                        help="HDF5 compression, lossless (default lzf; none writes at disk speed, for fast GPUs)")
    parser.add_argument("--batchnorm", choices=registry.BATCHNORM_MODES, default=None,
                        help="BatchNorm in eval mode or with per-image statistics (the authors' ResNet dumps, D9); "
                             "default: the architecture's own (per_sample for ResNet-18, eval for the others)")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch (default: torch's choice)")


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
