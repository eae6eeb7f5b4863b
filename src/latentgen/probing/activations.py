"""Activation dumps: one checkpoint's probe-layer activations on the full train and test sets, in HDF5.

Layout (docs/architecture.md): datasets ``train/<layer>`` and ``test/<layer>`` (float32, N×d,
chunked, lossless ``lzf`` or ``gzip``), ``train/labels_true``, ``train/labels_corrupted`` and
``test/labels`` (int64); root attributes ``model, dataset, corruption, run, epoch, checkpoint,
layers`` (JSON), ``last_hidden, head, config_hash, versions`` (JSON), ``labels_sha256``,
``batchnorm``, ``checkpoint_meta`` (JSON) and, set last, ``complete = 1``. The file is written
under a temporary name and renamed, so a file at the final path is complete unless damaged later;
``open_activations`` refuses files without ``complete = 1`` and truncated files.

The model runs in ``eval()`` mode under ``no_grad`` in large batches. On the CPU each batch is
written out before the next is computed, so memory holds one batch per layer (plus HDF5's chunk
cache); on a GPU batches are gathered into blocks of about ``STREAM_BYTES`` that stream to pinned
host memory in one asynchronous copy each, while the device computes the next block.
The training images are the ones the model was trained on (its ``train_subset``, if any), with the
corrupted labels it was trained on: taken from ``labels`` (a label file) or the label file the
checkpoint recorded, or recomputed from the recorded seed, and always checked against the
checkpoint's ``labels_sha256``.

``batchnorm="per_sample"`` reproduces the authors' ResNet extraction (D9: no ``model.eval()``,
batch size 1, so BatchNorm normalises each image by its own per-channel statistics) in batches;
it is ResNet-18's default (``registry.activation_batchnorm``), ``eval`` a setting.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from latentgen import registry
from latentgen._io import atomic_path, package_versions
from latentgen.models.forward import check_layers, head_name, iter_activations

SPLITS = ("train", "test")
COMPRESSIONS, BATCHNORM_MODES = registry.ACTIVATION_COMPRESSIONS, registry.BATCHNORM_MODES
CHUNK_BYTES = 1 << 20  # about 1 MiB per chunk
STREAM_BYTES = 256 << 20  # on a GPU: activations gathered per device-to-host copy (two such pinned buffers)


def _per_sample_batchnorm(module, args, output):
    # BatchNorm in train mode on a batch of one image: each image's own per-channel mean and biased
    # variance over H×W. (With 1×1 feature maps the authors' code would fail; this gives the bias.)
    x = args[0]
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    out = (x - mean) / torch.sqrt(var + module.eps)
    if module.affine:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = out * module.weight.view(shape) + module.bias.view(shape)
    return out


@contextlib.contextmanager
def per_sample_batchnorm(model: nn.Module):
    """Within the block every BatchNorm layer of ``model`` normalises each image by its own statistics."""
    handles = [m.register_forward_hook(_per_sample_batchnorm) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def corrupted_labels_for(meta: dict, true_labels: np.ndarray, labels) -> np.ndarray:
    """The corrupted labels the checkpoint was trained on, verified by their digest."""
    from latentgen.training.loop import labels_digest, resolve_labels
    from latentgen.training.hyperparameters import TrainConfig

    config = TrainConfig(**{**meta["train_config"], "betas": tuple(meta["train_config"].get("betas", (0.9, 0.999)))})
    recorded = meta.get("labels")
    if labels is None and recorded not in (None, "generated"):
        if not Path(recorded).is_file():
            raise FileNotFoundError(f"the label file the checkpoint was trained with is missing: {recorded} "
                                    "(pass it with --labels)")
        labels = recorded
    corrupted, source = resolve_labels(config, true_labels, labels)
    if labels_digest(corrupted) != meta.get("labels_sha256"):
        what = f"label file {labels}" if labels is not None else f"labels corrupted with seed {config.label_seed}"
        raise ValueError(f"{what} differ from the labels the checkpoint was trained on (labels_sha256 mismatch)")
    return corrupted


def checkpoint_dataset(meta: dict, *, data_root=None, prepared=None, dataset=None):
    """The dataset a checkpoint was trained on (a ``LoadedDataset``): ``dataset`` if given, else from
    ``data_root`` / ``prepared``, else from where the checkpoint's run read it; checked by name."""
    from latentgen.data.datasets import load_dataset

    if dataset is None:
        recorded = meta.get("data") or {}
        if data_root is None and prepared is None:
            prepared = recorded.get("prepared") if recorded.get("prepared") and Path(recorded["prepared"]).is_file() else None
            data_root = recorded.get("data_root") if prepared is None else None
        dataset = load_dataset(meta["dataset"], data_root=data_root, prepared=prepared)
    if dataset.name != meta["dataset"]:
        raise ValueError(f"dataset {dataset.name!r} given for a checkpoint trained on {meta['dataset']!r}")
    return dataset


