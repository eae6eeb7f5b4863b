"""Draw a figure: the TMLR paper's Figures 1–14 from metrics CSVs, or a repair figure from repair tables.

Any figure of the outputs registry (``latentgen.paper.outputs``): fig1 … fig14 read --metrics,
fig_repair and fig_repair_epochs read --inputs (the tables of ``latentgen repair``; fig_repair also
writes --summary, repair_summary.csv). For Figures 1–14:
Columns are the model–dataset pairs found in --metrics (in the order given), rows the figure's
corruption degrees that the metrics contain. Writes the figure (--out; PDF, or PNG by suffix),
its source rows (--csv, tidy columns model,dataset,corruption,run,epoch,layer,probe,split,accuracy)
and a provenance sidecar (--out with .json).
"""

from __future__ import annotations

import argparse


def model_dataset(item: str) -> tuple[str, str]:
    """``MODEL:DATASET`` (an --own-final entry) → ``(model, dataset)``."""
    model, sep, dataset = item.partition(":")
    if not sep or not model or not dataset:
        raise ValueError(f"--own-final entry {item!r} is not MODEL:DATASET")
    return model, dataset


def run(args: argparse.Namespace) -> int:
    from latentgen.paper.outputs import kind
    from latentgen.provenance import parse_json

    config = parse_json(args.config_json, "--config-json")
    if kind(args.name) == "repair_figure":
        return _repair_figure(args, config)
    if not args.metrics or args.inputs or args.summary:
        raise ValueError(f"{args.name} is drawn from --metrics (not --inputs or --summary)")
    from latentgen.paper.figures import make_figure, read_metrics
    from latentgen.provenance import build_record, write_sidecar

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


def _repair_figure(args: argparse.Namespace, config) -> int:
    from pathlib import Path

    from latentgen.paper.repair_figures import make_repair_figure

    if not args.inputs or args.metrics:
        raise ValueError(f"{args.name} is drawn from --inputs (the tables of `latentgen repair`), not --metrics")
    if not args.csv:
        raise ValueError(f"{args.name} needs --csv (its data)")
    provenance = None if args.no_provenance else Path(args.out).with_suffix(".json")
    outputs = make_repair_figure(args.name, args.inputs, args.out, args.csv, summary=args.summary,
                                 provenance=provenance, config=config)
    print(f"{args.name}: {len(args.inputs)} repair tables -> {', '.join(map(str, outputs))}")
    return 0
