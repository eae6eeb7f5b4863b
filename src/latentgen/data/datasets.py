"""Datasets: raw loaders and the prepared ``.npz`` cache (their facts: ``latentgen.registry``).

Every dataset is loaded once into whole tensors, normalised as in the authors' code
(SPEC §1): ``ToTensor`` then ``Normalize(0.5, 0.5)`` for MNIST, Fashion-MNIST,
CIFAR-10 and CIFAR-100, ``ToTensor`` only for Tiny ImageNet. The arithmetic is the same
float32 arithmetic torchvision does per item (``x.float() / 255``, then ``(x - mean) / std``),
so the tensors are bitwise equal to the per-item pipeline, and training needs no transforms.

``digits`` (scikit-learn's embedded 8×8 digits, 1797 images) is the offline default: no
download, a fixed stratified split (``DIGITS_SPLIT_SEED``, ``DIGITS_TEST_FRACTION``), pixel
values 0..16 scaled to [0, 1] and then ``Normalize(0.5, 0.5)`` like the others.

Raw files live under a data root in the layout torchvision uses (``ROOT/MNIST/raw``,
``ROOT/FashionMNIST/raw``, ``ROOT/cifar-10-batches-py``, ``ROOT/cifar-100-python``,
``ROOT/tiny-imagenet-200``). When they are present no network is touched. When they are
absent: with ``download=False`` a ``FileNotFoundError`` names the files expected and where to
put them; with ``download=True`` they are downloaded (torchvision's checksums; Tiny ImageNet:
``TINY_IMAGENET_URL`` with ``TINY_IMAGENET_MD5``), and if that fails the same
``FileNotFoundError`` is raised. torchvision is imported only on that raw path: loading a
prepared ``.npz`` (``prepare_dataset``) needs neither torchvision nor the network.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from latentgen import registry
from latentgen._io import atomic_path

from latentgen.data.raw_files import DatasetFiles, RawSplits


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: the registry's facts (``spec.num_classes``, ``spec.mean``, ...,
    see ``latentgen.registry.Dataset``) with its raw-file handling (``load_raw``, ``expected_files``)."""

    info: registry.Dataset
    files: DatasetFiles

    def __getattr__(self, name):  # the registry's facts; only called for names not defined here
        if name in ("info", "files"):
            raise AttributeError(name)
        return getattr(self.info, name)

    @property
    def load_raw(self) -> Callable[[Path | None, bool], RawSplits]:
        return self.files.load_raw

    @property
    def expected_files(self) -> Callable[[Path], list[Path]]:
        return self.files.expected_files


@dataclass
class LoadedDataset:
    """Whole, normalised tensors: ``*_x`` float32 N×C×H×W, ``*_y`` int64 **true** labels."""

    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def spec(self) -> DatasetSpec:
        return get_spec(self.name)


# --------------------------------------------------------------------------------------------
# normalisation


def normalize(x: np.ndarray | torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """``ToTensor`` + ``Normalize`` on a whole N×C×H×W array, in torchvision's float32 order."""
    t = torch.as_tensor(x).to(torch.float32, copy=True)  # a copy: the in-place steps below never touch x
    t.div_(spec.scale)
    mean = torch.as_tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean).div_(std)


# --------------------------------------------------------------------------------------------
# public API


def get_spec(name: str) -> DatasetSpec:
    """The dataset ``name`` (built in or a configuration's) with its raw-file handling."""
    info = registry.get_dataset(name)
    if info.name in registry.DATASETS:
        return DatasetSpec(info, registry.load(info.files))
    from latentgen.data.imagefolder import folder_files  # an external dataset (latentgen.config_entries)

    return DatasetSpec(info, folder_files(info))


def load_raw(name: str, data_root: str | os.PathLike | None = None, download: bool = False) -> RawSplits:
    """The dataset as stored (uint8, or float32 for digits), from raw files under ``data_root``."""
    spec = get_spec(name)
    root = None
    if spec.needs_root:
        if data_root is None:
            raise ValueError(f"dataset {name!r} needs a data root (--data-root PATH) or a prepared .npz (--prepared)")
        root = Path(data_root).expanduser()
    raw = spec.load_raw(root, download)
    _check_raw(spec, raw, origin=str(root) if root else name)
    return raw


