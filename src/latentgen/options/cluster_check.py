"""The options of `latentgen cluster-check` (its command: ``latentgen.commands.cluster_check``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="profiles/slurm",
                        help="Snakemake profile folder or its config.yaml (default: profiles/slurm)")
    parser.add_argument("--no-submit-test", action="store_true",
                        help="do not ask 'sbatch --test-only' (no job id is used up)")
    parser.add_argument("--timeout", type=float, default=30,
                        help="seconds to wait for each SLURM command (default: 30)")
