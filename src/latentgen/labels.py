"""Seeded label corruption, exactly as the authors' ``*Corrupted.corrupt_labels`` (SPEC §2).

With probability ``c`` a training label is replaced by one drawn uniformly from **all** K classes
(so it may stay the same): expected fraction unchanged ``1 − c + c/K``. The mask comes from one
uniform draw per example made before the replacements, so masks are nested across degrees for the
same seed. Only training labels are ever corrupted: nothing here is applied to test labels, and the
label file holds training labels only.

Label file (``.npz``, written atomically): ``true``, ``corrupted`` (int64), ``seed``, ``degree``,
``num_classes``, ``fraction_unchanged``, ``strict`` and ``dataset``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentgen import registry
from latentgen._io import atomic_path

DEFAULT_SEED = registry.LABEL_SEED  # the authors' np.random.seed(42)


def _check_degree(degree) -> float:
    try:
        degree = float(degree)
    except (TypeError, ValueError):
        raise ValueError(f"corruption degree must be a number in [0, 1], got {degree!r}") from None
    if not 0.0 <= degree <= 1.0:  # also rejects NaN
        raise ValueError(f"corruption degree must be in [0, 1], got {degree}")
    return degree


def corrupt_labels(labels, degree: float, num_classes: int, seed: int = DEFAULT_SEED,
                   strict: bool = False) -> np.ndarray:
    """Return a corrupted copy of ``labels`` (int64).

    ``np.random.RandomState(seed)``: ``mask = rand(n) <= degree`` (``<`` with ``strict=True``, as the
    authors' Tiny ImageNet code), then ``labels[mask] = choice(num_classes, mask.sum())``.
    """
    degree = _check_degree(degree)
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}]")
    rng = np.random.RandomState(seed)
    draws = rng.rand(len(labels))
    mask = draws < degree if strict else draws <= degree
    corrupted = labels.astype(np.int64, copy=True)
    corrupted[mask] = rng.choice(int(num_classes), int(mask.sum()))
    return corrupted


@dataclass
class LabelFile:
    true: np.ndarray
    corrupted: np.ndarray
    seed: int
    degree: float
    num_classes: int
    fraction_unchanged: float
    strict: bool = False
    dataset: str = ""


def write_label_file(path: str | os.PathLike, true, corrupted, seed: int, degree: float, num_classes: int,
                     strict: bool = False, dataset: str = "") -> Path:
    true = np.asarray(true, dtype=np.int64)
    corrupted = np.asarray(corrupted, dtype=np.int64)
    if true.shape != corrupted.shape or true.ndim != 1:
        raise ValueError(f"true and corrupted labels must be 1-D of equal length, got {true.shape} and {corrupted.shape}")
    fraction = float(np.mean(true == corrupted)) if len(true) else 1.0
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez(fh, true=true, corrupted=corrupted, seed=np.int64(seed), degree=np.float64(_check_degree(degree)),
                     num_classes=np.int64(num_classes), fraction_unchanged=np.float64(fraction),
                     strict=np.bool_(strict), dataset=np.str_(dataset))
    return path


def corrupt_dataset(dataset: str, degree: float, out: str | os.PathLike, seed: int = DEFAULT_SEED,
                    data_root: str | os.PathLike | None = None, prepared: str | os.PathLike | None = None,
                    strict: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``dataset``'s true training labels (from ``prepared`` or the raw files under
    ``data_root``) and write the label file ``out``; returns ``(true, corrupted)``.

    ``strict``: the mask ``rand < c`` instead of ``<= c``; ``None``: as the authors' code for
    that dataset (the registry's ``strict_corruption_mask``: only Tiny ImageNet).
    """
    from latentgen import registry
    from latentgen.datasets import load_train_labels

    spec = registry.get_dataset(dataset)
    strict = spec.strict_corruption_mask if strict is None else bool(strict)
    true = load_train_labels(dataset, data_root=data_root, prepared=prepared)
    corrupted = corrupt_labels(true, degree, spec.num_classes, seed=seed, strict=strict)
    write_label_file(out, true, corrupted, seed=seed, degree=degree, num_classes=spec.num_classes, strict=strict,
                     dataset=dataset)
    return true, corrupted


def read_label_file(path: str | os.PathLike) -> LabelFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path} (write it with `latentgen corrupt`)")
    required = ("true", "corrupted", "seed", "degree", "num_classes", "fraction_unchanged")
    try:
        with np.load(path, allow_pickle=False) as npz:
            values = {key: npz[key] for key in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"label file {path} is unreadable or truncated: {exc}") from None
    missing = [key for key in required if key not in values]
    if missing:
        raise ValueError(f"label file {path} lacks {', '.join(missing)}")
    out = LabelFile(
        true=np.asarray(values["true"], dtype=np.int64), corrupted=np.asarray(values["corrupted"], dtype=np.int64),
        seed=int(values["seed"]), degree=float(values["degree"]), num_classes=int(values["num_classes"]),
        fraction_unchanged=float(values["fraction_unchanged"]), strict=bool(values.get("strict", False)),
        dataset=str(values.get("dataset", "")))
    if out.true.shape != out.corrupted.shape:
        raise ValueError(f"label file {path}: true and corrupted labels differ in length")
    return out
