"""Probe one checkpoint's activations: MASC and VeLPIC on every layer, and the VeLPIC transfer.

Reads an activations file (``latentgen activations``). For every layer, MASC (99 % subspaces)
and VeLPIC are fitted on the training activations with the corrupted labels (one decomposition
for both) and scored on the test set (true labels) and on the training set against the
corrupted and the true labels. The transfer is evaluated for real: the checkpoint recorded in
the file (or --checkpoint) is loaded, its head gets VeLPIC's class vectors of the last hidden
layer (bias zeroed: probe ``transfer``; trained bias kept, where the head has one:
``transfer_bias``) and the edited network, in eval mode, is run on the training and test
images. The images come from --data-root / --prepared, else from where the checkpoint
recorded its data.

Writes a tidy CSV (atomically): model,dataset,corruption,run,epoch,layer,probe,split,accuracy
with split test | train_corrupted | train_true and accuracy a fraction in [0, 1].
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from latentgen.devices import DEVICE_CHOICES

COLUMNS = ["model", "dataset", "corruption", "run", "epoch", "layer", "probe", "split", "accuracy"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activations", required=True, help="activations file (.h5) from `latentgen activations`")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--checkpoint", help="checkpoint for the transfer (default: the one recorded in the file)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data-root", help="folder with the raw dataset files (default: as the checkpoint recorded)")
    data.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")
    parser.add_argument("--variance", type=float, default=0.99, help="MASC variance threshold in (0, 1] (default 0.99)")
    parser.add_argument("--sign", choices=["all", "class"], default="all",
                        help="VeLPIC sign from the mean projection of all training rows (default, the authors' "
                             "code) or of the class's rows (the paper's wording)")
    parser.add_argument("--no-transfer", action="store_true", help="skip the weight transfer (no images needed)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per forward pass of the edited model")
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto", help="auto = CUDA when available")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def _accuracy(predicted, labels) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


def _network_predictions(model, x, batch_size: int, device) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(x[start:start + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def _load_images(meta: dict, n_train: int, labels_true: np.ndarray, data_root, prepared):
    from latentgen.datasets import load_dataset

    if data_root is None and prepared is None:  # where the checkpoint's run read its data
        recorded = meta.get("data") or {}
        if recorded.get("prepared") and Path(recorded["prepared"]).is_file():
            prepared = recorded["prepared"]
        else:
            data_root = recorded.get("data_root")
    data = load_dataset(meta["dataset"], data_root=data_root, prepared=prepared)
    if len(data.train_y) < n_train or not np.array_equal(data.train_y[:n_train].numpy(), labels_true):
        raise ValueError(f"the {meta['dataset']} images found do not match the activations file "
                         "(true training labels differ); pass the right --data-root or --prepared")
    return data.train_x[:n_train], data.test_x


def run(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from latentgen.commands.train import set_threads

    set_threads(args.threads)
    if args.threads is None:
        return _run(args)
    with threadpool_limits(args.threads, user_api="blas"):  # the probes' CPU workers follow BLAS threads
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from latentgen._io import atomic_path
    from latentgen.activations import open_activations
    from latentgen.devices import resolve_device
    from latentgen.probes import _check_variance, fit_probes

    _check_variance(args.variance)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)

    rows = []
    with open_activations(args.activations) as acts:
        meta = acts.meta
        checkpoint = None if args.no_transfer else Path(args.checkpoint or meta.get("checkpoint") or "")
        if checkpoint is not None and not checkpoint.is_file():  # fail before hours of probing
            raise FileNotFoundError(f"checkpoint for the transfer not found: {checkpoint} (pass --checkpoint, "
                                    "or --no-transfer)")
        key = [meta["model"], meta["dataset"], meta["corruption"], meta["run"], meta["epoch"]]
        labels = {"test": acts.labels("test"), "train_corrupted": acts.labels("train", "corrupted"),
                  "train_true": acts.labels("train", "true")}
        classes = np.arange(int(meta["num_classes"]))
        last_hidden = meta.get("last_hidden")
        if not args.no_transfer and last_hidden not in acts.layers:
            raise ValueError(f"the last hidden layer {last_hidden!r} is not in {args.activations}; "
                             "the transfer needs it (or pass --no-transfer)")
        transfer_velpic_probe = test_last_hidden = None
        for layer in acts.layers:
            train = acts.array("train", layer)
            masc, velpic = fit_probes(train, labels["train_corrupted"], variance=args.variance, sign=args.sign,
                                      classes=classes, device=device)
            test = acts.array("test", layer)
            for name, probe in (("masc", masc), ("velpic", velpic)):
                predicted = {"test": probe.predict(test), "train": probe.predict(train)}
                for split, y in labels.items():
                    rows.append([*key, layer, name, split, _accuracy(predicted[split.split("_")[0]], y)])
            if layer == last_hidden:
                transfer_velpic_probe, test_last_hidden = velpic, test
            del train, test

    if not args.no_transfer:
        rows += _transfer_rows(args, checkpoint, meta, key, labels, transfer_velpic_probe, test_last_hidden, device)

    with atomic_path(args.out) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    print(f"{args.activations}: {len(rows)} rows -> {args.out}")
    return 0


def _transfer_rows(args, checkpoint, meta, key, labels, velpic, test_hidden, device) -> list:
    from latentgen.training import load_checkpoint
    from latentgen.transfer import transfer_velpic

    model, ckpt_meta = load_checkpoint(checkpoint, device=device)
    for field in ("arch", "dataset", "epoch"):
        expected = meta["model" if field == "arch" else field]
        if ckpt_meta[field] != expected:
            raise ValueError(f"checkpoint {checkpoint} has {field} {ckpt_meta[field]!r} but the activations "
                             f"file has {expected!r}")
    train_x, test_x = _load_images(ckpt_meta, len(labels["train_true"]), labels["train_true"], args.data_root,
                                   args.prepared)
    head = meta.get("head") or model.head
    variants = [("transfer", False)]
    if model.get_submodule(head).bias is not None:
        variants.append(("transfer_bias", True))
    rows = []
    for name, keep_bias in variants:
        edited = transfer_velpic(model, head, velpic, keep_bias=keep_bias).eval()
        predicted = {"test": _network_predictions(edited, test_x, args.batch_size, device),
                     "train": _network_predictions(edited, train_x, args.batch_size, device)}
        for split, y in labels.items():
            rows.append([*key, meta["last_hidden"], name, split, _accuracy(predicted[split.split("_")[0]], y)])
        if not keep_bias:
            same = int(np.sum(predicted["test"] == velpic.predict(test_hidden)))
            print(f"transfer agrees with VeLPIC on {same}/{len(test_x)} test rows", file=sys.stderr)
    return rows
