"""The options of `latentgen train` (its command: ``latentgen.commands.train``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source


# flags that override a TrainConfig field of the same name
OVERRIDES = ("seed", "init_seed", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "target_acc", "shuffle",
             "max_epochs", "train_subset", "grid_dense_until", "grid_dense_step", "grid_step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, type=argtypes.architecture_name,
                        help="architecture (built in, or a configuration's external one)")
    parser.add_argument("--dataset", required=True, type=argtypes.dataset_name,
                        help="dataset (built in, or a configuration's imagefolder: dataset)")
    parser.add_argument("--corruption", required=True, type=argtypes.unit_interval,
                        help="label corruption degree c in [0, 1]")
    parser.add_argument("--run", required=True, type=argtypes.positive_int, help="run number (1, 2, 3, ...)")
    parser.add_argument("--out", required=True, help="run folder to write")
    add_data_source(parser)
    parser.add_argument("--labels", help="label file from `latentgen corrupt` (else corrupted on the fly with --label-seed)")
    parser.add_argument("--label-seed", type=argtypes.nonnegative_int, default=registry.LABEL_SEED,
                        help=f"seed for on-the-fly corruption (default {registry.LABEL_SEED}, the authors')")
    parser.add_argument("--seed", type=argtypes.nonnegative_int,
                        help=f"training seed (default {registry.TRAIN_SEED_BASE} + run)")
    parser.add_argument("--init-seed", type=argtypes.nonnegative_int,
                        help="initial-weights seed (default: the CNN's fixed 0, else --seed)")
    parser.add_argument("--hparams", choices=list(registry.HPARAM_SOURCES), default="code",
                        help="defaults from the authors' code (default) or the paper's text")
    parser.add_argument("--optimizer", choices=list(registry.OPTIMIZERS), help="override the optimizer")
    parser.add_argument("--lr", type=argtypes.positive_float, help="override the learning rate")
    parser.add_argument("--momentum", type=argtypes.nonnegative_float, help="override the SGD momentum")
    parser.add_argument("--weight-decay", type=argtypes.nonnegative_float,
                        help="L2 weight decay of the optimizer (default 0, as the authors)")
    parser.add_argument("--dropout", type=argtypes.open_unit_interval,
                        help="dropout after each hidden ReLU of the MLP or CNN while training (default 0, as the "
                             "authors' models); a model option (same as --model-options '{\"dropout\": P}')")
    parser.add_argument("--batch-size", type=argtypes.positive_int, help="override the batch size")
    parser.add_argument("--target-acc", type=argtypes.fraction,
                        help="stop when the running train accuracy on corrupted labels reaches this fraction")
    parser.add_argument("--shuffle", type=argtypes.boolean, metavar="true|false",
                        help="shuffle the training set each epoch (default false, as the authors)")
    parser.add_argument("--max-epochs", type=argtypes.nonnegative_int, help="at most this many epochs (default 500)")
    parser.add_argument("--train-subset", type=argtypes.positive_int, help="train on the first N training images only")
    parser.add_argument("--grid-dense-until", type=argtypes.nonnegative_int,
                        help="checkpoint every --grid-dense-step epochs up to this epoch (default 20)")
    parser.add_argument("--grid-dense-step", type=argtypes.positive_int, help="dense checkpoint step (default 2)")
    parser.add_argument("--grid-step", type=argtypes.positive_int,
                        help="checkpoint step after the dense part (default 5; 10 for AlexNet-Tiny ImageNet)")
    parser.add_argument("--model-options", type=argtypes.json_object,
                        help='JSON object of model overrides, e.g. \'{"pool_stride": 1}\'')
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch (default: torch's "
                        "choice; pass the job's core count when several jobs share a machine)")
    parser.add_argument("--eval-batch-size", type=argtypes.positive_int, default=1000,
                        help="batch size for test accuracy (no effect on results)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines (start, resume and end lines only)")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="replay each full batch's step as one CUDA graph (SGD; with Adam the forward and "
                             "backward passes, the step eager; no dropout; the same numbers). Default: on a GPU "
                             "for the architectures whose graphed run tests/gpu has found bitwise equal to the "
                             "eager one (registry cuda_graph: the MLP)")
