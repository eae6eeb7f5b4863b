"""Probe your own network: MASC, VeLPIC (and other families) at the layers you name, on your images.

  latentgen probe-model --model torchvision:resnet18 --weights model.pt --data imagefolder:PATH \
      --labels noisy.csv [--true-labels clean.csv] --layers layer3,layer4,fc:input --out rows.csv \
      [--figure rows.pdf]

--model torchvision:NAME | timm:NAME | path/to/file.py:factory (a function of num_classes);
--weights a plain state dict (nothing in it is executed). --data imagefolder:PATH (PATH/train and
PATH/test, one folder per class) or torchvision:NAME (under --data-root). --labels: the labels the
model was trained on (.npy, or .csv with a label column, or path,label rows); default the
folder's own. --list-layers prints the layer names. Writes the workflow's tidy CSV
(model,dataset,corruption,run,epoch,layer,probe,fit_labels,split,accuracy) and with --figure
the test accuracy per layer, the model's own test accuracy as a line.
"""

from __future__ import annotations

import argparse

from latentgen.options import types as argtypes
from latentgen.commands.probe import families


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


def load_sources(args: argparse.Namespace):
    """(model, train, test, classes, labels) as the options name them."""
    from latentgen.devices import set_threads
    from latentgen.external.sources import build_model, dataset_labels, load_data, read_labels

    set_threads(args.threads)
    train, test, classes = load_data(args.data, data_root=args.data_root, resize=args.resize, normalize=args.normalize)
    model = build_model(args.model, len(classes), args.weights)
    labels = dataset_labels(train) if args.labels is None else read_labels(args.labels, train, len(classes))
    return model, train, test, classes, labels


def run(args: argparse.Namespace) -> int:
    import torch

    from latentgen.external.api import probe, tappable_layers
    from latentgen.external.sources import dataset_labels, images, read_labels
    from latentgen.probing.checkpoint import write_probe_csv

    model, train, test, classes, labels = load_sources(args)
    if args.list_layers:
        print("\n".join(tappable_layers(model)))
        return 0
    if not args.layers or not args.out:
        raise ValueError("--layers and --out are needed (or --list-layers)")
    true = None if args.true_labels is None else read_labels(args.true_labels, train, len(classes), "--true-labels")
    names = [n for group in args.families for n in group] if args.families else ["masc", "velpic"]
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    test_x, test_y = images(test, args.batch_size), dataset_labels(test)
    rows = probe(model, layers, images(train, args.batch_size), test_x, labels=labels, true_labels=true,
                 test_labels=test_y, families=names, fit_labels=args.fit_labels.split(","), num_classes=len(classes),
                 device=args.device, name=args.model, dataset=args.data, batch_size=args.batch_size)
    write_probe_csv(rows, args.out)
    print(f"{len(rows)} rows -> {args.out}")
    if args.figure:
        from latentgen.models.forward import accuracy
        from latentgen.external.figure import plot_layers

        own = accuracy(model, test_x, torch.as_tensor(test_y), args.batch_size)
        plot_layers(rows, own, args.figure, title=f"{args.model} on {args.data}")
        print(f"figure -> {args.figure}")
    return 0
