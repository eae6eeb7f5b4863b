"""The options of `latentgen probe` (its command: ``latentgen.commands.probe``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes, registry
from latentgen.options import add_data_source


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
    parser.add_argument("--variance", type=argtypes.fraction, default=registry.MASC_VARIANCE,
                        help=f"MASC variance threshold in (0, 1] (default {registry.MASC_VARIANCE})")
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
