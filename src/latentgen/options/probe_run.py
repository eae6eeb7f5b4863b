"""The options of `latentgen probe-run` (its command: ``latentgen.commands.probe_run``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source
from latentgen.options.probe import extra_label_file, families, fit_label_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="finished training run folder (with manifest.json)")
    parser.add_argument("--out", required=True, help="tidy CSV of the tracked checkpoints")
    parser.add_argument("--final-out", required=True, help="tidy CSV of the final checkpoint")
    parser.add_argument("--parts", help="folder of the per-checkpoint tables while the job runs (default: OUT "
                                        "without .csv)")
    add_data_source(parser, "folder with the raw dataset files (default: as the checkpoints recorded)")
    parser.add_argument("--labels", help="the label file the run was trained with (checked against it)")
    parser.add_argument("--checkpoints", choices=("grid", "final"), default="grid",
                        help="grid: probe the saved checkpoints on the run's grid (default); final: the final one only")
    parser.add_argument("--probe-final", action="store_true",
                        help="the final checkpoint is also one of the tracked ones (in --out)")
    for prefix, when in (("", "every probed checkpoint"), ("final-", "the final checkpoint, instead")):
        parser.add_argument(f"--{prefix}families", type=families, nargs="+", metavar="NAME[,NAME...]", default=None,
                            help=f"probe families at {when} (default: {'--families' if prefix else 'the registry defaults'})")
        parser.add_argument(f"--{prefix}fit-labels", type=fit_label_sets, nargs="+", metavar="SET[,SET...]",
                            default=None, help=f"label sets every family is fit on at {when}")
        parser.add_argument(f"--{prefix}extra-labels", type=extra_label_file, nargs="+", metavar="C=LABELS.npz",
                            default=None, help=f"MASC and VeLPIC also fit on this label file's corrupted labels at {when}")
    parser.add_argument("--no-transfer", action="store_true",
                        help="skip the weight transfer (and every family that runs the network)")
    parser.add_argument("--seed", type=argtypes.integer, default=registry.LOGISTIC_SEED,
                        help=f"seed of the logistic-regression probe (default {registry.LOGISTIC_SEED})")
    parser.add_argument("--variance", type=argtypes.fraction, default=registry.MASC_VARIANCE,
                        help="MASC variance threshold in (0, 1]")
    parser.add_argument("--sign", choices=list(registry.SIGN_MODES), default="all", help="VeLPIC's sign rule")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=1000,
                        help="images per forward pass of the edited model (the transfer)")
    parser.add_argument("--activation-batch-size", type=argtypes.positive_int, default=500,
                        help="images per forward pass for the activations (default 500, as `latentgen activations`)")
    parser.add_argument("--layers", help="comma-separated probe layers (default: all of the model's)")
    parser.add_argument("--batchnorm", choices=registry.BATCHNORM_MODES, default=None,
                        help="BatchNorm in eval mode or with per-image statistics (default: the architecture's own, "
                             "registry.activation_batchnorm: per_sample for ResNet-18 as the authors, D9)")
    parser.add_argument("--memory-budget", type=argtypes.byte_size, default=None, metavar="BYTES",
                        help="bytes of activations held at once in host memory, e.g. 8G (default: half the available memory)")
    parser.add_argument("--keep-activations", metavar="DIR",
                        help="also write each checkpoint's activations as DIR/epochE.h5 (today's file) and probe from it")
    parser.add_argument("--compression", choices=registry.ACTIVATION_COMPRESSIONS,
                        default=registry.ACTIVATION_COMPRESSIONS[0], help="HDF5 compression with --keep-activations")
    parser.add_argument("--input-cache", metavar="DIR", help="folder where input-layer rows are shared between jobs")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch (default: torch's choice)")
