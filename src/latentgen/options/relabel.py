"""The options of `latentgen relabel` (its command: ``latentgen.commands.relabel``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source




def add_arguments(parser: argparse.ArgumentParser) -> None:
    # registry and argtypes only: the workflow builds this parser at Snakefile parse time
    parser.add_argument("--checkpoint", required=True, help="the run's final checkpoint (RUN/checkpoints/epochE.pt)")
    parser.add_argument("--labels", required=True, help="label file .npz the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="folder to write")
    add_data_source(parser)
    parser.add_argument("--subspaces", choices=registry.FIT_LABEL_SETS, required=True,
                        help="labels the MASC subspaces are fit on: corrupted (the paper's main run) or true")
    parser.add_argument("--max-epochs", type=argtypes.nonnegative_int, default=30,
                        help="retrain for at most this many epochs (default 30)")
    parser.add_argument("--patience", type=argtypes.positive_int, default=3,
                        help="stop after this many consecutive epochs without a new best 20 %%-split "
                             "accuracy (default 3)")
    parser.add_argument("--variance", type=argtypes.fraction, default=registry.MASC_VARIANCE,
                        help=f"MASC variance threshold (default {registry.MASC_VARIANCE}, the authors')")
    parser.add_argument("--exclude-input", action="store_true",
                        help="do not consider the input layer (the authors' script does)")
    parser.add_argument("--save-model", action="store_true",
                        help="also write OUT/model.pt, the best epoch's model as a training checkpoint")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, default=None,
                        help="CPU threads for torch and BLAS (default: their choice)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=1000,
                        help="images per forward pass for activations and accuracies (no effect on results; "
                             "the retraining uses the run's own batch size)")
    parser.add_argument("--config-json", type=argtypes.json_object, default=None,
                        help="workflow configuration slice (a JSON object), recorded in the provenance")
    parser.add_argument("--quiet", action="store_true", help="start, resume and end lines only")
