"""An image folder as a latentgen dataset (``dataset: imagefolder:PATH`` in the workflow).

``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` in torchvision's ImageFolder layout: classes are
the folder names, sorted (the same in both splits), images in ImageFolder's order (a sorted walk,
the extensions ImageFolder reads). :func:`folder_listing` reads only the names (torch- and
PIL-free: the configuration check counts classes and images with it); :func:`folder_files` gives
the ``DatasetFiles`` that read the images for ``latentgen download``, which writes them, resized
to the dataset's ``image_size`` (PIL, bilinear) and as RGB uint8, into the prepared ``.npz`` every
other job reads — as for a built-in dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as ImageFolder
SPLITS = ("train", "test")


def folder_classes(root: str | os.PathLike) -> list[str]:
    """The class names of ``root/train`` and ``root/test`` (the same in both); ValueError / FileNotFoundError
    in one line otherwise."""
    root = Path(root)
    found = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root / split} is not a folder (ImageFolder layout: PATH/train/CLASS/*.png and "
                                    "PATH/test/CLASS/*.png)")
        found[split] = sorted(e.name for e in os.scandir(root / split) if e.is_dir())
    if found["train"] != found["test"]:
        only = sorted(set(found["train"]) - set(found["test"]))
        where = "train" if only else "test"
        only = only or sorted(set(found["test"]) - set(found["train"]))
        raise ValueError(f"class {only[0]!r} is in {root / where} only (train and test need the same class folders)")
    if len(found["train"]) < 2:
        raise ValueError(f"{root / 'train'} has {len(found['train'])} class folder(s); at least 2 are needed")
    return found["train"]


def folder_samples(directory: str | os.PathLike, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, class index) in ImageFolder's order: classes sorted, then a sorted walk of each."""
    samples = []
    for index, cls in enumerate(classes):
        for dirpath, _, filenames in sorted(os.walk(Path(directory) / cls, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(dirpath) / filename, index))
    return samples


def folder_listing(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """``(classes, {split: samples})``; a split without images is a one-line ValueError."""
    classes = folder_classes(root)
    samples = {split: folder_samples(Path(root) / split, classes) for split in SPLITS}
    for split, rows in samples.items():
        if not rows:
            raise ValueError(f"{Path(root) / split} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, samples


def read_images(samples, size: int):
    """``(x uint8 N×3×size×size, y int64)`` of ``samples``, each converted to RGB and resized."""
    import numpy as np
    from PIL import Image

    x = np.empty((len(samples), 3, size, size), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            x[i] = np.asarray(img).transpose(2, 0, 1)
    return x, np.array([label for _, label in samples], dtype=np.int64)


def folder_path(info) -> Path:
    """The folder of an external dataset entry (``source`` is ``imagefolder:PATH``)."""
    from latentgen.config_entries import IMAGEFOLDER

    if not info.source.startswith(IMAGEFOLDER):
        raise ValueError(f"dataset {info.name!r} is not an image folder (source {info.source!r})")
    return Path(info.source[len(IMAGEFOLDER):])


def folder_files(info):
    """The ``DatasetFiles`` of the external dataset ``info`` (its images at ``info.image_size``)."""
    from latentgen.data.raw_files import DatasetFiles, RawSplits

    root = folder_path(info)

    def load(_root, _download) -> RawSplits:
        classes, samples = folder_listing(root)
        if len(classes) != info.num_classes:
            raise ValueError(f"{root} now has {len(classes)} classes, the configuration saw {info.num_classes}")
        train, test = (read_images(samples[s], info.image_size) for s in SPLITS)
        return RawSplits(train[0], train[1], test[0], test[1])

    return DatasetFiles(load, lambda _root: [root / s for s in SPLITS])
