"""Corrupt a dataset's training labels with a seed and write the label file (.npz).

Each training label is replaced, with probability --corruption, by a class drawn uniformly from
all K classes (it may stay the same); the draws come from numpy RandomState(--seed), so the masks
are nested across degrees. Test labels are never corrupted. The file holds true, corrupted, seed,
degree, num_classes and fraction_unchanged.
"""

from __future__ import annotations

import argparse

from latentgen.options.corrupt import STRICT_MASK


def run(args: argparse.Namespace) -> int:
    from latentgen.data.labels import corrupt_dataset

    true, corrupted = corrupt_dataset(args.dataset, args.corruption, args.out, seed=args.seed,
                                      data_root=args.data_root, prepared=args.prepared,
                                      strict=STRICT_MASK[args.strict_mask], noise=args.noise,
                                      noise_file=args.noise_file)
    print(f"{args.dataset} c={args.corruption} seed={args.seed} noise={args.noise}: "
          f"{(true == corrupted).mean():.4f} of {len(true)} labels unchanged -> {args.out}")
    return 0
