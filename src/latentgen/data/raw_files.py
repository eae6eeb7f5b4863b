"""The datasets' raw files: where each is found under a data root, how it is fetched (torchvision's
checksums; Tiny ImageNet's archive with its md5) and read into :class:`RawSplits`. Each registry
entry names its handling here (``registry.Dataset.files``: ``latentgen.data.raw_files:MNIST_RAW``);
``latentgen.data.datasets`` loads, normalises and prepares them."""


from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from latentgen import registry
from latentgen._io import atomic_path

# digits: fixed, seeded, stratified split (see _load_digits)
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# Tiny ImageNet: the official archive; module constants so tests (and mirrors) can override them
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_TRAIN_FILES = ("train",)
CIFAR100_TEST_FILES = ("test",)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as ImageFolder


@dataclass
class RawSplits:
    """Un-normalised data as stored: ``x`` uint8 (or float32 for digits) N×C×H×W, ``y`` int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class DatasetFiles:
    """How one dataset's raw files are found and read (named by ``registry.Dataset.files``)."""

    load_raw: Callable[[Path | None, bool], RawSplits]  # (data_root, download) -> RawSplits
    expected_files: Callable[[Path], list[Path]]  # what must exist under the data root


# --------------------------------------------------------------------------------------------
# helpers for raw files


