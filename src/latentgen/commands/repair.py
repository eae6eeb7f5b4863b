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
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from latentgen.curvature import DEFAULT_METHODS, DEFAULT_RHOS, FISHER_KINDS, REFERENCES, REPAIRS

    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt (from `latentgen train`)")
    parser.add_argument("--labels", required=True, help="label file .npz the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")
    source.add_argument("--data-root", help="folder with the raw dataset files")
    parser.add_argument("--layer-sets", nargs="+", metavar="SET",
                        help="layer sets, e.g. fc1+fc4 hidden all (default: CURVATURE.md §5.4's for the MLP/CNN)")
    parser.add_argument("--rhos", nargs="+", type=float, default=list(DEFAULT_RHOS), metavar="RHO",
                        help="curvature mass kept, each in (0, 1] (default: 1.0 .99 .98 .95 .90 .85 .80 .75 .70 .60 .50 .40 .30)")
    parser.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS),
                        choices=[name for name, r in REPAIRS.items() if r.uses_rho], metavar="METHOD",
                        help=f"repairs swept over layer sets and rho (default: {' '.join(DEFAULT_METHODS)}; also: "
                             + ", ".join(n for n, r in REPAIRS.items() if r.uses_rho and n not in DEFAULT_METHODS) + ")")
    parser.add_argument("--references", nargs="*", default=list(REFERENCES), choices=list(REFERENCES),
                        metavar="REF", help="reference rows: none (unedited), velpic, velpic_bias (default: all)")
    parser.add_argument("--fisher", choices=FISHER_KINDS, default="true",
                        help="labels in the gradient factor G: the exact true Fisher (default), the empirical "
                             "Fisher on the corrupted labels, or labels sampled from the model")
    parser.add_argument("--samples", type=int, default=1, help="labels drawn per example with --fisher sampled")
    parser.add_argument("--bias", choices=["keep", "homogeneous"], default="keep",
                        help="keep biases (default, as the paper) or edit [W b] in homogeneous coordinates")
    parser.add_argument("--gram-dtype", choices=["float64", "float32"], default="float64",
                        help="precision of the factor products (blocks of rows); sums over blocks are float64 "
                             "either way (float32: faster, ~1e-6 relative)")
    parser.add_argument("--factor-subset", type=int, default=None, metavar="N",
                        help="compute the factors from N training inputs drawn with --seed (default: all)")
    parser.add_argument("--bands", action="store_true",
                        help="also write OUT.bands.csv: per edited layer and band of K-FAC components (top 10 %%, "
                             "10-25 %%, 25-50 %%, bottom 50 %% by curvature), mean |W_band a| on training inputs "
                             "whose label was changed over that on unchanged ones (Merullo et al. §4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random control, sampled Fisher and subset")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (factors and evaluation)")
    parser.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--config-json", default=None, help="workflow configuration slice, recorded in the provenance")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def load_repair_inputs(checkpoint, labels, prepared=None, data_root=None, device="cpu"):
    """Model, meta and ``RepairData`` of a checkpoint, after checking that the pieces belong together."""
    import numpy as np

    from latentgen.curvature import RepairData
    from latentgen.datasets import load_dataset
    from latentgen.labels import read_label_file
    from latentgen.training import labels_digest, load_checkpoint

    model, meta = load_checkpoint(checkpoint, device=device)
    lf = read_label_file(labels)
    dataset = meta["dataset"]
    if lf.dataset and lf.dataset != dataset:
        raise ValueError(f"label file {labels} is for dataset {lf.dataset!r}, the checkpoint for {dataset!r}")
    if lf.num_classes != int(meta["num_classes"]):
        raise ValueError(f"label file {labels} has {lf.num_classes} classes, the checkpoint {meta['num_classes']}")
    if meta.get("labels_sha256") and labels_digest(lf.corrupted) != meta["labels_sha256"]:
        raise ValueError(f"label file {labels} is not the one checkpoint {checkpoint} was trained on "
                         "(sha256 of the corrupted labels differs)")
    if meta.get("corruption") is not None and abs(float(meta["corruption"]) - lf.degree) > 1e-9:
        raise ValueError(f"label file {labels} has corruption {lf.degree}, the checkpoint {meta['corruption']}")
    data = load_dataset(dataset, data_root=data_root, prepared=prepared)
    if len(lf.true) != len(data.train_y) or not np.array_equal(lf.true, data.train_y.numpy()):
        raise ValueError(f"label file {labels} does not match the {dataset} training labels")
    n = meta.get("train_subset") or len(data.train_y)  # the images the model was trained on
    return model, meta, RepairData(data.train_x[:n], lf.true[:n], lf.corrupted[:n], data.test_x, data.test_y)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from latentgen._io import atomic_path
    from latentgen.curvature import (METRICS, band_activation_ratios, check_rho, default_layer_sets,
                                     expand_layer_set, layers_in_sets, repair_sweep, sweep_factors)
    from latentgen.devices import resolve_device
    from latentgen.provenance import build_record, write_sidecar

    out = Path(args.out)
    if out.suffix != ".csv":
        raise ValueError(f"--out must name a .csv file, got {out}")
    for path, what in ((args.checkpoint, "checkpoint"), (args.labels, "label file"), (args.prepared, "prepared dataset")):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
    rhos = [check_rho(r) for r in args.rhos]
    if args.layer_sets is not None and not [s for s in args.layer_sets if s.strip()]:
        raise ValueError("empty layer set: --layer-sets needs at least one set such as fc1+fc4")
    if args.factor_subset is not None and args.factor_subset < 1:
        raise ValueError(f"--factor-subset must be >= 1, got {args.factor_subset}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    from latentgen.training import load_checkpoint

    model, _ = load_checkpoint(args.checkpoint, device="cpu")  # cheap: check the layer sets before any data
    layer_sets = args.layer_sets if args.layer_sets is not None else default_layer_sets(model)
    for text in layer_sets:
        expand_layer_set(model, text)

    model, meta, data = load_repair_inputs(args.checkpoint, args.labels, args.prepared, args.data_root, device)
    factor_rows = None
    if args.factor_subset is not None and args.factor_subset < len(data.train_x):
        factor_rows = np.sort(np.random.RandomState(args.seed).choice(len(data.train_x), args.factor_subset,
                                                                      replace=False))
    say = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    factors = band_rows = None
    if args.bands:  # the sweep's own factors, computed here so the bands use them too
        edited_layers = layers_in_sets(model, layer_sets)
        factors = sweep_factors(model, data, edited_layers, fisher=args.fisher, samples=args.samples, seed=args.seed,
                                factor_rows=factor_rows, device=device, gram_dtype=getattr(torch, args.gram_dtype))
        band_rows = [row for name in edited_layers for row in
                     band_activation_ratios(model, name, factors[name], data.train_x, data.changed,
                                            batch_size=args.batch_size)]
    rows, layer_rows = repair_sweep(model, data, layer_sets=layer_sets, rhos=rhos, methods=args.methods,
                                    references=args.references, factors=factors, fisher=args.fisher,
                                    samples=args.samples, bias=args.bias, seed=args.seed, factor_rows=factor_rows,
                                    gram_dtype=getattr(torch, args.gram_dtype),
                                    batch_size=args.batch_size, device=device, progress=say)
    ident = {"model": meta["arch"], "dataset": meta["dataset"], "corruption": float(meta.get("corruption", float("nan"))),
             "run": int(meta.get("run", 0)), "epoch": int(meta["epoch"])}
    table = pd.DataFrame([{**ident, **row} for row in rows])
    first = [*ident, "repair", "layer_set", "layers", "rho", "fisher", "bias", "pairs_kept", "pairs_total",
             "fraction_kept", "rho_reached", "rel_change", "dead_before", "dead_after", "revived", "killed", *METRICS]
    table = table.reindex(columns=first + [c for c in table.columns if c not in first])
    for column in ("pairs_kept", "pairs_total", "dead_before", "dead_after", "revived", "killed"):
        table[column] = table[column].astype("Int64")  # counts; empty where they do not apply
    layers_table = pd.DataFrame([{**ident, **row} for row in layer_rows])
    layers_out = out.with_name(out.stem + ".layers.csv")
    with atomic_path(layers_out) as tmp:
        layers_table.to_csv(tmp, index=False)
    outputs = [out, layers_out]
    if band_rows is not None:
        bands_out = out.with_name(out.stem + ".bands.csv")
        with atomic_path(bands_out) as tmp:
            pd.DataFrame([{**ident, **row} for row in band_rows]).to_csv(tmp, index=False)
        outputs.append(bands_out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    config = {"checkpoint_meta": {k: meta.get(k) for k in ("arch", "dataset", "corruption", "run", "epoch",
                                                           "config_hash", "labels_sha256")},
              "layer_sets": list(layer_sets), "rhos": rhos, "methods": list(args.methods),
              "references": list(args.references), "fisher": args.fisher, "samples": args.samples,
              "bias": args.bias, "factor_subset": args.factor_subset, "gram_dtype": args.gram_dtype,
              "train_examples": len(data.train_x), "changed_examples": int(data.changed.sum()), "device": str(device),
              "workflow": json.loads(args.config_json) if args.config_json else None}
    inputs = [p for p in (args.checkpoint, args.labels, args.prepared) if p is not None]
    write_sidecar(out, build_record(inputs=inputs, outputs=outputs, config=config,
                                    seeds={"repair": args.seed}))
    say(f"{len(table)} repaired models -> {out}")
    return 0
