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
from latentgen.options import types as argtypes
from latentgen.commands import add_data_source
from latentgen.commands.probe import extra_label_file, families, fit_label_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="finished training run folder (with manifest.json)")
    parser.add_argument("--out", required=True, help="tidy CSV of the tracked checkpoints")
    parser.add_argument("--final-out", required=True, help="tidy CSV of the final checkpoint")
    parser.add_argument("--parts", help="folder of the per-checkpoint tables while the job runs (default: OUT "
                                        "without .csv)")
    add_data_source(parser, "folder with the raw dataset files (default: as the checkpoints recorded)")
    parser.add_argument("--labels", help="the label file the run was trained with (checked against it)")
    parser.add_argument("--checkpoints", choices=("grid", "final"), default="grid",
                        help="grid: probe the saved checkpoints on the run's grid (default); final: the final one only")
    parser.add_argument("--probe-final", action="store_true",
                        help="the final checkpoint is also one of the tracked ones (in --out)")
    for prefix, when in (("", "every probed checkpoint"), ("final-", "the final checkpoint, instead")):
        parser.add_argument(f"--{prefix}families", type=families, nargs="+", metavar="NAME[,NAME...]", default=None,
                            help=f"probe families at {when} (default: {'--families' if prefix else 'the registry defaults'})")
        parser.add_argument(f"--{prefix}fit-labels", type=fit_label_sets, nargs="+", metavar="SET[,SET...]",
                            default=None, help=f"label sets every family is fit on at {when}")
        parser.add_argument(f"--{prefix}extra-labels", type=extra_label_file, nargs="+", metavar="C=LABELS.npz",
                            default=None, help=f"MASC and VeLPIC also fit on this label file's corrupted labels at {when}")
    parser.add_argument("--no-transfer", action="store_true",
                        help="skip the weight transfer (and every family that runs the network)")
    parser.add_argument("--seed", type=argtypes.integer, default=registry.LOGISTIC_SEED,
                        help=f"seed of the logistic-regression probe (default {registry.LOGISTIC_SEED})")
    parser.add_argument("--variance", type=argtypes.fraction, default=0.99, help="MASC variance threshold in (0, 1]")
    parser.add_argument("--sign", choices=list(registry.SIGN_MODES), default="all", help="VeLPIC's sign rule")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=1000,
                        help="images per forward pass of the edited model (the transfer)")
    parser.add_argument("--activation-batch-size", type=argtypes.positive_int, default=500,
                        help="images per forward pass for the activations (default 500, as `latentgen activations`)")
    parser.add_argument("--layers", help="comma-separated probe layers (default: all of the model's)")
    parser.add_argument("--batchnorm", choices=registry.BATCHNORM_MODES, default=None,
                        help="BatchNorm in eval mode or with per-image statistics (default: the architecture's own, "
                             "registry.activation_batchnorm: per_sample for ResNet-18 as the authors, D9)")
    parser.add_argument("--memory-budget", type=argtypes.byte_size, default=None, metavar="BYTES",
                        help="bytes of activations held at once in host memory, e.g. 8G (default: half the available memory)")
    parser.add_argument("--keep-activations", metavar="DIR",
                        help="also write each checkpoint's activations as DIR/epochE.h5 (today's file) and probe from it")
    parser.add_argument("--compression", choices=registry.ACTIVATION_COMPRESSIONS,
                        default=registry.ACTIVATION_COMPRESSIONS[0], help="HDF5 compression with --keep-activations")
    parser.add_argument("--input-cache", metavar="DIR", help="folder where input-layer rows are shared between jobs")
    parser.add_argument("--device", choices=list(registry.DEVICE_CHOICES), default="auto",
                        help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch (default: torch's choice)")


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
