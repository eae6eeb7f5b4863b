"""Probing one checkpoint: its activation file in, tidy accuracy rows out.

:func:`probe_checkpoint` runs the probe families of :data:`latentgen.registry.PROBE_FAMILIES`
on one activations file (``latentgen activations``) and returns one :class:`ProbeRow` per
(layer, probe, split); :func:`write_probe_csv` writes them as the tidy CSV of ``latentgen probe``.
Splits: ``test`` (true labels), ``train_corrupted`` and ``train_true`` (the training rows against
the labels the model was trained with and against the true ones); accuracy is a fraction.

**A family is one function** named by its registry entry's ``impl``:

- a *layer* family (``needs_checkpoint=False``) is ``rows(layer: LayerContext) -> list[ProbeRow]``,
  called once per layer of the file, in the file's layer order. The context holds the layer's
  train / test arrays (read on first use), the labels, the classes, the options and the shared
  MASC / VeLPIC fit (:attr:`LayerContext.probes`: one decomposition per layer, made on first use
  and shared by every family that asks). ``layer.score(name, estimator)`` turns anything with
  ``predict`` into the three rows; a new probe (logistic regression, NCM, k-NN, LDA, QDA, ...)
  fits its estimator on ``layer.train`` / ``layer.labels["train_corrupted"]`` and returns
  ``layer.score("name", estimator)``.
- a *checkpoint* family (``needs_checkpoint=True``) is ``rows(checkpoint: CheckpointContext) ->
  list[ProbeRow]``, called once after the layers. The context gives the checkpoint's path
  (checked to exist before any probing), the activation file's metadata and labels, the context of
  the last hidden layer (its fitted VeLPIC is the one the layer families used) and the network's
  images (:meth:`CheckpointContext.images`).

Rows come in a fixed order whatever order the families are asked in: for each layer the layer
families in registry order, then the checkpoint families in registry order. With the default
families that is today's ``latentgen probe`` CSV: per layer MASC then VeLPIC, then ``transfer``
and ``transfer_bias`` on the last hidden layer.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import astuple, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np

from latentgen import registry

# the splits of every probe, in row order: (split, which activations it predicts, which labels)
SPLITS = ("test", "train_corrupted", "train_true")


@dataclass(frozen=True)
class ProbeRow:
    """One tidy row: a probe's accuracy on one split of one layer of one checkpoint."""

    model: str
    dataset: str
    corruption: float
    run: int
    epoch: int
    layer: str
    probe: str
    split: str
    accuracy: float

    def values(self) -> tuple:
        return astuple(self)


COLUMNS = tuple(f.name for f in fields(ProbeRow))


@dataclass(frozen=True)
class ProbeOptions:
    """The settings every family reads (validated by :func:`probe_checkpoint`)."""

    variance: float = 0.99  # MASC's (and VeLPIC's) subspace variance threshold
    sign: str = "all"  # VeLPIC's sign rule (latentgen.probes.SIGN_MODES)
    batch_size: int = 1000  # images per forward pass of a network a family evaluates
    device: object = "cpu"  # a resolved torch.device


class SubspaceProbes(NamedTuple):
    masc: object
    velpic: object


def accuracy(predicted, labels) -> float:
    """Fraction of ``predicted`` equal to ``labels``; NaN for no rows."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


@dataclass(eq=False)
class LayerContext:
    """One layer of one checkpoint's activations: what a layer family reads."""

    acts: object  # the open latentgen.activations.ActivationFile
    name: str
    key: tuple  # (model, dataset, corruption, run, epoch)
    labels: dict  # split -> labels: test, train_corrupted, train_true
    classes: np.ndarray
    options: ProbeOptions

    @cached_property
    def train(self) -> np.ndarray:
        """The training activations (N×d float32), read on first use."""
        return self.acts.array("train", self.name)

    @cached_property
    def test(self) -> np.ndarray:
        """The test activations, read on first use."""
        return self.acts.array("test", self.name)

    @cached_property
    def probes(self) -> SubspaceProbes:
        """MASC and VeLPIC fitted on the training rows with the corrupted labels, from one
        decomposition (``latentgen.probes.fit_probes``); made once, on first use."""
        from latentgen.probes import fit_probes

        o = self.options
        return SubspaceProbes(*fit_probes(self.train, self.labels["train_corrupted"], variance=o.variance,
                                          sign=o.sign, classes=self.classes, device=o.device))

    def row(self, probe: str, split: str, value: float, layer: str | None = None) -> ProbeRow:
        return ProbeRow(*self.key, self.name if layer is None else layer, probe, split, value)

    def score(self, probe: str, estimator) -> list[ProbeRow]:
        """The rows of ``estimator`` (anything with ``predict``) on the test and training rows."""
        predicted = {"test": estimator.predict(self.test), "train": estimator.predict(self.train)}
        return self.rows_from_predictions(probe, predicted)

    def rows_from_predictions(self, probe: str, predicted: dict, layer: str | None = None) -> list[ProbeRow]:
        """Rows from predictions ``{"test": ..., "train": ...}``, one per split in :data:`SPLITS`."""
        return [self.row(probe, split, accuracy(predicted[split.split("_")[0]], self.labels[split]), layer)
                for split in SPLITS]

    def release(self, keep: Iterable[str] = ()) -> None:
        """Drop the cached arrays (all but ``keep``) and, unless kept, the fitted probes."""
        for attr in ("train", "test", "probes"):
            if attr not in keep:
                self.__dict__.pop(attr, None)


