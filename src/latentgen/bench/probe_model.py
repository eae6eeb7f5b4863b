"""Probing your own model: ``latentgen.probe`` on a torchvision network against its forward passes alone.

A randomly initialised ``--model`` (default torchvision's ResNet-18) on CIFAR-10-sized images
(``--n-train`` + ``--n-test`` random 3×``--image-size``² images, ``--classes`` classes, labels
cycling through them: the cost does not depend on what the images show) is probed at ``--layers`` with MASC and
VeLPIC (``--families``). The reference, timed in the same run, is the floor of any probing: the
forward passes alone over the same images in eval mode at the same batch size, outputs discarded.
``ratio`` = probing / forward passes; on a GPU the issue's figure is the full size (``--n-train
50000 --n-test 10000 --device cuda``). Before timing, one small probe call warms the device up.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="torchvision:resnet18", help="torchvision:NAME or timm:NAME")
    parser.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "avgpool"],
                        help="layers to probe (default: ResNet-18's layer1, layer2, layer3, avgpool)")
    parser.add_argument("--families", default="masc,velpic", help="probe families, comma-separated")
    parser.add_argument("--n-train", type=int, default=2000, help="training images (the issue's: 50000)")
    parser.add_argument("--n-test", type=int, default=500, help="test images (the issue's: 10000)")
    parser.add_argument("--image-size", type=int, default=32, help="image side (CIFAR-10: 32)")
    parser.add_argument("--classes", type=int, default=10, help="classes (CIFAR-10: 10)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images, labels and weights")


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    import torch

    from latentgen.devices import resolve_device
    from latentgen.external.api import probe
    from latentgen.models.external import build_model

    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (3, args.image_size, args.image_size)
    train = torch.rand(args.n_train, *shape, generator=generator)
    test = torch.rand(args.n_test, *shape, generator=generator)
    # labels cycle through the classes (the images are random anyway), so every prefix of
    # `classes` rows holds each class once: the warm-up below needs every class in both splits
    labels = torch.arange(args.n_train).remainder(args.classes).numpy()
    test_labels = torch.arange(args.n_test).remainder(args.classes).numpy()
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.classes).to(device).eval()
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())

    def probe_all(n_train: int, n_test: int) -> list:
        return probe(model, args.layers, train[:n_train], test[:n_test], labels=labels[:n_train],
                     test_labels=test_labels[:n_test], families=families, num_classes=args.classes, device=device,
                     batch_size=args.batch_size)

    probe_all(min(args.n_train, 4 * args.classes), min(args.n_test, 2 * args.classes))  # warm-up: kernels, allocator
    _synchronize(device)
    begin = time.perf_counter()
    with torch.no_grad():
        for images in (train, test):
            for start in range(0, len(images), args.batch_size):
                model(images[start:start + args.batch_size].to(device, non_blocking=True))
    _synchronize(device)
    forward_s = time.perf_counter() - begin

    begin = time.perf_counter()
    rows = probe_all(args.n_train, args.n_test)
    _synchronize(device)
    probe_s = time.perf_counter() - begin
    return {"model": args.model, "device": str(device), "layers": len(args.layers), "families": ",".join(families),
            "n_train": args.n_train, "n_test": args.n_test, "rows": len(rows),
            "forward_seconds": forward_s, "probe_seconds": probe_s, "ratio": probe_s / forward_s}
