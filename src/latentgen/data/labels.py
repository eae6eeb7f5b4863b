"""Seeded label corruption, exactly as the authors' ``*Corrupted.corrupt_labels`` (SPEC §2).

With probability ``c`` a training label is replaced by one drawn uniformly from **all** K classes
(so it may stay the same): expected fraction unchanged ``1 − c + c/K``. The mask comes from one
uniform draw per example made before the replacements, so masks are nested across degrees for the
same seed. Only training labels are ever corrupted: nothing here is applied to test labels, and the
label file holds training labels only.

Noise beyond the authors' uniform shuffling (``noise``; users' noise is rarely uniform), with the
same seeded, nested mask: ``pair`` flips a masked label y to (y + 1) mod K (the pair-flip noise of
Han et al., 2018); ``matrix`` draws a masked label from row y of a K×K row-stochastic transition
matrix (``transition``). A label file of one's own may also be the corruption itself
(``latentgen corrupt --noise file --noise-file LABELS.npy``).

Label file (``.npz``, written atomically): ``true``, ``corrupted`` (int64), ``seed``, ``degree``,
``num_classes``, ``fraction_unchanged``, ``strict``, ``dataset``, ``noise`` and ``noise_sha256``
(of the transition matrix or the label file the noise came from; empty for uniform and pair).
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
NOISE_KINDS = ("uniform", "pair", "matrix", "file")


def _check_degree(degree) -> float:
    try:
        degree = float(degree)
    except (TypeError, ValueError):
        raise ValueError(f"corruption degree must be a number in [0, 1], got {degree!r}") from None
    if not 0.0 <= degree <= 1.0:  # also rejects NaN
        raise ValueError(f"corruption degree must be in [0, 1], got {degree}")
    return degree


def check_transition(transition, num_classes: int) -> np.ndarray:
    """``transition`` as a K×K float64 row-stochastic matrix; ValueError naming what is wrong."""
    T = np.asarray(transition, dtype=np.float64)
    if T.shape != (num_classes, num_classes):
        raise ValueError(f"the transition matrix must be {num_classes}×{num_classes}, got {T.shape}")
    if not np.isfinite(T).all() or (T < 0).any():
        raise ValueError("the transition matrix must hold finite probabilities >= 0")
    sums = T.sum(1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        row = int(np.argmax(np.abs(sums - 1)))
        raise ValueError(f"row {row} of the transition matrix sums to {sums[row]:.6g}, not 1")
    return T


def corrupt_labels(labels, degree: float, num_classes: int, seed: int = DEFAULT_SEED,
                   strict: bool = False, noise: str = "uniform", transition=None) -> np.ndarray:
    """Return a corrupted copy of ``labels`` (int64).

    ``np.random.RandomState(seed)``: ``mask = rand(n) <= degree`` (``<`` with ``strict=True``, as the
    authors' Tiny ImageNet code), then ``labels[mask] = choice(num_classes, mask.sum())`` (``uniform``,
    the authors'); ``pair``: ``(labels[mask] + 1) % num_classes``; ``matrix``: each masked label y
    drawn from row y of ``transition`` (one uniform draw per masked label, inverse CDF).
    """
    if noise not in ("uniform", "pair", "matrix"):
        raise ValueError(f"unknown noise {noise!r}; choose one of uniform, pair, matrix (file: a label file)")
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
    if noise == "uniform":
        corrupted[mask] = rng.choice(int(num_classes), int(mask.sum()))
    elif noise == "pair":
        corrupted[mask] = (corrupted[mask] + 1) % int(num_classes)
    else:
        if transition is None:
            raise ValueError("noise 'matrix' needs the transition matrix")
        cdf = np.cumsum(check_transition(transition, int(num_classes)), axis=1)
        u = rng.rand(int(mask.sum()))
        rows = cdf[corrupted[mask]]
        corrupted[mask] = np.minimum((u[:, None] >= rows).sum(1), int(num_classes) - 1)
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
    noise: str = "uniform"
    noise_sha256: str = ""


def write_label_file(path: str | os.PathLike, true, corrupted, seed: int, degree: float, num_classes: int,
                     strict: bool = False, dataset: str = "", noise: str = "uniform", noise_sha256: str = "") -> Path:
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
                     strict=np.bool_(strict), dataset=np.str_(dataset), noise=np.str_(noise),
                     noise_sha256=np.str_(noise_sha256))
    return path


def read_noise_file(path: str | os.PathLike) -> np.ndarray:
    """A transition matrix or a label array from ``.npy`` (or ``.csv``: comma-separated numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"noise file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".csv":  # a header row may name a 'label' column (the workflow's labels: files)
        with open(path) as fh:
            header = fh.readline().strip().split(",")
        named = any(c.isalpha() for c in "".join(header))
        column = {"usecols": header.index("label")} if named and "label" in header else {}
        values = np.loadtxt(path, delimiter=",", ndmin=1, skiprows=int(named), **column)
        whole = values.ndim == 1 and len(values) and np.all(values == np.round(values))
        return values.astype(np.int64) if whole else values
    raise ValueError(f"noise file {path}: expected .npy or .csv")


def corrupt_dataset(dataset: str, degree: float, out: str | os.PathLike, seed: int = DEFAULT_SEED,
                    data_root: str | os.PathLike | None = None, prepared: str | os.PathLike | None = None,
                    strict: bool | None = None, noise: str = "uniform",
                    noise_file: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``dataset``'s true training labels (from ``prepared`` or the raw files under
    ``data_root``) and write the label file ``out``; returns ``(true, corrupted)``.

    ``strict``: the mask ``rand < c`` instead of ``<= c``; ``None``: as the authors' code for
    that dataset (the registry's ``strict_corruption_mask``: only Tiny ImageNet). ``noise``: the
    kind (module docstring); ``noise_file``: the transition matrix (``matrix``) or the corrupted
    labels themselves (``file``: one per training image; the degree is then recorded as given).
    """
    from latentgen._io import sha256_file
    from latentgen import registry
    from latentgen.data.datasets import load_train_labels

    spec = registry.get_dataset(dataset)
    strict = spec.strict_corruption_mask if strict is None else bool(strict)
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    if (noise in ("matrix", "file")) != (noise_file is not None):
        raise ValueError(f"noise {noise!r} " + ("needs a noise file" if noise_file is None else "takes no noise file"))
    true = load_train_labels(dataset, data_root=data_root, prepared=prepared)
    extra = read_noise_file(noise_file) if noise_file is not None else None
    if noise == "file":
        corrupted = np.asarray(extra)
        if corrupted.shape != true.shape or not np.issubdtype(corrupted.dtype, np.integer):
            raise ValueError(f"noise file {noise_file}: expected {len(true)} integer labels, got {corrupted.dtype} "
                             f"{corrupted.shape}")
        if corrupted.min() < 0 or corrupted.max() >= spec.num_classes:
            raise ValueError(f"noise file {noise_file}: labels outside 0..{spec.num_classes - 1}")
        corrupted = corrupted.astype(np.int64)
    else:
        corrupted = corrupt_labels(true, degree, spec.num_classes, seed=seed, strict=strict, noise=noise,
                                   transition=extra)
    write_label_file(out, true, corrupted, seed=seed, degree=degree, num_classes=spec.num_classes, strict=strict,
                     dataset=dataset, noise=noise, noise_sha256=sha256_file(noise_file) if noise_file else "")
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
        dataset=str(values.get("dataset", "")), noise=str(values.get("noise", "uniform")),
        noise_sha256=str(values.get("noise_sha256", "")))
    if out.true.shape != out.corrupted.shape:
        raise ValueError(f"label file {path}: true and corrupted labels differ in length")
    return out