@dataclass(eq=False)
class CheckpointContext:
    """One checkpoint: what a checkpoint family reads."""

    acts: object
    meta: dict  # the activation file's metadata
    key: tuple
    labels: dict
    classes: np.ndarray
    options: ProbeOptions
    checkpoint: Path | None  # the checkpoint file (checked to exist when a family needs it)
    data_root: str | os.PathLike | None = None
    prepared: str | os.PathLike | None = None
    layers: dict = field(default_factory=dict)  # name -> LayerContext, kept for checkpoint families

    @property
    def last_hidden_name(self) -> str | None:
        return self.meta.get("last_hidden")

    def layer(self, name: str) -> LayerContext:
        """The context of layer ``name`` (the one the layer families used, when kept)."""
        if name not in self.layers:
            self.layers[name] = LayerContext(self.acts, name, self.key, self.labels, self.classes, self.options)
        return self.layers[name]

    @property
    def last_hidden(self) -> LayerContext:
        """The last hidden layer: the head's input, VeLPIC's transfer layer."""
        return self.layer(self.last_hidden_name)

    def load_model(self):
        """``(model, checkpoint meta)`` on the probing device, checked against the activations file."""
        from latentgen.training import load_checkpoint

        model, ckpt_meta = load_checkpoint(self.checkpoint, device=self.options.device)
        for name in ("arch", "dataset", "epoch"):
            expected = self.meta["model" if name == "arch" else name]
            if ckpt_meta[name] != expected:
                raise ValueError(f"checkpoint {self.checkpoint} has {name} {ckpt_meta[name]!r} but the activations "
                                 f"file has {expected!r}")
        return model, ckpt_meta

    def images(self, ckpt_meta: dict):
        """``(train_x, test_x)``: the network inputs of the file's training and test rows.

        From ``data_root`` / ``prepared``, else from where the checkpoint's run read its data;
        refused when their true training labels differ from the file's."""
        from latentgen.datasets import load_dataset

        data_root, prepared = self.data_root, self.prepared
        labels_true = self.labels["train_true"]
        n_train = len(labels_true)
        if data_root is None and prepared is None:  # where the checkpoint's run read its data
            recorded = ckpt_meta.get("data") or {}
            if recorded.get("prepared") and Path(recorded["prepared"]).is_file():
                prepared = recorded["prepared"]
            else:
                data_root = recorded.get("data_root")
        data = load_dataset(ckpt_meta["dataset"], data_root=data_root, prepared=prepared)
        if len(data.train_y) < n_train or not np.array_equal(data.train_y[:n_train].numpy(), labels_true):
            raise ValueError(f"the {ckpt_meta['dataset']} images found do not match the activations file "
                             "(true training labels differ); pass the right --data-root or --prepared")
        return data.train_x[:n_train], data.test_x


# --------------------------------------------------------------------------------------------
# the families


def masc_rows(layer: LayerContext) -> list[ProbeRow]:
    """MASC (quadratic class-subspace probe) on one layer."""
    return layer.score("masc", layer.probes.masc)


def velpic_rows(layer: LayerContext) -> list[ProbeRow]:
    """VeLPIC (one signed principal vector per class) on one layer."""
    return layer.score("velpic", layer.probes.velpic)


