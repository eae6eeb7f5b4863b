"""The options of `latentgen probe-model` (its command: ``latentgen.commands.probe_model``)."""

from __future__ import annotations

import argparse

from latentgen import argtypes
from latentgen.options.probe import families


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--model, --weights, --data, --data-root, --resize, --normalize, --labels, --device (both commands)."""
    parser.add_argument("--model", required=True, help="torchvision:NAME, timm:NAME or path/to/file.py:factory")
    parser.add_argument("--weights", help="a plain state dict (.pt) to load into the model (weights_only)")
    parser.add_argument("--data", required=True, help="imagefolder:PATH (PATH/train, PATH/test) or torchvision:NAME")
    parser.add_argument("--data-root", help="where torchvision:NAME datasets are (default data)")
    parser.add_argument("--resize", type=argtypes.positive_int, help="resize images to N×N pixels")
    parser.add_argument("--normalize", choices=("none", "imagenet"), default="none",
                        help="normalise the images (default none: ToTensor's [0, 1])")
    parser.add_argument("--labels", help="the training labels the model was trained on (.npy or .csv; default the "
                                         "dataset's own)")
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=256, help="images per forward pass")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = CUDA when available")
    parser.add_argument("--threads", type=argtypes.positive_int, help="CPU threads for torch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_source(parser)
    parser.add_argument("--true-labels", help="the true training labels, if known (.npy or .csv): train_true rows "
                                              "and --fit-labels true")
    parser.add_argument("--layers", help="comma-separated layer names (module names; NAME:input; input)")
    parser.add_argument("--list-layers", action="store_true", help="print the model's layer names and exit")
    parser.add_argument("--families", type=families, nargs="+", metavar="NAME[,NAME...]", default=None,
                        help="probe families (default masc,velpic)")
    parser.add_argument("--fit-labels", default="corrupted", help="corrupted, or corrupted,true (needs --true-labels)")
    parser.add_argument("--out", help="tidy CSV to write")
    parser.add_argument("--figure", help="also draw the test accuracy per layer to this PDF")