def _missing_error(spec: registry.Dataset, root: Path, missing: list[Path], reason: str = "") -> FileNotFoundError:
    names = ", ".join(str(p) for p in missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
    hint = f"; {reason}" if reason else ""
    return FileNotFoundError(
        f"{spec.name} data not found under {root}: missing {names}{hint}. "
        f"Put the {spec.source} files there (same layout) or run `latentgen download --dataset {spec.name} "
        f"--data-root {root} --out FILE.npz` on a machine with internet access")


def _ensure_writable(root: Path) -> None:
    """Raise PermissionError naming ``root`` (or its first existing ancestor) if we cannot write there."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"data root {root} is not writable (checked {probe}); cannot download into it")


def _require_or_download(name: str, expected: Callable[[Path], list[Path]], root: Path, download: bool,
                         fetch: Callable[[], None]) -> None:
    spec = registry.get_dataset(name)
    missing = [p for p in expected(root) if not p.exists()]
    if not missing:
        return  # present: never touch the network
    if not download:
        raise _missing_error(spec, root, missing, "downloading is off")
    _ensure_writable(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except PermissionError as exc:
        raise PermissionError(f"data root {root} is not writable: {exc}") from exc
    except ValueError:  # our checks on what arrived (checksum, unsafe archive): the message says what
        raise
    except Exception as exc:  # no network, server errors, torchvision's failed mirrors ...
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # one line, all mirrors' causes
        raise _missing_error(spec, root, missing, f"download failed: {reason}") from exc
    missing = [p for p in expected(root) if not p.exists()]
    if missing:
        raise _missing_error(spec, root, missing, "still missing after the download")


def _safe_target(base: Path, member_name: str) -> Path:
    """Where ``member_name`` extracts to under ``base``; refuse paths that escape it."""
    target = (base / member_name).resolve()
    if os.path.isabs(member_name) or (target != base.resolve() and base.resolve() not in target.parents):
        raise ValueError(f"archive member {member_name!r} would be written outside {base}; refusing to extract")
    return target


def _safe_extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _safe_target(dest, member.name)
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"archive {archive} member {member.name!r} is a link or device; refusing to extract")
        tar.extractall(dest, members=members, filter="data")


def _safe_extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # check everything before writing anything
            _safe_target(dest, info.filename)
        for info in infos:
            target = _safe_target(dest, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_folder(archive: Path, root: Path, folder: str, extract: Callable[[Path, Path], None],
                    prepare: Callable[[Path], None] | None = None) -> None:
    """Extract ``archive`` into a scratch folder under ``root`` and rename its ``folder`` into place,
    so an interrupted extraction never leaves a half-written dataset that looks complete."""
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}."))
    try:
        extract(archive, scratch)
        if not (scratch / folder).is_dir():
            raise ValueError(f"{archive} has no top-level folder {folder}/; not the expected archive")
        if prepare is not None:
            prepare(scratch / folder)
        target = root / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch / folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None) -> Path:
    """Download ``url`` to ``dest`` (atomically), checking the md5 when given."""
    with atomic_path(dest) as tmp:
        request = urllib.request.Request(url, headers={"User-Agent": "latentgen"})
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as fh:
            shutil.copyfileobj(response, fh, 1 << 20)
        if md5 is not None and _md5(tmp) != md5:
            raise ValueError(f"checksum mismatch for {url}: md5 {_md5(tmp)}, expected {md5}")
    return dest


# --------------------------------------------------------------------------------------------
# digits (scikit-learn, embedded)


def digits_split(labels: np.ndarray, seed: int = DIGITS_SPLIT_SEED,
                 test_fraction: float = DIGITS_TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class (in class order) a seeded permutation; the first
    ``round(test_fraction · n_k)`` go to test. Both index lists are returned sorted, so each split
    keeps scikit-learn's order (the authors' loaders do not shuffle)."""
    rng = np.random.RandomState(seed)
    test = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        test.append(rng.permutation(members)[: int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _load_digits(root: Path | None, download: bool) -> RawSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None, :, :]  # 0..16, N×1×8×8
    y = digits.target.astype(np.int64)
    train, test = digits_split(y)
    return RawSplits(x[train], y[train], x[test], y[test])


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (torchvision's idx files)


def _mnist_family(name: str, folder: str, torchvision_class: str):
    def expected(root: Path) -> list[Path]:
        return [root / folder / "raw" / filename for filename in MNIST_FILES]

    def load(root: Path, download: bool) -> RawSplits:
        import torchvision.datasets as tvd

        cls = getattr(tvd, torchvision_class)
        _require_or_download(name, expected, root, download, lambda: cls(str(root), train=True, download=True))
        splits = []
        for train in (True, False):
            try:
                ds = cls(str(root), train=train, download=False)
            except Exception as exc:  # truncated or malformed idx file
                raise ValueError(f"{name} files under {root / folder / 'raw'} are unreadable: {exc}") from exc
            splits += [ds.data.numpy()[:, None, :, :], ds.targets.numpy().astype(np.int64)]
        return RawSplits(*splits)

    return expected, load


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts, lists, bytes and numpy arrays) and nothing else, so a
    tampered batch file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            entry = _ArrayUnpickler(fh, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"CIFAR batch file {path} is unreadable or truncated: {exc}") from None
    return data, labels


def _cifar_family(name: str, folder: str, train_files, test_files, label_key: str, tv_class: str):
    def expected(root: Path) -> list[Path]:
        return [root / folder / f for f in (*train_files, *test_files)]

    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_url

        cls = getattr(tvd, tv_class)
        download_url(cls.url, str(root), cls.filename, cls.tgz_md5)  # torchvision's md5 check
        _extract_folder(root / cls.filename, root, folder, _safe_extract_tar)

    def load(root: Path, download: bool) -> RawSplits:
        _require_or_download(name, expected, root, download, lambda: fetch(root))
        out = []
        for files in (train_files, test_files):
            parts = [_read_cifar_batch(root / folder / f, label_key) for f in files]
            out += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
        return RawSplits(*out)

    return expected, load


# --------------------------------------------------------------------------------------------
# Tiny ImageNet (official zip; the val split re-laid into per-class folders)


def _tiny_expected(root: Path) -> list[Path]:
    base = root / TINY_IMAGENET_FOLDER
    return [base / "wnids.txt", base / "train", base / "val"]


def relayout_tiny_imagenet_val(base: Path) -> None:
    """Move ``val/images/*.JPEG`` into ``val/<wnid>/images/`` using ``val_annotations.txt``, so that
    ``ImageFolder(val)`` sees the 200 classes. Safe to rerun after an interruption."""
    val = base / "val"
    images, annotations = val / "images", val / "val_annotations.txt"
    if not images.is_dir():
        return
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations} is missing; cannot sort {images} into class folders")
    wnids = set(_read_wnids(base))
    for line in annotations.read_text().splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        filename, wnid = fields[0], fields[1] if len(fields) > 1 else ""
        if wnid not in wnids or os.path.basename(filename) != filename:
            raise ValueError(f"{annotations}: bad line {line!r} (unknown class or a path in the file name)")
        src, dst = images / filename, val / wnid / "images" / filename
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        elif not dst.exists():
            raise FileNotFoundError(f"{src} (listed in {annotations}) is missing")
    leftover = sorted(p.name for p in images.iterdir())
    if leftover:
        raise ValueError(f"{images} still holds files not listed in {annotations}: {', '.join(leftover[:5])}")
    images.rmdir()


def _read_wnids(base: Path) -> list[str]:
    return [w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()]


def _fetch_tiny_imagenet(root: Path, url: str, md5: str | None) -> None:
    archive = root / Path(url.split("?")[0]).name
    if not (archive.is_file() and (md5 is None or _md5(archive) == md5)):
        download_file(url, archive, md5)

    def check_and_relayout(base: Path) -> None:
        if not (base / "wnids.txt").is_file():
            raise ValueError(f"{archive} has no {TINY_IMAGENET_FOLDER}/wnids.txt; not the Tiny ImageNet archive")
        relayout_tiny_imagenet_val(base)

    _extract_folder(archive, root, TINY_IMAGENET_FOLDER, _safe_extract_zip, check_and_relayout)


def image_folder_samples(directory: Path, class_to_idx: dict[str, int]) -> list[tuple[Path, int]]:
    """(path, class) in ``torchvision.datasets.ImageFolder`` order: classes sorted, then a sorted walk."""
    samples = []
    for cls in sorted(class_to_idx, key=lambda c: class_to_idx[c]):
        class_dir = directory / cls
        if not class_dir.is_dir():
            continue
        for dirpath, _, filenames in sorted(os.walk(class_dir, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(dirpath) / filename, class_to_idx[cls]))
    return samples


def _read_images(samples: list[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(samples), 3, size, size), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as img:  # ImageFolder's loader: convert("RGB") (some images are grayscale)
            arr = np.asarray(img.convert("RGB"))
        if arr.shape != (size, size, 3):
            raise ValueError(f"{path} is {arr.shape[1]}×{arr.shape[0]}, expected {size}×{size}")
        x[i] = arr.transpose(2, 0, 1)
    return x, np.array([label for _, label in samples], dtype=np.int64)


def _load_tiny_imagenet(root: Path, download: bool, url: str | None = None, md5: str | None = None) -> RawSplits:
    url = TINY_IMAGENET_URL if url is None else url
    md5 = TINY_IMAGENET_MD5 if md5 is None else md5
    _require_or_download("tiny_imagenet", _tiny_expected, root, download, lambda: _fetch_tiny_imagenet(root, url, md5))
    base = root / TINY_IMAGENET_FOLDER
    if (base / "val" / "images").is_dir():  # extracted by hand: re-lay val now
        _ensure_writable(base / "val")
        relayout_tiny_imagenet_val(base)
    classes = sorted(e.name for e in os.scandir(base / "train") if e.is_dir())  # ImageFolder.find_classes
    if classes != sorted(_read_wnids(base)):
        raise ValueError(f"{base}/train class folders do not match wnids.txt")
    val_classes = sorted(e.name for e in os.scandir(base / "val") if e.is_dir())
    if val_classes != classes:
        raise ValueError(f"{base}/val class folders differ from train's ({len(val_classes)} vs {len(classes)})")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    size = registry.get_dataset("tiny_imagenet").image_size
    train = _read_images(image_folder_samples(base / "train", class_to_idx), size)
    test = _read_images(image_folder_samples(base / "val", class_to_idx), size)
    return RawSplits(train[0], train[1], test[0], test[1])


# --------------------------------------------------------------------------------------------
# raw-file handling of each dataset, named by its registry entry (``registry.Dataset.files``)

DIGITS_RAW = DatasetFiles(_load_digits, lambda root: [])
MNIST_RAW = DatasetFiles(*reversed(_mnist_family("mnist", "MNIST", "MNIST")))
FASHION_MNIST_RAW = DatasetFiles(*reversed(_mnist_family("fashion_mnist", "FashionMNIST", "FashionMNIST")))
CIFAR10_RAW = DatasetFiles(*reversed(_cifar_family("cifar10", CIFAR10_FOLDER, CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILES,
                                                   "labels", "CIFAR10")))
CIFAR100_RAW = DatasetFiles(*reversed(_cifar_family("cifar100", CIFAR100_FOLDER, CIFAR100_TRAIN_FILES,
                                                    CIFAR100_TEST_FILES, "fine_labels", "CIFAR100")))
TINY_IMAGENET_RAW = DatasetFiles(_load_tiny_imagenet, _tiny_expected)
