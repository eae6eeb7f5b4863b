"""Train a model on corrupted labels, with checkpoints on the papers' epoch grid.

Writes OUT/checkpoints/epoch{E}.pt (epochs 0, 1, 2, 4, ..., 20, then every 5, every 10 for
AlexNet on Tiny ImageNet, plus the final epoch), OUT/train_log.csv and, last, OUT/manifest.json.
Hyper-parameters default to the authors' code (SPEC §4); --hparams paper uses the paper's CNN
batch sizes; every one can be overridden. Training stops when the running train accuracy on the
corrupted labels reaches the target (the MLP's is 1.0: exactly 100 %) or after --max-epochs.

Interrupted runs resume: rerun the same command and it continues from OUT/resume.pt (on the CPU
the result is bitwise identical to an uninterrupted run). A folder written under another
configuration is refused.
"""

from __future__ import annotations

import argparse

from latentgen.options.train import OVERRIDES


def config_from_args(args: argparse.Namespace):
    from latentgen.training.hyperparameters import default_train_config

    overrides = {field: getattr(args, field) for field in OVERRIDES if getattr(args, field) is not None}
    options = dict(args.model_options or {})
    if args.dropout is not None:
        options["dropout"] = args.dropout
    if options:
        overrides["model_options"] = options
    return default_train_config(args.arch, args.dataset, hparams=args.hparams, corruption=args.corruption,
                                run=args.run, label_seed=args.label_seed, **overrides)


def run(args: argparse.Namespace) -> int:
    from latentgen.devices import set_threads
    from latentgen.training.loop import train

    if args.eval_batch_size < 1:
        raise ValueError(f"--eval-batch-size must be >= 1, got {args.eval_batch_size}")
    config = config_from_args(args)
    set_threads(args.threads)
    train(config, args.out, data_root=args.data_root, prepared=args.prepared, labels=args.labels,
          device=args.device, eval_batch_size=args.eval_batch_size, epoch_lines=not args.quiet,
          cuda_graph=args.cuda_graph)
    return 0
