"""Training runs sharing one device: the aggregate rate of K concurrent training processes.

The small models train launch-bound on a GPU (a batch-32 MLP step took 2.0 ms on an H200 for
microseconds of arithmetic), so one run leaves the device mostly idle; how many runs of a model
share a GPU well (a model's ``runs_per_gpu``) is measured, not guessed. :func:`concurrent_rate`
starts K processes at once (``python -m latentgen.training.shared_device``). Each trains the model
on random images of the dataset's shape, placed on the device once, with the model's own optimizer
and batch size (``training.hyperparameters.default_train_config``) through
``training.loop.train_one_epoch`` (a CUDA-graph step where ``latentgen train`` takes one by
default, ``training.graph_step.use_graph``), on one CPU thread. The processes wait until every one has warmed
up, then start together; the rate is K × samples over the span from the first start to the last end.

Used by ``python -m latentgen.bench train_shared`` (the table of K = 1, 2, 4, 8) and by
``latentgen estimate`` (:func:`shared_speedup`: the speed-up of a model's configured ``runs_per_gpu``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time


def concurrent_rate(arch: str, dataset: str, runs: int, samples: int, device: str, timeout: float = 3600,
                    cuda_graph: bool | None = None) -> float:
    """Aggregate training samples per second of ``runs`` concurrent runs of ``arch`` on ``device``
    (``cuda_graph``: as ``latentgen train --cuda-graph / --no-cuda-graph``; None: its default)."""
    command = [sys.executable, "-m", "latentgen.training.shared_device", arch, dataset, str(samples), device,
               {None: "default", True: "graph", False: "eager"}[cuda_graph]]
    # stderr to files, not pipes: a worker's warnings can never fill a pipe nobody reads while it trains
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(runs)]
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
            out, _ = worker.communicate(timeout=timeout)
            if worker.returncode != 0:
                raise failed(i)
            times.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker, log in zip(workers, logs):
            if worker.poll() is None:
                worker.kill()
            log.close()
    span = max(t["end"] for t in times) - min(t["start"] for t in times)
    return runs * samples / span


def shared_speedup(arch: str, dataset: str, runs: int, samples: int, device: str, cache: dict) -> float:
    """The aggregate rate of ``runs`` concurrent runs over one run's (:func:`concurrent_rate`, ``samples``
    each). Rates are kept in ``cache`` by what the runs do: the same architecture on the same image
    shape, classes and batch size (the CNN on MNIST and on Fashion-MNIST) is timed once."""
    from latentgen.data.datasets import get_spec
    from latentgen.training.hyperparameters import default_train_config
    spec, batch_size = get_spec(dataset), default_train_config(arch, dataset).batch_size

    def rate(k):
        key = (arch, spec.in_channels, spec.image_size, spec.num_classes, batch_size, samples, device, k)
        if key not in cache:
            cache[key] = concurrent_rate(arch, dataset, k, samples, device)
        return cache[key]
    return rate(runs) / rate(1)


def _worker(arch: str, dataset: str, samples: int, device: str, step: str) -> None:
    """One run: warm up, say ``ready``, wait for ``go``, train ``samples`` samples, print the times."""
    import torch

    from latentgen.data.datasets import get_spec
    from latentgen.devices import resolve_device
    from latentgen.models.architectures import build_model
    from latentgen.training.hyperparameters import default_train_config
    from latentgen.training.graph_step import WARMUP, GraphedStep, use_graph
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
    # the step a training job takes: a CUDA graph where `latentgen train` uses one by default
    requested = {"default": None, "graph": True, "eager": False}[step]
    graphed = GraphedStep(model, optimizer, config.batch_size, x.shape[1:], device, False) if use_graph(
        arch, model, optimizer, device, requested) else None
    warm = min(samples, max(20, WARMUP + 1) * config.batch_size)
    train_one_epoch(model, optimizer, x[:warm], y[:warm], config.batch_size, graphed=graphed)  # synchronised
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()  # wall clock: comparable across the processes
    train_one_epoch(model, optimizer, x, y, config.batch_size, graphed=graphed)
    print(json.dumps({"start": start, "end": time.time()}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
