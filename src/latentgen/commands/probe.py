"""Probe one checkpoint's activations: MASC and VeLPIC on every layer, and the VeLPIC transfer.

Reads an activations file (``latentgen activations``). For every layer, MASC (99 % subspaces)
and VeLPIC are fitted on the training activations with the corrupted labels (one decomposition
for both) and scored on the test set (true labels) and on the training set against the
corrupted and the true labels. The transfer is evaluated for real: the checkpoint recorded in
the file (or --checkpoint) is loaded, its head gets VeLPIC's class vectors of the last hidden
layer (bias zeroed: probe ``transfer``; trained bias kept, where the head has one:
``transfer_bias``) and the edited network, in eval mode, is run on the training and test
images. The images come from --data-root / --prepared, else from where the checkpoint
recorded its data. --families chooses the probe families (latentgen.registry.PROBE_FAMILIES).

Writes a tidy CSV (atomically): model,dataset,corruption,run,epoch,layer,probe,split,accuracy
with split test | train_corrupted | train_true and accuracy a fraction in [0, 1].
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentgen import argtypes, registry

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activations", required=True, help="activations file (.h5) from `latentgen activations`")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--checkpoint", help="checkpoint for the transfer (default: the one recorded in the file)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data-root", help="folder with the raw dataset files (default: as the checkpoint recorded)")
    data.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")
    parser.add_argument("--families", type=families, nargs="+", metavar="NAME[,NAME...]", default=None,
                        help="probe families to run, comma-separated or several values (default: "
                             f"{','.join(DEFAULT_FAMILIES)}; known: {', '.join(registry.PROBE_FAMILIES)})")
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


def run(args: argparse.Namespace) -> int:
    from latentgen.devices import blas_threads, set_threads
    from latentgen.probing import probe_checkpoint, write_probe_csv

    names = chosen_families(args)
    set_threads(args.threads)
    with blas_threads(args.threads):  # the probes' CPU workers follow the BLAS threads
        rows = probe_checkpoint(args.activations, families=names, checkpoint=args.checkpoint,
                                data_root=args.data_root, prepared=args.prepared, variance=args.variance,
                                sign=args.sign, batch_size=args.batch_size, device=args.device)
    write_probe_csv(rows, args.out)
    print(f"{args.activations}: {len(rows)} rows -> {args.out}")
    if args.delete_activations:
        Path(args.activations).unlink(missing_ok=True)
        print(f"deleted {args.activations}")
    return 0
