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


def load_sources(args: argparse.Namespace):
    """(model, train, test, classes, labels) as the options name them."""
    from latentgen.devices import set_threads
    from latentgen.external.sources import dataset_labels, load_data, read_labels
    from latentgen.models.external import build_model

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
