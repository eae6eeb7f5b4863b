"""Relabel a memorized model's training set with MASC and retrain it (2025 paper, SPEC §10).

From a run's final checkpoint: the test set is split 80/20 (train_test_split, random_state 2345);
MASC (variance 0.99) is fit per probe layer on the training activations with the corrupted
labels (--subspaces corrupted) or the true ones (--subspaces true) and scored on the 20 % split;
the best layer (ties: the earlier one; `input` counts, as in the authors' script, unless
--exclude-input) relabels every training image. The model then trains on those labels with a
fresh optimizer and its run's settings (batch size, optimizer, order) for at most --max-epochs
epochs, stopping when --patience consecutive epochs bring no improvement of the 20 %-split
accuracy over the best so far. Reported: test accuracy on the 80 % split before retraining and
of the best epoch's model (and of the last epoch's).

Writes OUT/layers.csv (MASC per layer), OUT/labels.npz (the relabelled labels, in the format of
`latentgen corrupt`), OUT/train_log.csv, OUT/result.json (provenance) and, last, OUT/result.csv
(one row). Interrupted runs resume: rerun the same command (OUT/resume.pt; the relabelled label
file is reused after checking its sha256; bitwise identical on the CPU).
"""

from __future__ import annotations

import argparse

from latentgen import registry
from latentgen.options import types as argtypes
from latentgen.commands import add_data_source

SUBSPACES = ("corrupted", "true")  # latentgen.repair.relabel.SUBSPACES (checked by the tests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # registry and argtypes only: the workflow builds this parser at Snakefile parse time
    parser.add_argument("--checkpoint", required=True, help="the run's final checkpoint (RUN/checkpoints/epochE.pt)")
    parser.add_argument("--labels", required=True, help="label file .npz the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="folder to write")
    add_data_source(parser)
    parser.add_argument("--subspaces", choices=SUBSPACES, required=True,
                        help="labels the MASC subspaces are fit on: corrupted (the paper's main run) or true")
    parser.add_argument("--max-epochs", type=argtypes.nonnegative_int, default=30,
                        help="retrain for at most this many epochs (default 30)")
    parser.add_argument("--patience", type=argtypes.positive_int, default=3,
                        help="stop after this many consecutive epochs without a new best 20 %%-split "
                             "accuracy (default 3)")
    parser.add_argument("--variance", type=argtypes.fraction, default=0.99,
                        help="MASC variance threshold (default 0.99, the authors')")
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


def run(args: argparse.Namespace) -> int:
    from latentgen.repair.relabel import relabel_and_retrain

    relabel_and_retrain(args.checkpoint, args.labels, args.out, subspaces=args.subspaces, prepared=args.prepared,
                        data_root=args.data_root, max_epochs=args.max_epochs, patience=args.patience,
                        variance=args.variance, exclude_input=args.exclude_input, save_model=args.save_model,
                        device=args.device, batch_size=args.batch_size, threads=args.threads,
                        workflow_config=args.config_json, epoch_lines=not args.quiet)
    return 0