def load_dataset(name: str, data_root: str | os.PathLike | None = None,
                 prepared: str | os.PathLike | None = None, download: bool = False) -> LoadedDataset:
    """Load ``name`` as whole normalised tensors with true labels.

    ``prepared``: a ``.npz`` from ``prepare_dataset`` / ``latentgen download`` (fast; no torchvision).
    Otherwise the raw files under ``data_root`` (``digits`` needs none).
    """
    spec = get_spec(name)
    raw = read_prepared(prepared, name) if prepared is not None else load_raw(name, data_root, download)
    return LoadedDataset(
        name=name,
        num_classes=spec.num_classes,
        train_x=normalize(raw.train_x, spec),
        train_y=torch.from_numpy(np.asarray(raw.train_y, dtype=np.int64)),
        test_x=normalize(raw.test_x, spec),
        test_y=torch.from_numpy(np.asarray(raw.test_y, dtype=np.int64)),
    )


def load_train_labels(name: str, data_root: str | os.PathLike | None = None,
                      prepared: str | os.PathLike | None = None, download: bool = False) -> np.ndarray:
    """The true training labels (int64), reading only that array from a prepared file."""
    if prepared is None:
        return load_raw(name, data_root, download).train_y
    labels = np.asarray(_read_prepared_arrays(prepared, name, ["train_y"])["train_y"], dtype=np.int64)
    _check_labels(get_spec(name), labels, "train_y", str(prepared))
    return labels


def prepare_dataset(name: str, data_root: str | os.PathLike | None, out_npz: str | os.PathLike,
                    download: bool = True) -> Path:
    """Ensure the raw files (downloading if allowed) and write the prepared ``.npz`` atomically.

    Keys: ``train_x, test_x`` (uint8 N×C×H×W; float32 for digits), ``train_y, test_y`` (int64),
    ``mean, std, scale`` (x → (x/scale − mean)/std), ``dataset`` and ``num_classes``.
    """
    spec = get_spec(name)
    raw = load_raw(name, data_root, download)
    out_npz = Path(out_npz)
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez(fh, train_x=raw.train_x, train_y=raw.train_y, test_x=raw.test_x, test_y=raw.test_y,
                     mean=np.asarray(spec.mean, dtype=np.float64), std=np.asarray(spec.std, dtype=np.float64),
                     scale=np.float64(spec.scale), dataset=np.str_(name), num_classes=np.int64(spec.num_classes))
    return out_npz


def read_prepared(path: str | os.PathLike, name: str | None = None) -> RawSplits:
    """Read a prepared ``.npz`` and check it against the registry (and ``name`` if given)."""
    arrays = _read_prepared_arrays(path, name, list(PREPARED_KEYS))
    spec = get_spec(str(arrays["dataset"]))
    for key in ("mean", "std", "scale"):
        if not np.array_equal(np.asarray(arrays[key], dtype=np.float64), np.asarray(getattr(spec, key), dtype=np.float64)):
            raise ValueError(f"prepared file {path}: {key} = {arrays[key]} differs from {spec.name}'s {getattr(spec, key)}")
    raw = RawSplits(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"])
    _check_raw(spec, raw, origin=str(path))
    return raw


PREPARED_KEYS = ("train_x", "train_y", "test_x", "test_y", "mean", "std", "scale", "dataset")


def _read_prepared_arrays(path, name: str | None, keys: list[str]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset file not found: {path} (write it with `latentgen download`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            arrays = {key: np.asarray(npz[key]) for key in {*keys, "dataset"} & files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"prepared dataset file {path} is unreadable or truncated: {exc}") from None
    missing = sorted(set(PREPARED_KEYS) - files)
    if missing:
        raise ValueError(f"prepared dataset file {path} lacks {', '.join(missing)}")
    stored = str(arrays["dataset"])
    if name is not None and stored != name:
        raise ValueError(f"prepared dataset file {path} holds {stored!r}, not {name!r}")
    return arrays


def _check_raw(spec: DatasetSpec, raw: RawSplits, origin: str) -> None:
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.dtype not in (np.uint8, np.float32) or x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{spec.name} {split} images from {origin} are {x.dtype} {x.shape}, expected uint8 N×{shape}")
        if len(x) != len(y):
            raise ValueError(f"{spec.name} {split} from {origin}: {len(x)} images but {len(y)} labels")
        _check_labels(spec, y, f"{split} labels", origin)


def _check_labels(spec, y, what, origin):
    if y.ndim != 1 or (len(y) and (y.min() < 0 or y.max() >= spec.num_classes)):
        raise ValueError(f"{spec.name} {what} from {origin} are not class indices in [0, {spec.num_classes})")
