"""Build one of the 2025 paper's tables (table_masc, table_baselines, table_relabel, table_sensitivity).

Writes OUT_PREFIX.csv (accuracies as fractions), OUT_PREFIX.tex (booktabs) and OUT_PREFIX.md
(accuracies in %, best layer in parentheses), the bar chart with --pdf (table_masc and
table_baselines), and a provenance sidecar OUT_PREFIX.json hashing every input and output.
A probe's best layer is the maximum over non-input layers of the mean over runs of the
final-epoch test accuracy (SPEC D14). See latentgen.paper.tables for the inputs each table needs.
"""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from latentgen.provenance import build_record, write_sidecar
    from latentgen.paper.tables import build_table, get_table
    from latentgen.paper.table_files import plot_table, write_table

    spec = get_table(args.name)
    if args.pdf and spec.figure is None:
        raise ValueError(f"{args.name} has no bar chart; drop --pdf")
    try:
        config = None if args.config_json is None else json.loads(args.config_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config-json is not valid JSON: {exc}") from None
    table = build_table(args.name, probes=args.probes, train_logs=args.train_logs, relabel=args.relabel)
    outputs = write_table(args.name, table, args.out_prefix)
    if args.pdf:
        plot_table(args.name, table, args.pdf)
        outputs.append(args.pdf)
    if not args.no_provenance:
        record = build_record(inputs=[*args.probes, *args.train_logs, *args.relabel], outputs=outputs, config=config,
                              extra={"table": args.name, "best_layer": "max over non-input layers of the mean "
                                                                      "over runs of the final-epoch test accuracy"})
        write_sidecar(outputs[0], record)
    print(f"{args.name}: {len(table)} rows -> {', '.join(outputs)}")
    return 0
