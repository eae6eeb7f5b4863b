"""Small I/O helpers shared by every stage: atomic writes and hashing.

Nothing half-written may look complete, so every output is written to a
temporary file in the destination folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates mode 0600; give the result the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(obj) -> str:
    """Short, stable hash of a JSON-serialisable configuration (key order does not matter)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide numerical results, for provenance records."""
    from importlib import metadata

    versions = {}
    for name in ("latentgen", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "h5py"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def concatenate_csv(inputs, out: str | os.PathLike) -> int:
    """Concatenate CSV files that share one header line into ``out`` (atomically), keeping the
    header once; returns the number of data lines. Refuses files whose header differs."""
    header, lines = None, 0
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as sink:
        for path in inputs:
            with open(path, newline="") as source:
                first = source.readline()
                if header is None:
                    header = first
                    sink.write(first)
                elif first != header:
                    raise ValueError(f"{path}: header differs from that of {inputs[0]} "
                                     f"({first.strip()!r} vs {header.strip()!r})")
                for line in source:
                    sink.write(line)
                    lines += 1
    return lines
