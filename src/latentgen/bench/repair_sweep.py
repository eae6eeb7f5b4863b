"""The repair sweep of an MNIST model: its features computed once and the head run per edit, vs whole passes.

Data: the first ``--n-train`` real MNIST training images (labels corrupted at ``--corruption``
with the authors' seed) and the first ``--n-test`` test images (``--data-root``, default
``../shared/data``; defaults 2,000 and 1,000: the reference then takes minutes on 2 cores),
through the paper's ``--arch`` (``cnn``, default, or ``mlp``) randomly initialised with ``--seed``
or loaded from ``--checkpoint``.

Ours (what ``latentgen repair`` runs): ``repair_sweep`` with the registry's default methods, layer
sets and ρ values (the paper's configuration), the training and test inputs' features computed
once (``latentgen.models.forward.FeatureBatches``) and each edited copy scored, and its VeLPIC
transfer fitted, from ``forward_head`` alone. Reference, in the same run: the same sweep with
whole forward passes (``cache_features=False``), as before. Both use the same K-FAC factors,
computed once before either is timed, after an untimed sweep at one ρ. Agreement: every row and
every layer row equal (``rows_identical``); ``features_used``: whether the model's features could
stand in for its inputs (else both sweeps are whole passes).
"""

from __future__ import annotations

import time
from pathlib import Path

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def add_arguments(parser) -> None:
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="folder holding MNIST/raw")
    parser.add_argument("--arch", default="cnn", choices=("cnn", "mlp"), help="the paper's CNN (default) or MLP")
    parser.add_argument("--checkpoint", default=None,
                        help="a trained checkpoint of --arch on MNIST instead of a random init")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    parser.add_argument("--corruption", type=float, default=0.6, help="label corruption (default 0.6)")
    parser.add_argument("--n-train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--n-test", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--rhos", type=float, nargs="+", default=None,
                        help="curvature masses kept (default: the registry's 13, as latentgen repair)")
    parser.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size (default 1024, as repair)")


def run(args) -> dict:
    import pandas as pd
    import torch

    from latentgen.data.datasets import load_dataset
    from latentgen.data.labels import corrupt_labels
    from latentgen.models import forward
    from latentgen.models.architectures import build_model
    from latentgen.repair.evaluation import RepairData
    from latentgen.repair.layers import default_layer_sets, layers_in_sets
    from latentgen.repair.sweep import repair_sweep, sweep_factors
    from latentgen.training.checkpoints import load_checkpoint

    root = Path(args.data_root)
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        raise FileNotFoundError(f"MNIST not found under {root} (expected {root}/MNIST/raw/train-images-idx3-ubyte)")
    if args.n_train < 1 or args.n_test < 1:
        raise ValueError("--n-train and --n-test must be positive")
    data = load_dataset("mnist", data_root=root)
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint, device="cpu")
        if meta.get("arch") != args.arch or meta.get("dataset") != "mnist":
            raise ValueError(f"{args.checkpoint} is {meta.get('arch')} on {meta.get('dataset')}, "
                             f"not {args.arch} on mnist")
    else:
        model = build_model(args.arch, "mnist", seed=args.seed)
    model.eval()
    true = data.train_y[:args.n_train].numpy()
    corrupted = corrupt_labels(true, args.corruption, 10, seed=42)
    repair_data = RepairData(data.train_x[:args.n_train], true, corrupted, data.test_x[:args.n_test],
                             data.test_y[:args.n_test])
    layer_sets = default_layer_sets(model)
    rhos = {} if args.rhos is None else {"rhos": args.rhos}
    factors = sweep_factors(model, repair_data, layers_in_sets(model, layer_sets))

    # an untimed sweep at one rho first: the first sweep of a process pays for its allocations and
    # thread pools (the MLP's measured 1.3x slower when timed first)
    repair_sweep(model, repair_data, factors=factors, batch_size=args.batch_size, rhos=(args.rhos or [0.9])[:1])

    def sweep(cache_features):
        start = time.perf_counter()
        rows, layer_rows = repair_sweep(model, repair_data, factors=factors, batch_size=args.batch_size,
                                        cache_features=cache_features, **rhos)
        return time.perf_counter() - start, pd.DataFrame(rows), pd.DataFrame(layer_rows)

    ours_s, ours_rows, ours_layers = sweep(True)
    reference_s, reference_rows, reference_layers = sweep(False)
    used = forward.FeatureBatches.of(model, repair_data.train_x, args.batch_size,
                                     list(forward.linear_layers(model))) is not None
    identical = ours_rows.equals(reference_rows) and ours_layers.equals(reference_layers)
    return {"arch": args.arch, "n_train": args.n_train, "n_test": args.n_test, "threads": torch.get_num_threads(),
            "models_scored": len(ours_rows), "features_used": used,
            "ours_seconds": ours_s, "reference_seconds": reference_s, "ratio": reference_s / ours_s,
            "rows_identical": bool(identical)}
