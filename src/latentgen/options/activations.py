"""The options of `latentgen activations` (its command: ``latentgen.commands.activations``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source


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
