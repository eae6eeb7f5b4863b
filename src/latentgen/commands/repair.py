"""Repair a memorized checkpoint without retraining: K-FAC curvature edits, controls, VeLPIC transfer.

For one checkpoint: K-FAC factors of its nn.Linear layers from the training inputs (computed once),
then every repair — the unedited model, the VeLPIC transfer (zero bias; bias kept where the head has
one), and each method (kfac, svd, random by default; see --methods) × layer set × rho — is
scored on the test set (true labels) and on the training set: memorization left (agreement with
the corrupted label where the label was changed), recovery (the true label there), unchanged
examples. Writes a tidy CSV (one row per repaired model), OUT.layers.csv (one row per edited
layer) and a provenance sidecar OUT.json.

Layer sets are module names joined by '+' (MLP: fc1 fc2 fc3 fc4 output; CNN: fcs.0 fcs.1 fcs.2
fc3), or 'hidden' (every nn.Linear but the head) or 'all'.

Controls, each matched per layer to the K-FAC edit at the same rho: svd removes the same fraction
of singular components as K-FAC removes of its out*in pairs (round(f * min(out, in)) smallest);
svd_norm removes the fewest smallest singular components reaching the same ||dW||_F; random keeps
as many K-FAC pairs as K-FAC keeps, drawn uniformly with --seed; a_only / g_only truncate one
factor (A's or G's top eigenvectors holding mass rho). kfac_reestimate edits layer by layer and
re-estimates each later layer's factors on the model edited so far. rho = 1 is no edit.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

from latentgen import registry
from latentgen.options.types import fraction, json_object, nonnegative_int, positive_int
from latentgen.commands import add_data_source

FISHER_DEPRECATED = "latentgen repair: --fisher true is deprecated; use --fisher exact (the same exact true Fisher)"


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


def run(args: argparse.Namespace) -> int:
    from latentgen.repair.run import repair_checkpoint

    if args.fisher in registry.FISHER_ALIASES:
        print(FISHER_DEPRECATED, file=sys.stderr)
    repair_checkpoint(args.checkpoint, args.labels, args.out, prepared=args.prepared, data_root=args.data_root,
                      layer_sets=args.layer_sets, rhos=args.rhos, methods=args.methods, references=args.references,
                      fisher=registry.fisher_kind(args.fisher), samples=args.samples, bias=args.bias,
                      gram_dtype=args.gram_dtype, factor_subset=args.factor_subset, bands=args.bands, seed=args.seed,
                      device=args.device, batch_size=args.batch_size, threads=args.threads,
                      workflow_config=args.config_json,
                      progress=None if args.quiet else (lambda message: print(message, flush=True)))
    return 0
