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
import sys

from latentgen import registry

FISHER_DEPRECATED = "latentgen repair: --fisher true is deprecated; use --fisher exact (the same exact true Fisher)"


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