def check_activation_options(batch_size: int, batchnorm: str | None, compression: str = "none") -> None:
    """Refuse a bad batch size, compression or BatchNorm mode (None: the architecture's own)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if batchnorm is not None and batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {batchnorm!r}")


def activation_meta(checkpoint: Path, meta: dict, model, layers: list[str], batchnorm: str) -> dict:
    """The metadata of one checkpoint's activations (the HDF5 file's root attributes, JSON ones
    decoded): what a probe reads about them, whether from a file or from memory."""
    return {
        "model": meta["arch"], "dataset": meta["dataset"], "corruption": float(meta.get("corruption", 0.0)),
        "run": int(meta.get("run", 0)), "epoch": int(meta["epoch"]), "checkpoint": str(Path(checkpoint).resolve()),
        "layers": list(layers), "last_hidden": model.last_hidden, "head": head_name(model),
        "num_classes": int(meta["num_classes"]), "config_hash": str(meta.get("config_hash", "")),
        "labels_sha256": str(meta.get("labels_sha256", "")), "batchnorm": batchnorm,
        "versions": package_versions(), "checkpoint_meta": meta,
    }


def batchnorm_mode(model: nn.Module, batchnorm: str):
    """The context a forward pass for activations runs in (``per_sample``: the authors' ResNet passes)."""
    return per_sample_batchnorm(model) if batchnorm == "per_sample" else contextlib.nullcontext()


def dump_activations(checkpoint: str | os.PathLike, out_h5: str | os.PathLike, *, data_root=None, prepared=None,
                     labels=None, batch_size: int = 500, device: str | torch.device = "auto", layers=None,
                     compression: str = "lzf", batchnorm: str | None = None, dataset=None) -> Path:
    """Write the activations of ``checkpoint`` to ``out_h5`` (see the module docstring); returns the path.

    ``data_root``/``prepared`` default to what the checkpoint recorded; ``dataset`` may be an
    already loaded ``LoadedDataset``. ``batchnorm`` None: the architecture's own mode
    (``registry.activation_batchnorm``: the authors' ``per_sample`` for ResNet-18).
    """
    from latentgen.training.checkpoints import load_checkpoint

    check_activation_options(batch_size, batchnorm, compression)
    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint, device=device)
    batchnorm = registry.activation_batchnorm(meta["arch"], batchnorm)
    layers = check_layers(model, layers)
    dataset = checkpoint_dataset(meta, data_root=data_root, prepared=prepared, dataset=dataset)
    corrupted = corrupted_labels_for(meta, dataset.train_y.numpy(), labels)
    n_train = meta.get("train_subset") or len(dataset.train_y)

    inputs = {"train": dataset.train_x[:n_train], "test": dataset.test_x}
    out_h5 = Path(out_h5)
    with batchnorm_mode(model, batchnorm):
        with atomic_path(out_h5) as tmp:
            with h5py.File(tmp, "w") as h5:
                for split in SPLITS:
                    write_split(h5, split, inputs[split], model, layers, int(batch_size), compression)
                h5.create_dataset("train/labels_true", data=dataset.train_y[:n_train].numpy().astype(np.int64))
                h5.create_dataset("train/labels_corrupted", data=np.asarray(corrupted[:n_train], dtype=np.int64))
                h5.create_dataset("test/labels", data=dataset.test_y.numpy().astype(np.int64))
                attrs = activation_meta(checkpoint, meta, model, layers, batchnorm)
                for key in ("layers", "versions"):
                    attrs[key] = json.dumps(attrs[key])
                attrs["checkpoint_meta"] = json.dumps(meta, default=str)
                for key, value in attrs.items():
                    h5.attrs[key] = value
                h5.attrs["complete"] = 1  # last: its presence means every dataset above is written
    return out_h5


def host_blocks(model, x, layers, batch_size, block_bytes: int | None = None):
    """``(start, {layer: float32 array})`` blocks of ``iter_activations`` on the host.

    CPU: each batch as it comes. GPU: batches are gathered on the device into blocks of about
    ``block_bytes`` and each block is copied to pinned host memory in one transfer that does not
    block, so the device computes the next block while the host writes this one (two pinned
    buffers take turns; a buffer is reused only after its copy has finished and been written).
    """
    block_bytes = STREAM_BYTES if block_bytes is None else block_bytes
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda":
        for start, acts in iter_activations(model, x, layers, batch_size):  # an empty split: one empty batch
            yield start, {layer: acts[layer].cpu().numpy() for layer in layers}
        return
    pending = []  # (start, {layer: device tensor}) of the block being gathered
    in_flight = None  # (start, {layer: pinned host tensor}, event) of the block being copied
    buffers: list[dict] = [{}, {}]
    turn = 0

    def launch(block):
        nonlocal turn
        start = block[0][0]
        joined = {layer: torch.cat([acts[layer] for _, acts in block]) for layer in layers}
        host = {}
        for layer, tensor in joined.items():
            buffer = buffers[turn].get(layer)
            if buffer is None or buffer.shape[0] < tensor.shape[0] or buffer.shape[1:] != tensor.shape[1:]:
                buffer = buffers[turn][layer] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host[layer] = buffer[:tensor.shape[0]]
            host[layer].copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        turn = 1 - turn
        return start, host, event

    def finish(flight):
        start, host, event = flight
        event.synchronize()
        return start, {layer: tensor.numpy() for layer, tensor in host.items()}

    gathered = 0
    for start, acts in iter_activations(model, x, layers, batch_size):
        pending.append((start, acts))
        gathered += sum(acts[layer].numel() * 4 for layer in layers)
        if gathered >= block_bytes:
            flight = launch(pending)
            pending, gathered = [], 0
            if in_flight is not None:
                yield finish(in_flight)  # written while the device works on `flight` and beyond
            in_flight = flight
    if pending:
        flight = launch(pending)
        if in_flight is not None:
            yield finish(in_flight)
        in_flight = flight
    if in_flight is not None:
        yield finish(in_flight)


