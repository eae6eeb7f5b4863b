"""Where `latentgen probe-model` / `repair-model` get a network, images and labels from.

- model: ``torchvision:NAME`` (``torchvision.models.get_model(NAME, weights=None, num_classes=K)``),
  ``timm:NAME`` (``timm.create_model(NAME, pretrained=False, num_classes=K)``; the ``models``
  extra), or ``path/to/file.py:factory`` (a function of ``num_classes`` returning the module; the
  file is yours and is run). ``--weights FILE`` then loads a plain state dict
  (``latentgen.models.external.load_weights``: ``weights_only``, nothing in the file is executed).
- data: ``imagefolder:PATH`` (``PATH/train`` and ``PATH/test`` in torchvision's ImageFolder layout:
  one folder per class, the same classes in both) or ``torchvision:NAME`` (a torchvision dataset
  class already downloaded under ``--data-root``: ``MNIST``, ``CIFAR10``, ...).
- labels: ``.npy`` (one integer per training image, in the dataset's order) or ``.csv`` (a
  ``label`` column in that order, or ``path,label`` rows matched to the image files relative to
  ``PATH/train``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _transform(resize: int | None, normalize: str):
    import torchvision.transforms as T

    steps = ([T.Resize((resize, resize))] if resize else []) + [T.ToTensor()]
    if normalize == "imagenet":
        steps.append(T.Normalize(*IMAGENET))
    elif normalize != "none":
        raise ValueError(f"--normalize {normalize!r}: expected imagenet or none")
    return T.Compose(steps)


def load_data(spec: str, *, data_root: str | os.PathLike | None = None, resize: int | None = None,
              normalize: str = "none"):
    """``(train, test, classes)``: two torchvision datasets of ``(image tensor, label)`` and the class names."""
    import torchvision

    kind, sep, name = spec.partition(":")
    transform = _transform(resize, normalize)
    if kind == "imagefolder" and sep and name:
        root = Path(name)
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise FileNotFoundError(f"--data {spec!r}: {root / split} not found (ImageFolder layout: "
                                        "PATH/train/CLASS/*.png and PATH/test/CLASS/*.png)")
        train = torchvision.datasets.ImageFolder(root / "train", transform=transform)
        test = torchvision.datasets.ImageFolder(root / "test", transform=transform)
        if train.classes != test.classes:
            missing = sorted(set(train.classes) - set(test.classes)) or sorted(set(test.classes) - set(train.classes))
            raise ValueError(f"--data {spec!r}: class {missing[0]!r} is in one split only (train and test must have the "
                             "same class folders)")
        return train, test, list(train.classes)
    if kind == "torchvision" and sep and name:
        cls = getattr(torchvision.datasets, name, None)
        if cls is None:
            raise ValueError(f"torchvision has no dataset {name!r}")
        root = data_root or "data"
        try:
            train, test = cls(root, train=True, transform=transform), cls(root, train=False, transform=transform)
        except RuntimeError as exc:  # not downloaded
            raise FileNotFoundError(f"--data {spec!r} under {root}: {str(exc).splitlines()[0]}") from None
        return train, test, list(getattr(train, "classes", range(int(max(train.targets)) + 1)))
    raise ValueError(f"--data {spec!r}: expected imagefolder:PATH or torchvision:NAME")


def dataset_labels(dataset) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError("the dataset does not list its labels (targets)")
    return np.asarray(targets, dtype=np.int64)


def read_labels(path: str | os.PathLike, dataset, num_classes: int, what: str = "--labels") -> np.ndarray:
    """One integer label per training image of ``dataset`` from ``path`` (module docstring); checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    n = len(dataset)
    if path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "label" not in rows[0]:
            raise ValueError(f"{what} {path}: expected a header with a 'label' column (and optionally 'path')")
        if "path" in rows[0]:
            root = Path(getattr(dataset, "root", ""))
            index = {str(Path(p).relative_to(root)): i for i, (p, _) in enumerate(getattr(dataset, "samples", []))}
            labels = np.full(n, -1, dtype=np.int64)
            for row in rows:
                if row["path"] not in index:
                    raise ValueError(f"{what} {path}: no training image {row['path']!r} under {root}")
                labels[index[row["path"]]] = int(row["label"])
            if (labels < 0).any():
                raise ValueError(f"{what} {path}: no label for {int((labels < 0).sum())} training images")
        else:
            labels = np.array([int(row["label"]) for row in rows])
    else:
        raise ValueError(f"{what} {path}: expected a .npy or .csv file")
    from latentgen.external.api import check_labels

    return check_labels(labels, n, num_classes, f"{what} {path}", "training images")


def images(dataset, batch_size: int = 256) -> torch.Tensor:
    """Every image of ``dataset`` as one tensor, in order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return torch.cat([x for x, _ in loader]) if len(dataset) else torch.zeros(0)
