"""Concatenate tidy CSV tables (one header kept; files whose header differs are refused).

The workflow's per-run probe table is the concatenation of the run's per-checkpoint tables, in
the order given. Written atomically: an interrupted run leaves no partial OUT.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from latentgen._io import concatenate_csv

    lines = concatenate_csv(args.inputs, args.out)
    print(f"{len(args.inputs)} tables, {lines} rows -> {args.out}")
    return 0