def transfer_rows(checkpoint: CheckpointContext) -> list[ProbeRow]:
    """The network with VeLPIC's class vectors of the last hidden layer as its head, run on the
    training and test images: ``transfer`` (bias zeroed) and, where the head has a bias,
    ``transfer_bias`` (trained bias kept)."""
    from latentgen.forward import predict
    from latentgen.transfer import transfer_velpic

    hidden = checkpoint.last_hidden
    velpic = hidden.probes.velpic
    model, ckpt_meta = checkpoint.load_model()
    train_x, test_x = checkpoint.images(ckpt_meta)
    head = checkpoint.meta.get("head") or model.head
    variants = [("transfer", False)]
    if model.get_submodule(head).bias is not None:
        variants.append(("transfer_bias", True))
    o = checkpoint.options
    rows = []
    for name, keep_bias in variants:
        edited = transfer_velpic(model, head, velpic, keep_bias=keep_bias).eval()
        predicted = {"test": predict(edited, test_x, o.batch_size, o.device).numpy(),
                     "train": predict(edited, train_x, o.batch_size, o.device).numpy()}
        rows += hidden.rows_from_predictions(name, predicted)
        if not keep_bias:
            same = int(np.sum(predicted["test"] == velpic.predict(hidden.test)))
            print(f"transfer agrees with VeLPIC on {same}/{len(test_x)} test rows", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------------------------
# the driver


def resolve_families(families: Sequence[str] | str | None = None) -> list[registry.ProbeFamily]:
    """The registry entries of ``families`` (names, or one comma-separated string) in registry
    order; ``None``: the registry's defaults. An unknown name is a ValueError naming it."""
    if families is None:
        return [f for f in registry.PROBE_FAMILIES.values() if f.default]
    if isinstance(families, str):
        families = families.split(",")
    names = [str(n).strip() for n in families]
    if not names or any(not n for n in names):
        raise ValueError(f"empty probe family name in {','.join(names)!r}; known: {', '.join(registry.PROBE_FAMILIES)}")
    for name in names:
        registry.get_probe_family(name)  # ValueError naming it and the known ones
    return [f for n, f in registry.PROBE_FAMILIES.items() if n in names]


def probe_checkpoint(activations, *, families: Sequence[str] | str | None = None,
                     checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                     prepared: str | os.PathLike | None = None, variance: float = 0.99, sign: str = "all",
                     batch_size: int = 1000, device="auto") -> list[ProbeRow]:
    """Probe one checkpoint's activations file (a path or an open ``ActivationFile``).

    ``families``: probe family names of the registry (default: its defaults, MASC, VeLPIC and the
    transfer). ``checkpoint``: the network for checkpoint families (default: the one the file
    recorded); ``data_root`` / ``prepared``: its images (default: where the checkpoint's run read
    them). ``variance`` / ``sign``: MASC's threshold and VeLPIC's sign rule; ``batch_size``:
    images per forward pass; ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    from latentgen.activations import ActivationFile, open_activations
    from latentgen.devices import resolve_device
    from latentgen.probes import SIGN_MODES, check_variance

    chosen = resolve_families(families)
    variance = check_variance(variance)
    if sign not in SIGN_MODES:
        raise ValueError(f"unknown sign mode {sign!r}; choose one of {', '.join(SIGN_MODES)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    options = ProbeOptions(variance, sign, int(batch_size), resolve_device(device))
    loaded = [(f, registry.load(f.impl)) for f in chosen]
    layer_families = [impl for f, impl in loaded if not f.needs_checkpoint]
    checkpoint_families = [impl for f, impl in loaded if f.needs_checkpoint]

    if isinstance(activations, ActivationFile):
        return _probe(activations, layer_families, checkpoint_families, options, checkpoint, data_root, prepared)
    with open_activations(activations) as acts:
        return _probe(acts, layer_families, checkpoint_families, options, checkpoint, data_root, prepared)


def _probe(acts, layer_families: list[Callable], checkpoint_families: list[Callable], options: ProbeOptions,
           checkpoint, data_root, prepared) -> list[ProbeRow]:
    meta = acts.meta
    path = None
    if checkpoint_families:
        path = Path(checkpoint or meta.get("checkpoint") or "")
        if not path.is_file():  # fail before hours of probing
            raise FileNotFoundError(f"checkpoint for the transfer not found: {path} (pass --checkpoint, "
                                    "or --no-transfer)")
    key = (meta["model"], meta["dataset"], meta["corruption"], meta["run"], meta["epoch"])
    labels = {"test": acts.labels("test"), "train_corrupted": acts.labels("train", "corrupted"),
              "train_true": acts.labels("train", "true")}
    classes = np.arange(int(meta["num_classes"]))
    context = CheckpointContext(acts, meta, key, labels, classes, options, path, data_root, prepared)
    last_hidden = context.last_hidden_name
    if checkpoint_families and last_hidden not in acts.layers:
        raise ValueError(f"the last hidden layer {last_hidden!r} is not in {acts.path}; "
                         "the transfer needs it (or pass --no-transfer)")

    rows: list[ProbeRow] = []
    if layer_families:
        for name in acts.layers:
            layer = context.layer(name)
            for family in layer_families:
                rows += family(layer)
            if checkpoint_families and name == last_hidden:
                layer.release(keep=("test", "probes"))  # what the transfer reads again
            else:
                layer.release()
                del context.layers[name]
    for family in checkpoint_families:
        rows += family(context)
    return rows


def write_probe_csv(rows: Iterable[ProbeRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as the tidy CSV (header :data:`COLUMNS`; floats as ``repr``), atomically."""
    from latentgen._io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in rows:
                values = row.values() if isinstance(row, ProbeRow) else row
                writer.writerow([repr(v) if isinstance(v, float) else v for v in values])
    return Path(path)