def write_split(h5, split, x, model, layers, batch_size, compression):
    n = len(x)
    datasets = {}
    for start, blocks in host_blocks(model, x, layers, batch_size):
        for layer in layers:
            block = blocks[layer]
            if layer not in datasets:
                d = block.shape[1]
                rows = max(1, min(n, CHUNK_BYTES // (4 * d)))
                datasets[layer] = h5.create_dataset(f"{split}/{layer}", shape=(n, d), dtype="float32",
                                                    chunks=(rows, d) if n else None,
                                                    compression=compression if n and compression != "none" else None)
            datasets[layer][start:start + len(block)] = block
        del blocks


class ActivationFile:
    """Read access to a complete activations file; use as a context manager.

    ``layers`` (probe order), ``meta`` (root attributes, JSON ones decoded), ``array(split, layer)``
    (the whole N×d float32 matrix), ``dataset(split, layer)`` (the lazy ``h5py.Dataset``),
    ``labels(split, kind)`` with kind ``"true"`` or ``"corrupted"`` (train only).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"activations file not found: {self.path}")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"activations file {self.path} is truncated or not an HDF5 file: "
                             f"{str(exc).splitlines()[0]}") from None
        try:
            self._check()
        except Exception:
            self._h5.close()
            raise

    def _check(self) -> None:
        attrs = self._h5.attrs
        if int(attrs.get("complete", 0)) != 1:
            raise ValueError(f"activations file {self.path} is incomplete (no complete=1 attribute); delete it and rerun")
        meta = {}
        for key, value in attrs.items():
            value = value.item() if isinstance(value, np.generic) else value
            value = value.decode() if isinstance(value, bytes) else value
            if key in ("layers", "versions", "checkpoint_meta") and isinstance(value, str):
                value = json.loads(value)
            meta[key] = value
        self.meta = meta
        self.layers = list(meta.get("layers") or [])
        sizes = {"train": self._rows("train/labels_true"), "test": self._rows("test/labels")}
        if self._rows("train/labels_corrupted") != sizes["train"]:
            raise ValueError(f"activations file {self.path}: train label arrays differ in length")
        for split in SPLITS:
            for layer in self.layers:
                rows = self._rows(f"{split}/{layer}")
                if rows != sizes[split]:
                    raise ValueError(f"activations file {self.path}: {split}/{layer} has {rows} rows, "
                                     f"the labels {sizes[split]}")

    def _rows(self, name: str) -> int:
        if name not in self._h5:
            raise ValueError(f"activations file {self.path} lacks dataset {name!r}")
        return self._h5[name].shape[0]

    def _name(self, split: str, layer: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} is not in {self.path}; layers: {', '.join(self.layers)}")
        return f"{split}/{layer}"

    def dataset(self, split: str, layer: str) -> h5py.Dataset:
        return self._h5[self._name(split, layer)]

    def array(self, split: str, layer: str) -> np.ndarray:
        try:
            return self.dataset(split, layer)[...]
        except OSError as exc:  # a damaged chunk
            raise ValueError(f"activations file {self.path}: cannot read {split}/{layer}: {exc}") from None

    def labels(self, split: str, kind: str = "true") -> np.ndarray:
        if split == "train" and kind in ("true", "corrupted"):
            return self._h5[f"train/labels_{kind}"][...]
        if split == "test" and kind == "true":
            return self._h5["test/labels"][...]
        raise ValueError(f"no {kind!r} labels for split {split!r} (train: true, corrupted; test: true)")

    def sizes(self) -> dict[str, int]:
        return {layer: int(self._h5[f"train/{layer}"].shape[1]) for layer in self.layers}

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "ActivationFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_activations(path: str | os.PathLike) -> ActivationFile:
    """Open a complete activations file (``with open_activations(p) as acts: ...``)."""
    return ActivationFile(path)
