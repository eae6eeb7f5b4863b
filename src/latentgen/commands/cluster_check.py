"""Check, before submitting anything, that a SLURM cluster can run a Snakemake SLURM profile.

Run it on the login node you will run Snakemake from. It reads ``scontrol show config``,
``sinfo`` and your accounts, compares them with what the profile asks for (partitions,
account, GPUs, memory, time, job-status command) and asks ``sbatch --test-only`` whether
each kind of job would be accepted. Exit status 1 when something would make jobs fail,
pend forever or leave Snakemake waiting forever; 0 otherwise (warnings included).
"""

from __future__ import annotations

import argparse

from latentgen.workflow.cluster import FAIL, WARN, Slurm, check_cluster, load_profile


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    findings = check_cluster(profile, Slurm(timeout=args.timeout), submit_test=not args.no_submit_test)
    for finding in findings:
        print(finding)
    blocking = [f for f in findings if f.level == FAIL]
    warnings = [f for f in findings if f.level == WARN]
    if blocking:
        print(f"cluster-check: {len(blocking)} blocking problem(s); fix them before 'snakemake --profile "
              f"{args.profile}'")
        return 1
    print(f"cluster-check: ready ({len(warnings)} warning(s))")
    return 0
