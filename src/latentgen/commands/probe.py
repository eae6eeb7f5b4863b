"""Probe one checkpoint's activations: MASC and VeLPIC on every layer, and the VeLPIC transfer.

Reads an activations file (``latentgen activations``). For every layer, MASC (99 % subspaces)
and VeLPIC are fitted on the training activations with the corrupted labels (one decomposition
for both) and scored on the test set (true labels) and on the training set against the
corrupted and the true labels. The transfer is evaluated for real: the checkpoint recorded in
the file (or --checkpoint) is loaded, its head gets VeLPIC's class vectors of the last hidden
layer (bias zeroed: probe ``transfer``; trained bias kept, where the head has one:
``transfer_bias``) and the edited network, in eval mode, is run on the training and test
images. The images come from --data-root / --prepared, else from where the checkpoint
recorded its data.

--families chooses the probe families (latentgen.registry.PROBE_FAMILIES): besides masc,
velpic and transfer (the default), the 2025 paper's baselines logistic, ncm, knn, lda, qda
(not on the input layer; test split only; a layer a family cannot fit gets NaN rows, reason
logged) and masc_sensitivity (probes masc_var0.25, masc_var0.5, masc_var0.75, masc_var0.99,
masc_1pc). --fit-labels corrupted,true fits every family on the corrupted and on the true
training labels; --extra-labels C=LABELS.npz also fits MASC and VeLPIC on that label file's
corrupted labels (rows fit_labels = corrupted@C: the clean model with degree C's subspaces).

Writes a tidy CSV (atomically):
model,dataset,corruption,run,epoch,layer,probe,fit_labels,split,accuracy with fit_labels
corrupted | true | corrupted@C, split test | train_corrupted | train_true and accuracy a
fraction in [0, 1] (NaN: the family could not fit that layer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentgen import registry
from latentgen.options.probe import DEFAULT_FAMILIES


def chosen_families(args: argparse.Namespace) -> list[str]:
    """--families (default: the registry's defaults); with --no-transfer, less those that need the
    checkpoint (the transfer)."""
    names = [name for group in args.families for name in group] if args.families else list(DEFAULT_FAMILIES)
    if args.no_transfer:
        names = [name for name in names if not registry.PROBE_FAMILIES[name].needs_checkpoint]
        if not names:
            raise ValueError("--no-transfer leaves no probe family to run")
    return names


def chosen_fit_labels(args: argparse.Namespace) -> list[str] | None:
    """--fit-labels (None: the default, corrupted)."""
    return [name for group in args.fit_labels for name in group] if args.fit_labels else None


def chosen_extra_labels(args: argparse.Namespace) -> dict[float, str] | None:
    """--extra-labels as ``{C: label file}``; a degree named twice is refused."""
    if not args.extra_labels:
        return None
    extra: dict[float, str] = {}
    for degree, path in args.extra_labels:
        if degree in extra:
            raise ValueError(f"--extra-labels names degree {degree!r} twice")
        extra[degree] = path
    return extra


def run(args: argparse.Namespace) -> int:
    import logging

    from latentgen.devices import blas_threads, set_threads
    from latentgen.probing.checkpoint import probe_checkpoint, write_probe_csv

    names = chosen_families(args)
    extra = chosen_extra_labels(args)
    if not logging.getLogger().handlers:  # the families' warnings and NaN reasons, on stderr
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_threads(args.threads)
    with blas_threads(args.threads):  # the probes' CPU workers follow the BLAS threads
        rows = probe_checkpoint(args.activations, families=names, fit_labels=chosen_fit_labels(args),
                                extra_labels=extra, checkpoint=args.checkpoint, data_root=args.data_root,
                                prepared=args.prepared, variance=args.variance, sign=args.sign,
                                batch_size=args.batch_size, device=args.device, seed=args.seed)
    write_probe_csv(rows, args.out)
    print(f"{args.activations}: {len(rows)} rows -> {args.out}")
    if args.delete_activations:
        Path(args.activations).unlink(missing_ok=True)
        print(f"deleted {args.activations}")
    return 0
