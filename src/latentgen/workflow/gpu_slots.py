"""Give each GPU job its own GPU: ``python -m latentgen.workflow.gpu_slots -- CMD ...``.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but never says
*which* GPU a job should use, so without help every job lands on ``cuda:0``. This
wrapper takes a free slot from a pool of file locks (one lock file per slot in a lock
folder, ``fcntl.flock``), sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU and replaces
itself with ``CMD`` (``exec``), which inherits the lock: the slot stays taken exactly
as long as ``CMD`` runs, and the kernel frees it when ``CMD`` exits or is killed.

Number of slots: ``--num-gpus`` or ``$LATENTGEN_NUM_GPUS``; else the devices listed in
``$CUDA_VISIBLE_DEVICES`` (the pool then hands out those ids); else
``torch.cuda.device_count()``. ``--jobs-per-gpu K`` (``$LATENTGEN_JOBS_PER_GPU``) lets K
jobs share one GPU. When every slot is taken the wrapper waits for one to free.

Under SLURM (``$SLURM_JOB_ID`` set) the scheduler already gave the job its GPUs: the
wrapper runs ``CMD`` untouched.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path


def default_lock_dir() -> Path:
    env = os.environ.get("LATENTGEN_GPU_LOCK_DIR")
    if env:
        return Path(env)
    # one pool per user and machine, shared by every workflow that user runs there
    return Path(tempfile.gettempdir()) / f"latentgen-gpu-slots-{os.getuid()}"


def visible_devices(num_gpus: int | None = None) -> list[str]:
    """The device ids the pool hands out, in slot order."""
    if num_gpus is None and os.environ.get("LATENTGEN_NUM_GPUS"):
        num_gpus = _positive_int(os.environ["LATENTGEN_NUM_GPUS"], "LATENTGEN_NUM_GPUS")
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if num_gpus is None:
        if listed:
            return listed
        import torch  # only when nothing cheaper says how many GPUs there are

        num_gpus = torch.cuda.device_count()
    if num_gpus < 1:
        raise ValueError("gpu_slots: no GPU found (set LATENTGEN_NUM_GPUS or use a CPU device)")
    if listed:
        if num_gpus > len(listed):
            raise ValueError(f"gpu_slots: {num_gpus} GPUs requested but CUDA_VISIBLE_DEVICES lists {len(listed)}")
        return listed[:num_gpus]
    return [str(i) for i in range(num_gpus)]


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"gpu_slots: {name} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"gpu_slots: {name} must be a positive integer, got {text!r}")
    return value


def acquire_slot(devices: list[str], lock_dir: Path, jobs_per_gpu: int = 1,
                 poll_s: float = 0.2, timeout_s: float | None = None) -> tuple[int, str, int]:
    """Lock a free slot; return ``(slot, device_id, fd)``. The lock lives as long as ``fd`` is open."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    n_slots = len(devices) * jobs_per_gpu
    start = time.monotonic()
    while True:
        for slot in range(n_slots):
            fd = os.open(lock_dir / f"slot{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # who holds it, for a human looking at the lock folder
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return slot, devices[slot % len(devices)], fd
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"gpu_slots: no free GPU slot in {lock_dir} after {timeout_s} s")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, cmd = argv[:split], argv[split + 1:]
    else:
        own, cmd = [], argv
    parser = argparse.ArgumentParser(prog="python -m latentgen.workflow.gpu_slots",
                                     description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] -- CMD [ARG ...]")
    parser.add_argument("--num-gpus", type=int, default=None, help="size of the pool (default: detected)")
    parser.add_argument("--jobs-per-gpu", type=int, default=None, help="jobs sharing one GPU (default 1)")
    parser.add_argument("--lock-dir", type=Path, default=None, help="folder of the slot lock files")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(own)
    if not cmd:
        parser.error("no command given after --")

    if os.environ.get("SLURM_JOB_ID"):
        # SLURM set CUDA_VISIBLE_DEVICES for this allocation; do not second-guess it
        os.execvp(cmd[0], cmd)

    try:
        jobs_per_gpu = args.jobs_per_gpu
        if jobs_per_gpu is None:
            jobs_per_gpu = _positive_int(os.environ.get("LATENTGEN_JOBS_PER_GPU", "1"), "LATENTGEN_JOBS_PER_GPU")
        if jobs_per_gpu < 1:
            raise ValueError(f"gpu_slots: --jobs-per-gpu must be positive, got {jobs_per_gpu}")
        devices = visible_devices(args.num_gpus)
        slot, device, fd = acquire_slot(devices, args.lock_dir or default_lock_dir(), jobs_per_gpu,
                                        timeout_s=args.timeout)
    except (ValueError, TimeoutError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    os.set_inheritable(fd, True)  # CMD keeps the lock until it exits
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ["LATENTGEN_GPU_SLOT"] = str(slot)
    print(f"gpu_slots: slot {slot} -> CUDA_VISIBLE_DEVICES={device}", file=sys.stderr, flush=True)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"gpu_slots: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
