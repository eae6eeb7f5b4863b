"""Probe every needed checkpoint of one finished training run, activations held in memory.

For each checkpoint it loads the network on --device, runs the forward passes there and fits
the probe families on the activations in memory, one group of layers at a time within
--memory-budget (default: half the host's available memory); no activation file is written
unless --keep-activations DIR asks for today's HDF5 file per checkpoint (an export). It writes:

  --out        the tracked checkpoints' rows (--checkpoints grid: the saved checkpoints on the
               run's grid, plus the final one with --probe-final; final: none, header only)
  --final-out  the final checkpoint's rows; the final checkpoint is probed with --final-families,
               --final-fit-labels and --final-extra-labels when given (the 2025 paper's) instead
               of --families, --fit-labels and --extra-labels

Each checkpoint's rows are the bytes `latentgen activations` + `latentgen probe` give for it
(columns model,dataset,corruption,run,epoch,layer,probe,fit_labels,split,accuracy). Interrupted?
Run it again: checkpoints already probed (kept under --parts, default OUT without .csv) are
not probed again. The input layer's rows (the images themselves) are fit once and reused, across
runs too with --input-cache DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentgen import registry


def _settings(args: argparse.Namespace, prefix: str):
    from latentgen.probing.run import ProbeSettings

    def joined(value):
        return None if not value else tuple(name for group in value for name in group)

    names = joined(getattr(args, f"{prefix}families"))
    if names is not None and args.no_transfer:
        names = tuple(n for n in names if not registry.PROBE_FAMILIES[n].needs_checkpoint)
        if not names:
            raise ValueError("--no-transfer leaves no probe family to run")
    elif names is None and args.no_transfer and not prefix:
        names = tuple(n for n, f in registry.PROBE_FAMILIES.items() if f.default and not f.needs_checkpoint)
    extra: dict[float, str] = {}
    for degree, path in getattr(args, f"{prefix}extra_labels") or ():
        if degree in extra:
            raise ValueError(f"--{prefix}extra-labels names degree {degree!r} twice")
        extra[degree] = path
    return ProbeSettings(names, joined(getattr(args, f"{prefix}fit_labels")), tuple(sorted(extra.items())))


def run(args: argparse.Namespace) -> int:
    import logging

    from latentgen.devices import blas_threads, set_threads
    from latentgen.probing.run import InputRowCache, RunProbeJob, probe_run

    if not logging.getLogger().handlers:  # the families' warnings and NaN reasons, on stderr
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    layers = [name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None
    job = RunProbeJob(
        run_dir=Path(args.run_dir), out=out, final_out=Path(args.final_out),
        parts=Path(args.parts) if args.parts else out.with_suffix(""), checkpoints=args.checkpoints,
        probe_final=args.probe_final, every=_settings(args, ""), final=_settings(args, "final_"),
        probe_options=dict(variance=args.variance, sign=args.sign, batch_size=args.batch_size, seed=args.seed),
        activation_batch_size=args.activation_batch_size, layers=layers, batchnorm=args.batchnorm,
        memory_budget=args.memory_budget,
        keep_activations=Path(args.keep_activations) if args.keep_activations else None, compression=args.compression)
    set_threads(args.threads)
    with blas_threads(args.threads):  # the probes' CPU workers follow the BLAS threads
        probed = probe_run(job, data_root=args.data_root, prepared=args.prepared, labels=args.labels,
                           device=args.device, input_cache=InputRowCache(args.input_cache))
    print(f"{args.run_dir}: probed {len(probed)} checkpoint(s) -> {args.out}, {args.final_out}")
    return 0
