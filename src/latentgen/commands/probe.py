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
from latentgen.options import types as argtypes
from latentgen.commands import add_data_source

# the families run when --families is not given (registry order)
DEFAULT_FAMILIES = tuple(name for name, family in registry.PROBE_FAMILIES.items() if family.default)


def families(text: str) -> list[str]:
    """``--families``: comma-separated names of the registry's probe families."""
    names = [name.strip() for name in str(text).split(",")]
    unknown = [name for name in names if name not in registry.PROBE_FAMILIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown probe family {', '.join(map(repr, unknown or ['']))}; known: "
                                         f"{', '.join(registry.PROBE_FAMILIES)}")
    return names


def fit_label_sets(text: str) -> list[str]:
    """``--fit-labels``: comma-separated label sets (corrupted, true)."""
    names = [name.strip() for name in str(text).split(",")]
    unknown = [name for name in names if name not in registry.FIT_LABEL_SETS]
    if not names or unknown:
        hint = ("; corrupted@C label sets come from --extra-labels C=LABELS.npz"
                if any(n.startswith(registry.EXTRA_LABEL_PREFIX) for n in unknown) else "")
        raise argparse.ArgumentTypeError(f"unknown label set {', '.join(map(repr, unknown or ['']))}; known: "
                                         f"{', '.join(registry.FIT_LABEL_SETS)}{hint}")
    return names


def extra_label_file(text: str) -> tuple[float, str]:
    """``--extra-labels``: ``C=LABELS.npz``, a corruption degree in [0, 1] and its label file."""
    degree, sep, path = str(text).partition("=")
    if not sep or not path.strip():
        raise argparse.ArgumentTypeError(f"expected C=LABELS.npz, got {text!r}")
    try:
        value = argtypes.unit_interval(degree.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected C=LABELS.npz with C in [0, 1], got {text!r}") from None
    return value, path.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activations", required=True, help="activations file (.h5) from `latentgen activations`")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--checkpoint", help="checkpoint for the transfer (default: the one recorded in the file)")
    add_data_source(parser, "folder with the raw dataset files (default: as the checkpoint recorded)")
    parser.add_argument("--families", type=families, nargs="+", metavar="NAME[,NAME...]", default=None,
                        help="probe families to run, comma-separated or several values (default: "
                             f"{','.join(DEFAULT_FAMILIES)}; known: {', '.join(registry.PROBE_FAMILIES)})")
    parser.add_argument("--fit-labels", type=fit_label_sets, nargs="+", metavar="SET[,SET...]", default=None,
                        help="label sets every family is fit on, comma-separated or several values: corrupted "
                             "(the labels the model was trained with; default), true (the true labels)")
    parser.add_argument("--extra-labels", type=extra_label_file, nargs="+", metavar="C=LABELS.npz", default=None,
                        help="also fit MASC and VeLPIC on the corrupted labels of this label file of degree C "
                             "(same images; rows fit_labels = corrupted@C), e.g. the clean model with "
                             "0.6=labels/mnist/c0.6.npz")
    parser.add_argument("--seed", type=argtypes.integer, default=registry.LOGISTIC_SEED,
                        help=f"seed of the logistic-regression probe (default {registry.LOGISTIC_SEED})")
    parser.add_argument("--variance", type=argtypes.fraction, default=0.99,
                        help="MASC variance threshold in (0, 1] (default 0.99)")
    parser.add_argument("--sign", choices=list(registry.SIGN_MODES), default="all",
                        help="VeLPIC sign from the mean projection of all training rows (default, the authors' "
                             "code) or of the class's rows (the paper's wording)")
    parser.add_argument("--no-transfer", action="store_true",
                        help="skip the weight transfer and every family that runs the network (no checkpoint "
                             "or images needed)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=1000,
                        help="images per forward pass of the edited model")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--delete-activations", action="store_true",
                        help="delete the activations file once the CSV is written (the workflow's temporary input)")


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
