"""The options of `latentgen repair-model` (its command: ``latentgen.commands.repair_model``)."""

from __future__ import annotations

import argparse

from latentgen.options.probe_model import add_model_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_source(parser)
    parser.add_argument("--head", required=True, help="module name of the pre-softmax nn.Linear (fc, head, classifier.6)")
    parser.add_argument("--layer", help="a module whose output should be the head's input (checked)")
    parser.add_argument("--keep-bias", action="store_true", help="keep the head's trained bias (default: zeroed)")
    parser.add_argument("--out", required=True, help="the repaired model's state dict (.pt)")
