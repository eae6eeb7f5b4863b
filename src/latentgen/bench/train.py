"""Training throughput: our preloaded-tensor loop vs a reference-style DataLoader loop (MLP, MNIST, batch 32, SGD).

Three loops train the paper's MLP (784-128-512-2048-2048-10, the same initial weights) with
``SGD(lr=1e-3, momentum=0.9)`` at batch size 32 on ``--device`` (default the CPU), over the same
number of MNIST training samples, in the same process:

- ours: ``latentgen.training.loop.train_one_epoch`` over the whole training set loaded once into
  normalised tensors (``latentgen.data.datasets.load_dataset``) and placed as ``train`` places it
  (``placement.place_images``: on a GPU once, as uint8, normalised per batch there), by index slices;
- reference: ``torchvision.datasets.MNIST`` with per-item ``ToTensor`` + ``Normalize(0.5, 0.5)``
  and ``DataLoader(batch_size=32, shuffle=False)``, the authors' loop (on a GPU: pinned batches,
  each copied to the device);
- graphed (CUDA only): ours with every full batch's step replayed as one CUDA graph
  (``latentgen train --cuda-graph``, ``training.graph_step``), the launch overhead gone;
- bare: the shortest possible preloaded loop (slice, zero_grad, forward, loss, backward, step; no
  bookkeeping; on a GPU the float32 set on the device), the ceiling of any loop that feeds this
  model and optimizer from memory.

The loops take turns every ``--chunk`` batches, each side summing its own time, so load from
other processes on a shared machine hits all alike. The one-time preload is reported separately
(``ours_load_seconds``). Target: ratio >= 1.5.
No preloaded loop can beat the reference by more than ``bare_ratio`` ≈ 1 + (reference data
time)/(step compute time): ``ours_ms_per_batch`` and ``reference_data_ms_per_batch`` show the two,
and ``ours_vs_bare`` how close our loop comes to the ceiling, so a compute-bound machine (few or
busy cores, where the MLP step is slow) can be told apart from a slow loop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"
TARGET_RATIO = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                        help=f"folder with MNIST/raw (default {DEFAULT_DATA_ROOT})")
    parser.add_argument("--samples", type=int, default=6400, help="training samples per timed pass (default 6400)")
    parser.add_argument("--chunk", type=int, default=10, help="batches per turn; the loops alternate (default 10)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both sides (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")


def _reference_steps(model, optimizer, batches, samples: int, device=None) -> int:
    """The authors' loop over a DataLoader iterator, until ``samples`` more samples are consumed."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen = correct = 0
    for inputs, labels in batches:
        if device is not None:  # the authors' per-batch copy to the GPU
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        model.zero_grad()
        output = model(inputs)
        loss = loss_fn(output, labels)
        loss.backward()
        correct += (torch.argmax(output, 1) == labels).float().sum().item()
        optimizer.step()
        seen += len(labels)
        if seen >= samples:
            break
    return seen


def _bare_steps(model, optimizer, x, y) -> None:
    """The ceiling: preloaded slices straight into the step, nothing else."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for start in range(0, len(x), 32):
        optimizer.zero_grad()
        loss_fn(model(x[start:start + 32]), y[start:start + 32]).backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()


class _Window:
    """Rows ``offset:offset + n`` of placed images (``placement.PlacedImages``), for the loop's slices."""

    def __init__(self, x, offset: int, n: int):
        self.x, self.offset, self.n, self.device = x, offset, n, x.device

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: slice):
        return self.x[self.offset + key.start:self.offset + min(key.stop, self.n)]


