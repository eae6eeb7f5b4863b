"""Repair your own network by the VeLPIC weight transfer: a new state dict, the original untouched.

  latentgen repair-model --model torchvision:resnet18 --weights model.pt --data imagefolder:PATH \
      --labels noisy.csv --head fc --out repaired.pt

VeLPIC is fit on the input of --head (an nn.Linear whose outputs are the classes) over the
training images with the labels the model was trained on; its class vectors become the head's
weights (bias zeroed; --keep-bias keeps the trained one). --layer NAME checks that NAME's output
is exactly the head's input. Writes a plain state dict the same --model loads back (torchvision
and timm models included) and prints the test accuracy before and after.
"""

from __future__ import annotations

import argparse

from latentgen.commands.probe_model import load_sources


def run(args: argparse.Namespace) -> int:
    import torch

    from latentgen._io import atomic_path
    from latentgen.models.forward import accuracy
    from latentgen.external.api import transfer
    from latentgen.external.sources import dataset_labels, images

    model, train, test, classes, labels = load_sources(args)
    repaired = transfer(model, head=args.head, train=images(train, args.batch_size), labels=labels, layer=args.layer,
                        device=args.device, batch_size=args.batch_size, keep_bias=args.keep_bias)
    test_x, test_y = images(test, args.batch_size), torch.as_tensor(dataset_labels(test))
    before, after = accuracy(model, test_x, test_y, args.batch_size), accuracy(repaired, test_x, test_y, args.batch_size)
    with atomic_path(args.out) as tmp:
        torch.save({k: v.cpu() for k, v in repaired.state_dict().items()}, tmp)
    print(f"test accuracy {before:.4f} -> {after:.4f} after the VeLPIC transfer into {args.head!r}; -> {args.out}")
    return 0
