"""One checkpoint's activations held in memory, computed where the probes run: no HDF5 round trip.

:class:`CheckpointActivations` is read like an activations file (``latentgen.probing.activations.ActivationFile``:
``path``, ``meta``, ``layers``, ``array(split, layer)``, ``labels(split, kind)``, ``sizes()``),
so :func:`latentgen.probing.checkpoint.probe_checkpoint` takes either. Its arrays are the ones
``latentgen activations`` would write, value for value: the same forward passes
(``latentgen.probing.activations.host_blocks``, the same batch size and BatchNorm mode) gathered into
float32 arrays in host memory instead of HDF5 datasets.

**Memory.** Layers are computed in *groups*: asking for a layer that is not held runs the
forward passes once for that layer and the following ones, as many as fit in ``memory_budget``
bytes (train + test rows × width × 4 per layer), and drops the previous group. The probes walk
the layers in order, so each layer is computed once per checkpoint and at most one group is
alive. A layer that alone exceeds the budget is a :class:`MemoryBudgetError` naming it and the bytes it
needs. The arrays live in host memory whatever the device (a GPU computes them in blocks that
stream to the host, ``latentgen.probing.activations.host_blocks``; the probes move one layer at a time
to the device): the default budget is half the host's available memory.

The network and its images stay loaded (:attr:`model`, :meth:`images`), so the transfer family
does not load them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentgen import registry
from latentgen.probing.activations import (activation_meta, batchnorm_mode, check_activation_options, checkpoint_dataset,
                                   corrupted_labels_for, host_blocks)
from latentgen.models.forward import check_layers, layer_sizes

BYTES_PER_VALUE = 4  # float32 activations


def available_memory() -> int:
    """Bytes of host memory available (``MemAvailable``, else the free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def default_memory_budget() -> int:
    """Half of :func:`available_memory`: the other half is the probes' working memory."""
    return available_memory() // 2


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


class MemoryBudgetError(ValueError):
    """A layer's activations do not fit in the memory budget (the message names it and its bytes)."""


def layer_groups(widths: dict[str, int], rows: int, budget: int) -> list[list[str]]:
    """Consecutive layers packed greedily into groups of at most ``budget`` bytes (``rows`` rows of
    float32 each); a layer that alone needs more is a MemoryBudgetError naming it and its bytes."""
    groups: list[list[str]] = []
    used = budget + 1
    for name, width in widths.items():
        need = rows * width * BYTES_PER_VALUE
        if need > budget:
            raise MemoryBudgetError(f"layer {name!r} needs {format_bytes(need)} ({rows} rows × {width} float32) but the "
                              f"memory budget is {format_bytes(budget)}; raise --memory-budget or free memory")
        if used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return groups


class HeldActivations:
    """Activations of named layers on a train and a test set, computed on demand a group of layers
    at a time (within ``memory_budget`` bytes) and held in host memory; read like an activations
    file. Subclasses say how a block of rows is computed (:meth:`blocks`)."""

    def __init__(self, inputs: dict, labels: dict, meta: dict, widths: dict[str, int],
                 memory_budget: int | None = None):
        self._inputs, self._labels, self.meta = inputs, labels, meta
        self.path = Path(meta.get("checkpoint") or "(in memory)")
        self.layers = list(widths)
        self._widths = dict(widths)
        self.memory_budget = default_memory_budget() if memory_budget is None else int(memory_budget)
        rows = sum(len(x) for x in inputs.values())
        self._groups = layer_groups(self._widths, rows, self.memory_budget)  # fails before any forward pass
        self._held: dict[tuple[str, str], np.ndarray] = {}
        self.forward_passes = 0  # groups computed (a test reads it)

    def blocks(self, x, group: list[str]):
        """``(start, {layer: float32 array})`` for consecutive blocks of the rows of ``x``."""
        raise NotImplementedError

    def array(self, split: str, layer: str) -> np.ndarray:
        if split not in self._inputs:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(self._inputs)}")
        if layer not in self._widths:
            raise ValueError(f"layer {layer!r} is not probed here; layers: {', '.join(self.layers)}")
        if (split, layer) not in self._held:
            self._compute(next(group for group in self._groups if layer in group))
        return self._held[(split, layer)]

    @property
    def groups(self) -> list[list[str]]:
        """The layers in the groups they are computed and held together in."""
        return [list(group) for group in self._groups]

    def labels(self, split: str, kind: str = "true") -> np.ndarray:
        key = f"{split}_{kind}"
        if key not in self._labels:
            raise ValueError(f"no {kind!r} labels for split {split!r} (train: true, corrupted; test: true)")
        return self._labels[key]

    def sizes(self) -> dict[str, int]:
        return dict(self._widths)

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(train_x, test_x)``: the network inputs of the training and test rows."""
        return self._inputs["train"], self._inputs["test"]

    def release(self) -> None:
        """Drop every held array (the probes keep what they still use)."""
        self._held.clear()

    def close(self) -> None:
        self.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _compute(self, group: list[str]) -> None:
        self._held.clear()  # one group alive at a time
        for split, x in self._inputs.items():
            arrays = {name: np.empty((len(x), self._widths[name]), dtype=np.float32) for name in group}
            for start, blocks in self.blocks(x, group):
                for name in group:
                    block = blocks[name]
                    arrays[name][start:start + len(block)] = block
            for name in group:
                self._held[(split, name)] = arrays[name]
        self.forward_passes += 1


class CheckpointActivations(HeldActivations):
    """The activations of one latentgen checkpoint at its probe layers (module docstring).

    ``model`` / ``meta``: the loaded checkpoint (``latentgen.training.checkpoints.load_checkpoint``) on the
    device the forward passes run on; ``dataset``: its ``LoadedDataset``; ``corrupted``: the
    training labels the model was trained on (``latentgen.probing.activations.corrupted_labels_for``).
    """

    def __init__(self, checkpoint: str | os.PathLike, model, meta: dict, dataset, corrupted: np.ndarray, *,
                 layers=None, batch_size: int = 500, batchnorm: str | None = None, memory_budget: int | None = None):
        check_activation_options(batch_size, batchnorm)
        self.model = model
        self.batch_size = int(batch_size)
        # None: the architecture's own mode (the authors' per-image statistics for ResNet-18)
        self.batchnorm = batchnorm = registry.activation_batchnorm(meta["arch"], batchnorm)
        layers = check_layers(model, layers)
        n_train = meta.get("train_subset") or len(dataset.train_y)
        inputs = {"train": dataset.train_x[:n_train], "test": dataset.test_x}
        labels = {"train_true": dataset.train_y[:n_train].numpy().astype(np.int64),
                  "train_corrupted": np.asarray(corrupted[:n_train], dtype=np.int64),
                  "test_true": dataset.test_y.numpy().astype(np.int64)}
        super().__init__(inputs, labels, activation_meta(Path(checkpoint), meta, model, layers, batchnorm),
                         layer_sizes(model, layers), memory_budget)

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, *, device="auto", data_root=None, prepared=None, labels=None,
             dataset=None, **options) -> "CheckpointActivations":
        """Load ``checkpoint`` on ``device`` with its dataset (or ``dataset``) and verified labels."""
        from latentgen.training.checkpoints import load_checkpoint

        model, meta = load_checkpoint(checkpoint, device=device)
        dataset = checkpoint_dataset(meta, data_root=data_root, prepared=prepared, dataset=dataset)
        corrupted = corrupted_labels_for(meta, dataset.train_y.numpy(), labels)
        return cls(checkpoint, model, meta, dataset, corrupted, **options)

    def blocks(self, x, group: list[str]):
        # the same passes as `latentgen activations` (its batch size and BatchNorm mode)
        with batchnorm_mode(self.model, self.batchnorm):
            yield from host_blocks(self.model, x, group, self.batch_size)
