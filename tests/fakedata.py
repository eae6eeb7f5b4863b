"""Tiny datasets written in the real on-disk formats, for tests that cannot use the real files.

- MNIST / Fashion-MNIST: idx files (big-endian header, magic 0x0803 images / 0x0801 labels),
  optionally gzip-compressed as the download mirrors serve them.
- CIFAR-10 / CIFAR-100: python pickle batches (dict with ``data`` N×3072 uint8, channel-major,
  and ``labels`` / ``fine_labels`` + ``coarse_labels``), plus the meta file, and the .tar.gz.
- Tiny ImageNet: the official zip layout ``tiny-imagenet-200/{wnids.txt, words.txt,
  train/<wnid>/images/<wnid>_<i>.JPEG, train/<wnid>/<wnid>_boxes.txt, val/images/val_<i>.JPEG,
  val/val_annotations.txt, test/images/test_<i>.JPEG}`` with directory entries.

Every writer returns the arrays it wrote (uint8 N×C×H×W, int64 labels) so tests can compare.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def random_images(rng, n, c, size):
    return rng.randint(0, 256, size=(n, c, size, size)).astype(np.uint8)


# ---------------------------------------------------------------- MNIST family


def idx_bytes(array: np.ndarray) -> bytes:
    """idx format: 0, 0, type code (0x08 = ubyte), ndim; then each dim as big-endian int32; then data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist_family(root, folder="FashionMNIST", n_train=60, n_test=20, seed=0, gz=False):
    """Write ``root/folder/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    rng = np.random.RandomState(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = random_images(rng, n, 1, 28)
        y = rng.randint(0, 10, size=n).astype(np.int64)
        for kind, payload in (("images-idx3", idx_bytes(x[:, 0])), ("labels-idx1", idx_bytes(y.astype(np.uint8)))):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


# ---------------------------------------------------------------- CIFAR


def _cifar_batch(x, labels, label_key, extra=None):
    batch = {"batch_label": "fake batch", label_key: [int(v) for v in labels],
             "data": x.reshape(len(x), -1), "filenames": [f"img_{i}.png" for i in range(len(x))]}
    batch.update(extra or {})
    return pickle.dumps(batch, protocol=2)


def write_cifar(root, kind="cifar10", n_per_batch=8, n_test=10, seed=0):
    """Write the extracted ``cifar-10-batches-py`` (5 train batches) or ``cifar-100-python`` folder."""
    rng = np.random.RandomState(seed)
    if kind == "cifar10":
        folder, k, train_files, test_files, key = "cifar-10-batches-py", 10, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
        meta = ("batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_per_batch})
    else:
        folder, k, train_files, test_files, key = "cifar-100-python", 100, ["train"], ["test"], "fine_labels"
        meta = ("meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]})
    base = Path(root) / folder
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, files, n in (("train", train_files, n_per_batch), ("test", test_files, n_test)):
        xs, ys = [], []
        for name in files:
            x = random_images(rng, n, 3, 32)
            y = rng.randint(0, k, size=n).astype(np.int64)
            extra = {"coarse_labels": [int(v) // 5 for v in y]} if kind == "cifar100" else None
            (base / name).write_bytes(_cifar_batch(x, y, key, extra))
            xs.append(x)
            ys.append(y)
        out[f"{split}_x"], out[f"{split}_y"] = np.concatenate(xs), np.concatenate(ys)
    (base / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return out


def tar_folder(src_root, folder, archive):
    """``archive`` (.tar.gz) holding ``src_root/folder`` as ``folder/...``, like the official tarballs."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(Path(src_root) / folder, arcname=folder)
    return Path(archive)


def evil_tar(archive, member="../evil.txt"):
    with tarfile.open(archive, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return Path(archive)


# ---------------------------------------------------------------- Tiny ImageNet


def _jpeg(array_hwc, gray=False):
    from PIL import Image

    img = Image.fromarray(array_hwc[:, :, 0] if gray else array_hwc, mode="L" if gray else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_tiny_imagenet_zip(archive, wnids=("n01443537", "n01629819", "n02085620"), n_train=3, n_val=2,
                            seed=0, evil_member=None):
    """The official zip layout with ``len(wnids)`` classes. Val images are shuffled across classes
    and listed in ``val_annotations.txt``; one train and one val image are grayscale JPEGs.
    Returns ``{"wnids": [...], "val_labels": {filename: wnid}}``."""
    rng = np.random.RandomState(seed)
    top = "tiny-imagenet-200/"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in ("", "train/", "val/", "val/images/", "test/", "test/images/"):
            zf.writestr(top + d, b"")
        zf.writestr(top + "wnids.txt", "".join(f"{w}\n" for w in wnids))
        zf.writestr(top + "words.txt", "".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
        for ci, w in enumerate(wnids):
            zf.writestr(f"{top}train/{w}/", b"")
            zf.writestr(f"{top}train/{w}/images/", b"")
            boxes = []
            # numbered so that string order differs from numeric order (0, 1, 10, 2 ...)
            for i in range(n_train):
                name = f"{w}_{i * 5}.JPEG"
                zf.writestr(f"{top}train/{w}/images/{name}",
                            _jpeg(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8), gray=(ci == 0 and i == 0)))
                boxes.append(f"{name}\t0\t0\t63\t63\n")
            zf.writestr(f"{top}train/{w}/{w}_boxes.txt", "".join(boxes))
        val_wnids = [w for w in wnids for _ in range(n_val)]
        rng.shuffle(val_wnids)
        annotations, val_labels = [], {}
        for i, w in enumerate(val_wnids):
            name = f"val_{i}.JPEG"
            zf.writestr(f"{top}val/images/{name}",
                        _jpeg(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8), gray=(i == 1)))
            annotations.append(f"{name}\t{w}\t1\t2\t60\t61\n")
            val_labels[name] = w
        zf.writestr(top + "val/val_annotations.txt", "".join(annotations))
        zf.writestr(top + "test/images/test_0.JPEG", _jpeg(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)))
        if evil_member:
            zf.writestr(evil_member, b"owned")
    return {"wnids": list(wnids), "val_labels": val_labels}


# ---------------------------------------------------------------- network helpers


def block_internet(monkeypatch):
    """Make any connection to a non-loopback address fail, as on a machine without internet."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test: network access to {host} blocked")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise socket.gaierror(f"test: name lookup for {host} blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class LocalHTTPServer:
    """Serve a folder on 127.0.0.1 (torchvision's downloader speaks only HTTP(S))."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