def run(args: argparse.Namespace) -> dict:
    import torchvision
    from torchvision import transforms

    from latentgen.data.datasets import load_dataset
    from latentgen.devices import resolve_device
    from latentgen.models.architectures import build_model
    from latentgen.training.placement import place_images
    from latentgen.training.graph_step import GraphedStep
    from latentgen.training.loop import train_one_epoch

    if args.samples < 32 or args.chunk < 1 or (args.threads is not None and args.threads < 1):
        raise ValueError("--samples must be >= 32, --chunk and --threads >= 1")
    root = Path(args.data_root)
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        raise FileNotFoundError(f"MNIST not found under {root} (expected {root}/MNIST/raw/train-images-idx3-ubyte)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"

    start = time.perf_counter()
    data = load_dataset("mnist", data_root=root)
    load_seconds = time.perf_counter() - start
    reference_set = torchvision.datasets.MNIST(
        root=str(root), train=True, download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    loader = torch.utils.data.DataLoader(reference_set, batch_size=32, shuffle=False, pin_memory=cuda)
    chunk = 32 * args.chunk
    samples = min(len(data.train_y), -(-args.samples // chunk) * chunk)
    # ours: placed as `latentgen train` places it (on the CPU the tensors themselves); bare: float32
    (x_ours,), placement = place_images([data.train_x], "mnist", dev)
    y, x_bare = data.train_y.to(dev), data.train_x.to(dev)
    ref_device = dev if cuda else None

    def window(offset, n):  # rows offset:offset+n as the loop sees them
        return _Window(x_ours, offset, n) if cuda else x_ours[offset:offset + n]

    def fresh():
        model = build_model("mlp", "mnist", seed=0).to(dev)  # the same initial weights for every loop
        return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    # warm-up (allocator, first-call overheads) on every path
    model, optimizer = fresh()
    train_one_epoch(model, optimizer, window(0, 320), y[:320], 32, y_true=y[:320])
    _reference_steps(model, optimizer, iter(loader), 320, ref_device)
    _bare_steps(model, optimizer, x_bare[:320], y[:320])

    # the loops take turns chunk by chunk (the order rotating), so load from other processes on a
    # shared machine hits all of them alike
    ours_model, ours_opt = fresh()
    ref_model, ref_opt = fresh()
    bare_model, bare_opt = fresh()
    ref_batches = iter(loader)
    seconds = {"ours": 0.0, "reference": 0.0, "bare": 0.0}
    if cuda:
        graph_model, graph_opt = fresh()
        graphed = GraphedStep(graph_model, graph_opt, 32, x_ours.shape[1:], dev, True)
        train_one_epoch(graph_model, graph_opt, window(0, 320), y[:320], 32, y_true=y[:320], graphed=graphed)  # captured
        seconds["graphed"] = 0.0
    for i, offset in enumerate(range(0, samples, chunk)):
        part = slice(offset, offset + chunk)
        turns = {
            "ours": lambda: train_one_epoch(ours_model, ours_opt, window(offset, chunk), y[part], 32,
                                            y_true=y[part]),
            "reference": lambda: _reference_steps(ref_model, ref_opt, ref_batches, chunk, ref_device),
            "bare": lambda: _bare_steps(bare_model, bare_opt, x_bare[part], y[part]),
        }
        if cuda:
            turns["graphed"] = lambda: train_one_epoch(graph_model, graph_opt, window(offset, chunk), y[part], 32,
                                                       y_true=y[part], graphed=graphed)
        names = list(turns)
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            turns[name]()
            seconds[name] += time.perf_counter() - start
    ours_seconds, reference_seconds = seconds["ours"], seconds["reference"]

    # where the reference's time goes: its data pipeline alone (per-item transforms + collation)
    batches = samples // 32
    start = time.perf_counter()
    for _ in zip(range(batches), loader):
        pass
    reference_data_seconds = time.perf_counter() - start
    ours_rate = samples / ours_seconds
    reference_rate = samples / reference_seconds
    bare_rate = samples / seconds["bare"]
    return {
        "device": str(dev),
        "ours_placement": placement,
        "ours_samples_per_s": ours_rate,
        "reference_samples_per_s": reference_rate,
        "ratio": ours_rate / reference_rate,
        "target_ratio": TARGET_RATIO,
        "meets_target": ours_rate / reference_rate >= TARGET_RATIO,
        "bare_samples_per_s": bare_rate,
        "bare_ratio": bare_rate / reference_rate,
        "ours_vs_bare": ours_rate / bare_rate,
        "samples": samples,
        "batch_size": 32,
        "threads": torch.get_num_threads(),
        "ours_seconds": ours_seconds,
        "reference_seconds": reference_seconds,
        "ours_load_seconds": load_seconds,
        # per batch: our whole step (the compute floor) and the reference's data pipeline alone
        "ours_ms_per_batch": 1e3 * ours_seconds / batches,
        "reference_data_ms_per_batch": 1e3 * reference_data_seconds / batches,
        **({"graphed_samples_per_s": samples / seconds["graphed"], "graphed_vs_ours": ours_seconds / seconds["graphed"]}
           if cuda else {}),
    }
