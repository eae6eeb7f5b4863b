"""Shared fixtures. Real-data tests read MNIST from ``../shared/data`` (or
``$LATENTGEN_TEST_DATA``) and are skipped, with the reason, where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path:
    return Path(os.environ.get("LATENTGEN_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Folder holding ``MNIST/raw/*-ubyte`` as torchvision reads it (read-only)."""
    root = _shared_data_root()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found under {root} (set LATENTGEN_TEST_DATA to a folder with MNIST/raw)")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread (and test machines are often shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single_threaded_blas():
    """One BLAS thread: multi-threaded BLAS collapses (10-20x) on shared cores, and these tests
    check values, not speed."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's embedded 8×8 digits, loaded once (no download)."""
    from latentgen.data.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder a normal user cannot write to (as root, ``os.access`` is made to answer as for one)."""
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0o555)
    if os.geteuid() == 0:  # root ignores mode bits
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and bool(os.stat(p).st_mode & 0o200))
    yield root
    root.chmod(0o755)
