"""The options of `latentgen figure` (its command: ``latentgen.commands.figure``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from latentgen.paper.figures import MODEL_EPOCH0
    from latentgen.paper.outputs import names

    parser.add_argument("--name", required=True, choices=names("figure", "repair_figure"),
                        help="figure: fig1 … fig14 (from --metrics), fig_repair, fig_repair_epochs (from --inputs)")
    parser.add_argument("--metrics", nargs="+", default=None, help="the TMLR figures: metrics CSVs from `latentgen metrics`")
    parser.add_argument("--inputs", nargs="+", default=None, help="the repair figures: tables from `latentgen repair`")
    parser.add_argument("--summary", default=None, help="fig_repair: the summary table to write (repair_summary.csv)")
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
