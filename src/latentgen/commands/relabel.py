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


def run(args: argparse.Namespace) -> int:
    from latentgen.repair.relabel import relabel_and_retrain

    relabel_and_retrain(args.checkpoint, args.labels, args.out, subspaces=args.subspaces, prepared=args.prepared,
                        data_root=args.data_root, max_epochs=args.max_epochs, patience=args.patience,
                        variance=args.variance, exclude_input=args.exclude_input, save_model=args.save_model,
                        device=args.device, batch_size=args.batch_size, threads=args.threads,
                        workflow_config=args.config_json, epoch_lines=not args.quiet)
    return 0
