"""Draw one of the TMLR paper's Figures 1–14 from metrics CSVs, with its source data and provenance.

Columns are the model–dataset pairs found in --metrics (in the order given), rows the figure's
corruption degrees that the metrics contain. Writes the figure (--out; PDF, or PNG by suffix),
its source rows (--csv, tidy columns model,dataset,corruption,run,epoch,layer,probe,split,accuracy)
and a provenance sidecar (--out with .json).
"""

from __future__ import annotations

import argparse

from latentgen.options import types as argtypes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from latentgen.paper.figures import FIGURES, MODEL_EPOCH0

    parser.add_argument("--name", required=True, choices=list(FIGURES), help="figure (fig1 … fig14)")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics CSVs from `latentgen metrics`")
    parser.add_argument("--out", required=True, help="figure file to write (.pdf or .png)")
    parser.add_argument("--csv", default=None, help="source-data CSV to write")
    parser.add_argument("--corruptions", nargs="+", type=argtypes.unit_interval, default=None,
                        help="rows to plot (default: the figure's degrees present in the metrics)")
    parser.add_argument("--model-epoch0", choices=list(MODEL_EPOCH0), default="repeat",
                        help="model curve at epoch 0: repeat the epoch-1 value (authors' plot) or the measured value")
    parser.add_argument("--own-final", nargs="*", default=[], metavar="MODEL:DATASET",
                        help="models whose runs end at their own (probed) final epoch: keep each run's last "
                             "point when truncating runs to the shortest (the authors' Tiny ImageNet plots)")
    parser.add_argument("--config-json", default=None, help="the configuration (JSON), for provenance")
    parser.add_argument("--seeds", default=None, help="seeds used (JSON object), for provenance")
    parser.add_argument("--no-provenance", action="store_true", help="do not write the .json sidecar")


def model_dataset(item: str) -> tuple[str, str]:
    """``MODEL:DATASET`` (an --own-final entry) → ``(model, dataset)``."""
    model, sep, dataset = item.partition(":")
    if not sep or not model or not dataset:
        raise ValueError(f"--own-final entry {item!r} is not MODEL:DATASET")
    return model, dataset


def run(args: argparse.Namespace) -> int:
    from latentgen.paper.figures import make_figure, read_metrics
    from latentgen.provenance import build_record, parse_json, write_sidecar

    config = parse_json(args.config_json, "--config-json")
    seeds = parse_json(args.seeds, "--seeds")
    own_final = [model_dataset(item) for item in args.own_final]
    source = make_figure(args.name, read_metrics(args.metrics), args.out, csv=args.csv,
                         corruptions=args.corruptions, model_epoch0=args.model_epoch0, own_final=own_final)
    outputs = [args.out] + ([args.csv] if args.csv else [])
    if not args.no_provenance:
        record = build_record(inputs=args.metrics, outputs=outputs, config=config, seeds=seeds,
                              extra={"figure": args.name, "model_epoch0": args.model_epoch0})
        write_sidecar(args.out, record)
    print(f"{args.name}: {len(source)} source rows -> {', '.join(outputs)}")
    return 0
