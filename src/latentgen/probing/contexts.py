"""What a probe family reads (``latentgen.probing.families``): one layer of one checkpoint fit on one
label set (:class:`LayerContext`), or the whole checkpoint (:class:`CheckpointContext`), with the
probing's options; and how a family says it cannot fit (:class:`ProbeFitError`)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from latentgen import registry
from latentgen.contracts import SPLITS, ProbeRow

logger = logging.getLogger("latentgen.probing.checkpoint")


@dataclass(frozen=True)
class ProbeOptions:
    """The settings every family reads (validated by :func:`probe_checkpoint`)."""

    variance: float = registry.MASC_VARIANCE
    sign: str = "all"  # VeLPIC's sign rule (latentgen.probing.subspaces.SIGN_MODES)
    batch_size: int = 1000  # images per forward pass of a network a family evaluates
    device: object = "cpu"  # a resolved torch.device
    seed: int = registry.LOGISTIC_SEED  # the logistic-regression probe's seed (initial weights, batch order)
    # further thresholds the shared decomposition serves (the sensitivity family's)
    extra_variances: tuple = ()
    extra_n_components: tuple = ()


class SubspaceProbes(NamedTuple):
    masc: object
    velpic: object


class ProbeFitError(ValueError):
    """A family cannot fit this layer with this label set; the message says why. Its rows are
    written with accuracy NaN and the reason is logged."""


def accuracy(predicted, labels) -> float:
    """Fraction of ``predicted`` equal to ``labels``; NaN for no rows."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


