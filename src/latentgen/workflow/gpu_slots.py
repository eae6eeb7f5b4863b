"""Give each GPU job its share of one GPU: ``python -m latentgen.workflow.gpu_slots -- CMD ...``.

Snakemake's ``--resources gpu=N`` caps how much GPU work runs at once but never says
*which* GPU a job should use, so without help every job lands on ``cuda:0``. This
wrapper takes its share of one GPU from a pool of file locks, sets ``CUDA_VISIBLE_DEVICES``
to that GPU and replaces itself with ``CMD`` (``exec``), which inherits the locks: the
share stays taken exactly as long as ``CMD`` runs, and the kernel frees it when ``CMD``
exits or is killed.

Each GPU is :data:`GPU_UNITS` lock files (``fcntl.flock``) in a lock folder, named by the
GPU's id (not its place in the list), so workflows started with different
``CUDA_VISIBLE_DEVICES`` share one pool for the GPUs they have in common. A job that
shares its GPU with K-1 others (``--jobs-per-gpu K``, K a divisor of :data:`GPU_UNITS`)
locks ``GPU_UNITS / K`` of one GPU's files, on the first GPU that has that many free; a
whole-GPU job locks all of them. So jobs of different K mix on one GPU by weight: two
training runs shared 4 ways and one shared 2 ways fill it. The workflow gives each job
its K from the plan (``latentgen.workflow.plan.JobPlan.gpu_share``) and charges Snakemake
the same weight (resource ``gpu_units``, :data:`GPU_UNITS` per GPU of ``--resources gpu=N``).

Number of GPUs: ``--num-gpus`` or ``$LATENTGEN_NUM_GPUS``; else the devices listed in
``$CUDA_VISIBLE_DEVICES`` (the pool then hands out those ids); else
``torch.cuda.device_count()``. K: ``--jobs-per-gpu``, else ``$LATENTGEN_JOBS_PER_GPU``,
else 1. When no GPU has the share free, the wrapper waits for one. The job learns its K from
``$LATENTGEN_GPU_SHARE`` and plans with 1/K of the device's free memory.

Under SLURM (``$SLURM_JOB_ID`` set) the scheduler already gave the job its GPUs: the
wrapper runs ``CMD`` untouched.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# lock files per GPU: every K with K | 24 (1, 2, 3, 4, 6, 8, 12, 24 jobs per GPU) is a whole number of them
GPU_UNITS = 24
SHARES = tuple(k for k in range(1, GPU_UNITS + 1) if GPU_UNITS % k == 0)


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


class Prefix:
    """``python -m latentgen.workflow.gpu_slots --jobs-per-gpu K --``, the prefix of a GPU job's command.

    Not a ``str`` on purpose: Snakemake records a job's parameters of builtin types and reruns the
    job when they change, and where a job runs (its share of a GPU) is not what it computes; a
    model's new ``runs_per_gpu`` must not retrain its finished runs.
    """

    def __init__(self, jobs_per_gpu: int):
        units_per_job(jobs_per_gpu)
        self.jobs_per_gpu = jobs_per_gpu

    def __str__(self) -> str:
        return f"python -m latentgen.workflow.gpu_slots --jobs-per-gpu {self.jobs_per_gpu} --"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other) -> bool:
        return isinstance(other, Prefix) and other.jobs_per_gpu == self.jobs_per_gpu

    def __hash__(self) -> int:
        return hash(self.jobs_per_gpu)


def units_per_job(jobs_per_gpu: int, name: str = "--jobs-per-gpu") -> int:
    """Lock files a job takes when ``jobs_per_gpu`` jobs share a GPU (a clear error for a K that does not divide)."""
    if jobs_per_gpu not in SHARES:
        raise ValueError(f"gpu_slots: {name} must be one of {', '.join(map(str, SHARES))} "
                         f"(jobs sharing one GPU, a divisor of {GPU_UNITS}), got {jobs_per_gpu!r}")
    return GPU_UNITS // jobs_per_gpu


def jobs_per_gpu_override() -> int | None:
    """``$LATENTGEN_JOBS_PER_GPU``, checked: every GPU job's K, over the plan's (None: unset)."""
    text = os.environ.get("LATENTGEN_JOBS_PER_GPU", "").strip()
    if not text:
        return None
    value = _positive_int(text, "LATENTGEN_JOBS_PER_GPU")
    units_per_job(value, "LATENTGEN_JOBS_PER_GPU")
    return value


def lock_file(lock_dir: Path, device: str, unit: int | None = None) -> Path:
    """Unit ``unit``'s lock file of GPU ``device`` (an index, or a ``GPU-…``/``MIG-…`` UUID); with no
    unit, the GPU's own lock, held while a job picks its units."""
    name = f"gpu{re.sub(r'[^A-Za-z0-9]+', '_', device)}"
    return lock_dir / (f"{name}.lock" if unit is None else f"{name}.unit{unit}.lock")


def _try_device(device: str, lock_dir: Path, need: int) -> list[tuple[int, int]] | None:
    """Lock ``need`` free unit files of GPU ``device`` without waiting: ``[(unit, fd), ...]``, or None (all released)."""
    # one job at a time picks units on a GPU: two jobs scanning together could each take part of
    # the other's share, give both back and leave the GPU fragmented
    picking = os.open(lock_file(lock_dir, device), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(picking, fcntl.LOCK_EX)
        held = []
        for unit in range(GPU_UNITS):
            fd = os.open(lock_file(lock_dir, device, unit), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((unit, fd))
            if len(held) == need:
                return held
        for _, fd in held:  # not enough here: never wait while holding a part (no deadlock between jobs)
            os.close(fd)
        return None
    finally:
        os.close(picking)


def acquire_slot(devices: list[str], lock_dir: Path, jobs_per_gpu: int = 1,
                 poll_s: float = 0.2, timeout_s: float | None = None) -> tuple[int, str, list[int]]:
    """Lock a job's share of one GPU; return ``(slot, device_id, fds)``. ``slot`` (the first locked
    unit, counted over all GPUs) differs between running jobs; the locks live as long as ``fds`` are open."""
    need = units_per_job(jobs_per_gpu)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for index, device in enumerate(devices):  # first fit: shared jobs fill one GPU before the next
            held = _try_device(device, lock_dir, need)
            if held is None:
                continue
            for _, fd in held:  # who holds it, for a human looking at the lock folder
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return index * GPU_UNITS + held[0][0], device, [fd for _, fd in held]
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"gpu_slots: no GPU with 1/{jobs_per_gpu} of it free in {lock_dir} after {timeout_s} s")
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
    parser.add_argument("--jobs-per-gpu", type=int, default=None,
                        help=f"jobs sharing one GPU, a divisor of {GPU_UNITS} (default $LATENTGEN_JOBS_PER_GPU or 1)")
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
            jobs_per_gpu = jobs_per_gpu_override() or 1
        devices = visible_devices(args.num_gpus)
        slot, device, fds = acquire_slot(devices, args.lock_dir or default_lock_dir(), jobs_per_gpu,
                                         timeout_s=args.timeout)
    except (ValueError, TimeoutError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    for fd in fds:
        os.set_inheritable(fd, True)  # CMD keeps the locks until it exits
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ["LATENTGEN_GPU_SLOT"] = str(slot)
    # the job plans its device memory as this share of the free memory (latentgen.devices.free_device_memory)
    os.environ["LATENTGEN_GPU_SHARE"] = str(jobs_per_gpu)
    print(f"gpu_slots: slot {slot} -> CUDA_VISIBLE_DEVICES={device}", file=sys.stderr, flush=True)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"gpu_slots: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
