"""The workflow's engine (no Snakemake import): the config check, the job plan, the cost estimate,
the SLURM preflight and the GPU slot pool."""
