"""Corrupt a dataset's training labels with a seed and write the label file (.npz).

Each training label is replaced, with probability --corruption, by a class drawn uniformly from
all K classes (it may stay the same); the draws come from numpy RandomState(--seed), so the masks
are nested across degrees. Test labels are never corrupted. The file holds true, corrupted, seed,
degree, num_classes and fraction_unchanged.
"""

from __future__ import annotations

import argparse

from latentgen.datasets import DATASETS
from latentgen.labels import DEFAULT_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset name")
    parser.add_argument("--corruption", required=True, type=float, help="degree c in [0, 1]")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"numpy seed (default {DEFAULT_SEED}, as the authors)")
    parser.add_argument("--out", required=True, help="label file to write (.npz)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-root", help="folder with the raw files")
    source.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")
    parser.add_argument("--strict-mask", choices=["auto", "yes", "no"], default="auto",
                        help="mask rand < c instead of <= c; auto = as the authors' code (only Tiny ImageNet)")


def run(args: argparse.Namespace) -> int:
    from latentgen.datasets import get_spec, load_train_labels
    from latentgen.labels import corrupt_labels, write_label_file

    spec = get_spec(args.dataset)
    strict = spec.strict_corruption_mask if args.strict_mask == "auto" else args.strict_mask == "yes"
    true = load_train_labels(args.dataset, data_root=args.data_root, prepared=args.prepared)
    corrupted = corrupt_labels(true, args.corruption, spec.num_classes, seed=args.seed, strict=strict)
    write_label_file(args.out, true, corrupted, seed=args.seed, degree=args.corruption,
                     num_classes=spec.num_classes, strict=strict, dataset=args.dataset)
    print(f"{args.dataset} c={args.corruption} seed={args.seed}: "
          f"{(true == corrupted).mean():.4f} of {len(true)} labels unchanged -> {args.out}")
    return 0
