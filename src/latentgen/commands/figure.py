"""Draw one of the TMLR paper's Figures 1–14 from metrics CSVs, with its source data and provenance.

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
