"""The options of `latentgen repair` (its command: ``latentgen.commands.repair``)."""

from __future__ import annotations

import argparse
import difflib
import re

from latentgen import registry
from latentgen.argtypes import fraction, json_object, nonnegative_int, positive_int
from latentgen.options import add_data_source


def fisher_name(text: str) -> str:
    """A Fisher kind as given (an old alias such as ``true`` kept, so ``run`` can warn about it)."""
    if text in registry.FISHER_KINDS or text in registry.FISHER_ALIASES:
        return text
    close = difflib.get_close_matches(str(text), registry.FISHER_KINDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(registry.FISHER_KINDS)}{hint})")


def device_name(text: str) -> str:
    """auto, cpu, cuda or cuda:N (resolved, and checked against the machine, when the command runs)."""
    name = str(text).strip().lower()
    if name in registry.DEVICE_CHOICES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from {', '.join(registry.DEVICE_CHOICES)} "
                                     "or cuda:N)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # registry and argtypes only: the workflow builds this parser at Snakefile parse time
    swept = registry.SWEPT_REPAIRS
    defaults = registry.DEFAULT_REPAIRS
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt (from `latentgen train`)")
    parser.add_argument("--labels", required=True, help="label file .npz the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    add_data_source(parser)
    parser.add_argument("--layer-sets", nargs="+", metavar="SET",
                        help="layer sets, e.g. fc1+fc4 hidden all (default: the registry's for the architecture, "
                             "CURVATURE.md §5.4's for the MLP/CNN)")
    parser.add_argument("--rhos", nargs="+", type=fraction, default=list(registry.DEFAULT_RHOS), metavar="RHO",
                        help="curvature mass kept, each in (0, 1] (default: "
                             + " ".join(f"{r:g}" for r in registry.DEFAULT_RHOS) + ")")
    parser.add_argument("--methods", nargs="*", default=list(defaults), choices=list(swept), metavar="METHOD",
                        help=f"repairs swept over layer sets and rho (default: {' '.join(defaults)}; also: "
                             + ", ".join(n for n in swept if n not in defaults) + ")")
    parser.add_argument("--references", nargs="*", default=list(registry.REPAIR_REFERENCES),
                        choices=list(registry.REPAIR_REFERENCES), metavar="REF",
                        help="reference rows: none (unedited), velpic, velpic_bias (default: all)")
    parser.add_argument("--fisher", type=fisher_name, default="exact",
                        metavar="{" + ",".join(registry.FISHER_KINDS) + "}",
                        help="labels in the gradient factor G: the exact true Fisher (default), the empirical "
                             "Fisher on the corrupted labels, or labels sampled from the model ('true' is the "
                             "deprecated spelling of exact)")
    parser.add_argument("--samples", type=positive_int, default=1,
                        help="labels drawn per example with --fisher sampled")
    parser.add_argument("--bias", choices=["keep", "homogeneous"], default="keep",
                        help="keep biases (default, as the paper) or edit [W b] in homogeneous coordinates")
    parser.add_argument("--gram-dtype", choices=["float64", "float32"], default="float64",
                        help="precision of the factor products (blocks of rows); sums over blocks are float64 "
                             "either way (float32: faster, ~1e-6 relative)")
    parser.add_argument("--factor-subset", type=positive_int, default=None, metavar="N",
                        help="compute the factors from N training inputs drawn with --seed (default: all)")
    parser.add_argument("--bands", action="store_true",
                        help="also write OUT.bands.csv: per edited layer and band of K-FAC components (top 10 %%, "
                             "10-25 %%, 25-50 %%, bottom 50 %% by curvature), mean |W_band a| on training inputs "
                             "whose label was changed over that on unchanged ones (Merullo et al. §4)")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="seed of the random control, sampled Fisher and subset")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="auto, cpu or cuda[:N] (factors and evaluation)")
    parser.add_argument("--batch-size", type=positive_int, default=1024, help="evaluation batch size")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--config-json", type=json_object, default=None,
                        help="workflow configuration slice (a JSON object), recorded in the provenance")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
