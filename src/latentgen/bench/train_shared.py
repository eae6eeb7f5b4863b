"""Training runs sharing one device: the aggregate rate of K concurrent training processes.

The small models train launch-bound on a GPU (a batch-32 MLP step took 2.0 ms on an H200 for
microseconds of arithmetic), so one run leaves the device mostly idle, and how many runs of a model
share a GPU well is a measured number (issue 16: the plan's runs per GPU, per model). This
benchmark starts K processes at once for each K of ``--runs`` (default 1 2 4 8). Each trains
``--arch`` on random images of ``--dataset``'s shape, placed on ``--device`` once, with the
model's own optimizer and batch size (``training.hyperparameters.default_train_config``) through
``training.loop.train_one_epoch``, on one CPU thread. It waits until every process has warmed up,
then starts them together.

Reported per K: ``runs{K}_samples_per_s``, the aggregate rate (K × ``--samples`` / the span from
the first start to the last end), and ``runs{K}_speedup``, that rate over one run's (one run is
always timed, first). The speed-up
stops growing at the K the device (or the host's cores) can feed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="mlp", help="architecture (default mlp)")
    parser.add_argument("--dataset", default="mnist", help="dataset whose image shape and classes are used "
                                                            "(default mnist; no files are read)")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="numbers of concurrent runs to time (default 1 2 4 8)")
    parser.add_argument("--samples", type=int, default=32000, help="training samples per run (default 32000)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")


def run(args: argparse.Namespace) -> dict:
    from latentgen import registry

    registry.get_architecture(args.arch)  # a clear error for an unknown name, before any process starts
    registry.get_dataset(args.dataset)
    if any(k < 1 for k in args.runs) or args.samples < 1:
        raise ValueError("--runs and --samples must be positive")
    result: dict = {"arch": args.arch, "dataset": args.dataset, "device": args.device, "samples": args.samples}
    for k in sorted({1, *args.runs}):  # one run first: the speed-ups' reference
        result[f"runs{k}_samples_per_s"] = _concurrent_rate(k, args)
        result[f"runs{k}_speedup"] = result[f"runs{k}_samples_per_s"] / result["runs1_samples_per_s"]
    return result


def _concurrent_rate(k: int, args) -> float:
    command = [sys.executable, "-m", "latentgen.bench.train_shared", args.arch, args.dataset, str(args.samples),
               args.device]
    # stderr to files, not pipes: a worker's warnings can never fill a pipe nobody reads while it trains
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(k)]
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
               for log in logs]

    def failed(i: int) -> RuntimeError:
        workers[i].wait()
        logs[i].seek(0)
        return RuntimeError(f"a training worker failed: {logs[i].read()[-2000:]}")

    try:
        for i, worker in enumerate(workers):  # every one warmed up before any is timed
            if worker.stdout.readline().strip() != "ready":
                raise failed(i)
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        times = []
        for i, worker in enumerate(workers):
            out, _ = worker.communicate(timeout=3600)
            if worker.returncode != 0:
                raise failed(i)
            times.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker, log in zip(workers, logs):
            if worker.poll() is None:
                worker.kill()
            log.close()
    span = max(t["end"] for t in times) - min(t["start"] for t in times)
    return k * args.samples / span


def _worker(arch: str, dataset: str, samples: int, device: str) -> None:
    """One run: warm up, say ``ready``, wait for ``go``, train ``samples`` samples, print the times."""
    import torch

    from latentgen.data.datasets import get_spec
    from latentgen.devices import resolve_device
    from latentgen.models.architectures import build_model
    from latentgen.training.hyperparameters import default_train_config
    from latentgen.training.loop import make_optimizer, train_one_epoch

    torch.set_num_threads(1)
    device = resolve_device(device)
    config = default_train_config(arch, dataset)
    spec = get_spec(dataset)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, spec.in_channels, spec.image_size, spec.image_size, generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (samples,), generator=generator).to(device)
    model = build_model(arch, dataset, seed=0).to(device)
    optimizer = make_optimizer(config, model.parameters())
    warm = min(samples, 20 * config.batch_size)
    train_one_epoch(model, optimizer, x[:warm], y[:warm], config.batch_size)  # reads back: synchronised
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()  # wall clock: comparable across the processes
    train_one_epoch(model, optimizer, x, y, config.batch_size)
    print(json.dumps({"start": start, "end": time.time()}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
