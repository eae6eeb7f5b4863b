"""Choosing the torch device and the CPU threads of a job.

``resolve_device`` turns a ``--device`` choice into a ``torch.device``; ``set_threads`` sets
torch's CPU threads (``--threads``), and ``blas_threads`` limits the BLAS thread pools (numpy,
scipy: the probes' CPU workers follow them) for the duration of a block. ``blas_thread_count`` and
``one_blas_thread`` are what the probes' per-class workers read and set on every fit.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import torch

from latentgen.registry import DEVICE_CHOICES  # noqa: F401  (re-exported: the choices live in the registry)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` or ``"cuda:N"``.

    Asking for CUDA on a machine without it is an error, not a silent fallback:
    a GPU job that ran on the CPU would take days and look healthy.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this machine "
                             "(use --device cpu or --device auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
        return device
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def gpu_share() -> int:
    """How many jobs share this process's GPU (``$LATENTGEN_GPU_SHARE``, set by
    ``latentgen.workflow.gpu_slots``; 1 outside it): each may take that part of the free memory."""
    text = os.environ.get("LATENTGEN_GPU_SHARE", "").strip()
    try:
        share = int(text) if text else 1
    except ValueError:
        raise ValueError(f"LATENTGEN_GPU_SHARE must be a positive integer, got {text!r}") from None
    if share < 1:
        raise ValueError(f"LATENTGEN_GPU_SHARE must be a positive integer, got {text!r}")
    return share


def free_device_memory(device: torch.device) -> int:
    """The device's free bytes this job may plan with: its share of them (:func:`gpu_share`).
    Jobs sharing a GPU start at about the same time and would each see all of it free."""
    return torch.cuda.mem_get_info(device)[0] // gpu_share()


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in torch (``None``: leave torch's choice)."""
    if threads is None:
        return
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(int(threads))


@contextlib.contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Limit the BLAS and OpenMP thread pools to ``threads`` inside the block (``None``: no limit)."""
    if threads is None:
        yield
        return
    # threadpoolctl limits the BLAS libraries loaded when the block starts; scipy.linalg brings
    # its own OpenBLAS, loaded on first import, which would otherwise run with every core (on a
    # 2-core machine shared by two 1-thread jobs, LDA's SVD took 70x longer: 2.8 s instead of 0.04 s)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(int(threads)):  # BLAS and OpenMP (scikit-learn's) pools
        yield


@functools.cache
def _blas_pools():
    """This process's BLAS libraries, found once: threadpoolctl's scan of the loaded libraries costs
    about 8 ms, and the probes asked twice per class-subspace fit (measured: 0.35 s of a demo
    repair job, about 1 s of a demo probe job). Made after scipy.linalg's own OpenBLAS is loaded."""
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def blas_thread_count() -> int:
    """The BLAS pools' current thread count (the largest; ``OMP_NUM_THREADS`` under Snakemake),
    else the CPU count."""
    counts = [lib["num_threads"] for lib in _blas_pools().info()]
    return max(counts) if counts else (os.cpu_count() or 1)


def one_blas_thread():
    """A context in which every BLAS pool runs one thread (the probes' workers each take a class)."""
    return _blas_pools().limit(limits=1)