@contextlib.contextmanager
def logged_warnings(where: str):
    """Every warning raised inside the block is logged as ``where: Category: message`` (and not
    shown through ``warnings`` as well): nothing a family warns about is lost or silenced."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                logger.warning("%s: %s: %s", where, w.category.__name__, w.message)


@dataclass(eq=False)
class LayerContext:
    """One layer of one checkpoint's activations, fit on one label set: what a layer family reads.

    :meth:`with_labels` gives the same layer for another label set; the views of one layer share
    its arrays and its neighbour search (``shared``), each has its own fit."""

    acts: object  # the open latentgen.probing.activations.ActivationFile
    name: str
    key: tuple  # (model, dataset, corruption, run, epoch)
    labels: dict  # split -> labels: test, train_corrupted, train_true
    classes: np.ndarray
    options: ProbeOptions
    fit_labels: str = "corrupted"
    fit_y: np.ndarray | None = None  # the training labels fits use (default: those of fit_labels)
    shared: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.fit_y is None:
            if self.fit_labels not in registry.FIT_LABEL_SETS:
                raise ValueError(f"label set {self.fit_labels!r} needs its training labels (fit_y)")
            self.fit_y = self.labels[f"train_{self.fit_labels}"]
        self.predictions: dict = {}

    def _array(self, split: str) -> np.ndarray:
        if split not in self.shared:
            self.shared[split] = self.acts.array(split, self.name)
        return self.shared[split]

    @property
    def train(self) -> np.ndarray:
        """The training activations (N×d float32), read on first use."""
        return self._array("train")

    @property
    def test(self) -> np.ndarray:
        """The test activations, read on first use."""
        return self._array("test")

    def with_labels(self, fit_labels: str, fit_y: np.ndarray | None = None) -> "LayerContext":
        """This layer fit on another label set (sharing the arrays)."""
        return LayerContext(self.acts, self.name, self.key, self.labels, self.classes, self.options, fit_labels,
                            fit_y, self.shared)

    @cached_property
    def subspaces(self):
        """The class subspaces of the training rows under ``fit_y`` (``latentgen.probing.subspaces.ClassSubspaces``):
        one decomposition, made once, serving MASC, VeLPIC and the sensitivity thresholds."""
        from latentgen.probing.subspaces import ClassSubspaces

        o = self.options
        return ClassSubspaces(o.variance, None, o.device, o.extra_variances, o.extra_n_components).fit(
            self.train, self.fit_y, classes=self.classes)

    @cached_property
    def probes(self) -> SubspaceProbes:
        """MASC and VeLPIC from :attr:`subspaces` (``latentgen.probing.subspaces.fit_probes``' two probes)."""
        from latentgen.probing.masc_velpic import MASC, VeLPIC

        return SubspaceProbes(MASC.from_subspaces(self.subspaces), VeLPIC.from_subspaces(self.subspaces,
                                                                                        self.options.sign))

    def row(self, probe: str, split: str, value: float, layer: str | None = None) -> ProbeRow:
        return ProbeRow(*self.key, self.name if layer is None else layer, probe, self.fit_labels, split, value)

    def predict(self, estimator, split: str, cache_key=None) -> np.ndarray:
        """``estimator.predict`` of the ``train`` or ``test`` rows; with ``cache_key``, made once
        per key (two probes with the same key predict identically)."""
        key = None if cache_key is None else (cache_key, split)
        if key is not None and key in self.predictions:
            return self.predictions[key]
        predicted = estimator.predict(self.train if split == "train" else self.test)
        if key is not None:
            self.predictions[key] = predicted
        return predicted

    def score(self, probe: str, estimator, splits: Sequence[str] = SPLITS, cache_key=None) -> list[ProbeRow]:
        """The rows of ``estimator`` (anything with ``predict``) on ``splits``."""
        needed = dict.fromkeys(split.split("_")[0] for split in splits)
        predicted = {part: self.predict(estimator, part, cache_key) for part in needed}
        return self.rows_from_predictions(probe, predicted, splits=splits)

    def rows_from_predictions(self, probe: str, predicted: dict, layer: str | None = None,
                              splits: Sequence[str] = SPLITS) -> list[ProbeRow]:
        """Rows from predictions ``{"test": ..., "train": ...}``, one per split of ``splits``."""
        return [self.row(probe, split, accuracy(predicted[split.split("_")[0]], self.labels[split]), layer)
                for split in splits]

    def release_fit(self) -> None:
        """Drop this view's fit and predictions."""
        for attr in ("subspaces", "probes"):
            self.__dict__.pop(attr, None)
        self.predictions.clear()

    def release(self, keep: Iterable[str] = ()) -> None:
        """Drop this view's fit and predictions (unless ``probes`` is in ``keep``) and the layer's
        shared arrays and neighbour search (all but ``keep``: ``train``, ``test``, ...)."""
        keep = set(keep)
        if "probes" not in keep:
            self.release_fit()
        for name in list(self.shared):
            if name not in keep:
                del self.shared[name]


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
    layers: dict = field(default_factory=dict)  # name -> LayerContext (fit on the corrupted labels)
    fit_labels: tuple = registry.DEFAULT_FIT_LABELS  # the label sets every family is fit on
    label_sets: dict = field(default_factory=dict)  # label set -> training labels (None: the file's)
    velpics: dict = field(default_factory=dict)  # label set -> VeLPIC of the last hidden layer, kept

    @property
    def last_hidden_name(self) -> str | None:
        return self.meta.get("last_hidden")

    def layer(self, name: str) -> LayerContext:
        """The context of layer ``name``, fit on the corrupted labels."""
        if name not in self.layers:
            self.layers[name] = LayerContext(self.acts, name, self.key, self.labels, self.classes, self.options)
        return self.layers[name]

    def hidden(self, fit_labels: str = "corrupted") -> LayerContext:
        """The last hidden layer (the head's input, VeLPIC's transfer layer) fit on ``fit_labels``."""
        base = self.layer(self.last_hidden_name)
        return base if fit_labels == "corrupted" else base.with_labels(fit_labels, self.label_sets.get(fit_labels))

    def velpic(self, fit_labels: str = "corrupted"):
        """VeLPIC of the last hidden layer fit on ``fit_labels``: the one the layer families used
        (kept), else fitted now (from the same decomposition MASC would use)."""
        if fit_labels not in self.velpics:
            self.velpics[fit_labels] = self.hidden(fit_labels).probes.velpic
        return self.velpics[fit_labels]

    @property
    def last_hidden(self) -> LayerContext:
        """The last hidden layer fit on the corrupted labels."""
        return self.hidden("corrupted")

    def load_model(self):
        """``(model, checkpoint meta)`` on the probing device, checked against the activations file
        (activations held in memory come with their network: that one)."""
        from latentgen.training.checkpoints import load_checkpoint

        if getattr(self.acts, "model", None) is not None:
            return self.acts.model, self.meta["checkpoint_meta"]
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
        refused when their true training labels differ from the file's. Activations held in
        memory come with their images: those."""
        from latentgen.data.datasets import load_dataset

        if hasattr(self.acts, "images"):
            return self.acts.images()
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
