"""Probing one checkpoint: its activation file in, tidy accuracy rows out.

:func:`probe_checkpoint` runs the probe families of :data:`latentgen.registry.PROBE_FAMILIES`
on one activations file (``latentgen activations``) and returns one :class:`ProbeRow` per
(layer, probe, fit labels, split); :func:`write_probe_csv` writes them as the tidy CSV of
``latentgen probe`` (columns :data:`COLUMNS`). Splits: ``test`` (true labels),
``train_corrupted`` and ``train_true`` (the training rows against the labels the model was
trained with and against the true ones); accuracy is a fraction.

**Label sets.** Every family is fit on each label set asked for (``fit_labels``): ``corrupted``
(the labels the model was trained with; the TMLR paper's and the default) and ``true`` (the
2025 paper's true-label subspaces, SPEC §6.7 -exp2). Families whose registry entry has
``extra_labels`` (MASC, VeLPIC) are also fit on the corrupted labels of other label files
(``extra_labels={C: path}``, rows ``fit_labels = corrupted@C``: the clean model probed with
degree C's corrupted-label subspaces, -exp3). The splits are always scored against the
checkpoint's own labels.

**A family is one function** named by its registry entry's ``impl``:

- a *layer* family (``needs_checkpoint=False``) is ``rows(layer: LayerContext) -> list[ProbeRow]``,
  called once per layer of the file and label set, in the file's layer order. The context holds
  the layer's train / test arrays (read on first use, shared by the label sets of the layer),
  the labels, the label set to fit on (``layer.fit_labels``, its training labels ``layer.fit_y``),
  the classes, the options and the shared MASC / VeLPIC fit (:attr:`LayerContext.probes`: one
  decomposition per layer and label set, made on first use and shared by every family that asks,
  the sensitivity thresholds included). ``layer.score(name, estimator, splits)`` turns anything
  with ``predict`` into rows. Families flagged ``skip_input`` are not called on the ``input``
  layer; ``test_only`` ones score the test split only.
- a *checkpoint* family (``needs_checkpoint=True``) is ``rows(checkpoint: CheckpointContext) ->
  list[ProbeRow]``, called once after the layers. The context gives the checkpoint's path
  (checked to exist before any probing), the activation file's metadata and labels, the last
  hidden layer per label set (:meth:`CheckpointContext.hidden`; its fitted VeLPIC is the one
  the layer families used) and the network's images (:meth:`CheckpointContext.images`).

**A family that cannot fit a layer** (fewer training rows than classes, a QDA class with fewer
than 2 rows, ...) raises :class:`ProbeFitError` (or LAPACK's
``LinAlgError``): its rows for that layer and label set are written with accuracy NaN and the
reason is logged (logger ``latentgen.probing.checkpoint``), naming family, layer and label set. Every
warning a family raises (scikit-learn's included) is logged the same way, never silenced.

Rows come in a fixed order whatever order the families and label sets are asked in: for each
layer the layer families in registry order, each with its label sets in order (``corrupted``,
``true``, then ``corrupted@C`` by C), then the checkpoint families in registry order. With the
default families that is today's ``latentgen probe`` CSV plus the ``fit_labels`` column: per
layer MASC then VeLPIC, then ``transfer`` and ``transfer_bias`` on the last hidden layer.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import warnings
from dataclasses import astuple, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from latentgen import registry

logger = logging.getLogger("latentgen.probing.checkpoint")

# the splits of every probe, in row order: (split, which activations it predicts, which labels)
SPLITS = ("test", "train_corrupted", "train_true")
TEST_ONLY = ("test",)


@dataclass(frozen=True)
class ProbeRow:
    """One tidy row: a probe's accuracy on one split of one layer of one checkpoint, fit on one
    label set (``fit_labels``: ``corrupted``, ``true`` or ``corrupted@C``)."""

    model: str
    dataset: str
    corruption: float
    run: int
    epoch: int
    layer: str
    probe: str
    fit_labels: str
    split: str
    accuracy: float

    def values(self) -> tuple:
        return astuple(self)


COLUMNS = tuple(f.name for f in fields(ProbeRow))


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
        from latentgen.probing.subspaces import MASC, VeLPIC

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


def resolve_fit_labels(fit_labels: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The label sets of ``fit_labels`` (names, or one comma-separated string) in the order of
    :data:`latentgen.registry.FIT_LABEL_SETS`; ``None``: ``corrupted``. An unknown name is a
    ValueError naming it."""
    if fit_labels is None:
        return registry.DEFAULT_FIT_LABELS
    if isinstance(fit_labels, str):
        fit_labels = fit_labels.split(",")
    names = [str(n).strip() for n in fit_labels]
    unknown = [n for n in names if n not in registry.FIT_LABEL_SETS]
    if not names or unknown:
        hint = (" (corrupted@C label sets come from another label file: extra_labels / --extra-labels C=FILE)"
                if any(n.startswith(registry.EXTRA_LABEL_PREFIX) for n in unknown) else "")
        raise ValueError(f"unknown label set {', '.join(map(repr, unknown or ['']))}; known: "
                         f"{', '.join(registry.FIT_LABEL_SETS)}{hint}")
    return tuple(n for n in registry.FIT_LABEL_SETS if n in names)


def extra_label_name(degree: float) -> str:
    """``corrupted@C``: the label set of degree C's corrupted labels."""
    return f"{registry.EXTRA_LABEL_PREFIX}{float(degree)!r}"


def read_extra_labels(extra_labels, activations_path, labels_true: np.ndarray, dataset: str) -> dict[str, np.ndarray]:
    """``{corrupted@C: training labels}`` from ``{C: label file}`` (or ``["C=FILE", ...]``), sorted by C.

    Each file must be degree C's (its recorded degree) of the same dataset, and its true labels
    must be the activation file's training labels (the same images): else a ValueError naming both
    files."""
    from latentgen.data.labels import read_label_file

    if isinstance(extra_labels, Mapping):
        items = list(extra_labels.items())
    else:
        items = []
        for text in extra_labels:
            degree, sep, path = str(text).partition("=")
            if not sep or not path:
                raise ValueError(f"extra label set {text!r} is not C=LABELS.npz")
            items.append((degree, path))
    sets: dict[float, tuple[str, np.ndarray]] = {}
    for degree, path in items:
        try:
            c = float(degree)
        except (TypeError, ValueError):
            raise ValueError(f"extra label set {degree!r}={path}: the degree is not a number") from None
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"extra label set {degree!r}={path}: the degree must be in [0, 1]")
        if c in sets:
            raise ValueError(f"extra label sets name degree {c!r} twice")
        lf = read_label_file(path)
        if not math.isclose(lf.degree, c, abs_tol=1e-9):
            raise ValueError(f"label file {path} holds degree {lf.degree!r} labels, not {c!r}")
        if lf.dataset and lf.dataset != dataset:
            raise ValueError(f"label file {path} is for {lf.dataset!r} but the activations file "
                             f"{activations_path} is {dataset!r}")
        n = len(labels_true)
        if len(lf.true) < n or not np.array_equal(lf.true[:n], labels_true):
            raise ValueError(f"label file {path} and the activations file {activations_path} disagree on the true "
                             f"labels of the {n} training images: they are not the same images")
        sets[c] = (extra_label_name(c), lf.corrupted[:n])
    return dict(sets[c] for c in sorted(sets))


def probe_checkpoint(activations, *, families: Sequence[str] | str | None = None,
                     fit_labels: Sequence[str] | str | None = None, extra_labels=None,
                     checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                     prepared: str | os.PathLike | None = None, variance: float = registry.MASC_VARIANCE, sign: str = "all",
                     batch_size: int = 1000, device="auto", seed: int = registry.LOGISTIC_SEED,
                     input_cache=None) -> list[ProbeRow]:
    """Probe one checkpoint's activations: a file (a path or an open ``ActivationFile``) or
    activations held in memory (``latentgen.probing.checkpoint_activations.CheckpointActivations``).

    ``families``: probe family names of the registry (default: its defaults, MASC, VeLPIC and the
    transfer). ``fit_labels``: the label sets every family is fit on (``corrupted``, ``true``;
    default ``corrupted``). ``extra_labels``: ``{C: label file}`` whose corrupted labels MASC and
    VeLPIC are also fit on (rows ``corrupted@C``). ``checkpoint``: the network for checkpoint
    families (default: the one the file recorded); ``data_root`` / ``prepared``: its images
    (default: where the checkpoint's run read them). ``variance`` / ``sign``: MASC's threshold and
    VeLPIC's sign rule; ``batch_size``: images per forward pass; ``device``: ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``; ``seed``: the logistic-regression probe's; ``input_cache``: where
    the ``input`` layer's rows are reused from (``latentgen.probing.run.InputRowCache``).
    """
    from latentgen.probing.activations import open_activations
    from latentgen.devices import resolve_device
    from latentgen.probing.subspaces import SIGN_MODES, check_variance

    chosen = resolve_families(families)
    label_sets = resolve_fit_labels(fit_labels)
    variance = check_variance(variance)
    if sign not in SIGN_MODES:
        raise ValueError(f"unknown sign mode {sign!r}; choose one of {', '.join(SIGN_MODES)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    extra_variances, extra_n_components = (), ()
    if any(f.name == "masc_sensitivity" for f in chosen):
        extra_variances = tuple(v for _, v, n in registry.MASC_SENSITIVITY if n is None)
        extra_n_components = tuple(n for _, _, n in registry.MASC_SENSITIVITY if n is not None)
    options = ProbeOptions(variance, sign, int(batch_size), resolve_device(device), int(seed), extra_variances,
                           extra_n_components)
    loaded = [(f, registry.load(f.impl)) for f in chosen]

    if not isinstance(activations, (str, os.PathLike)):  # an open file, or activations in memory
        return _probe(activations, loaded, label_sets, extra_labels, options, checkpoint, data_root, prepared,
                      input_cache)
    with open_activations(activations) as acts:
        return _probe(acts, loaded, label_sets, extra_labels, options, checkpoint, data_root, prepared, input_cache)


def _failed_rows(layer: LayerContext, family: registry.ProbeFamily, where: str, exc: Exception) -> list[ProbeRow]:
    logger.warning("%s: cannot fit (%s: %s); its rows are NaN", where, type(exc).__name__, exc)
    splits = TEST_ONLY if family.test_only else SPLITS
    return [layer.row(name, split, float("nan")) for name in family.probe_names for split in splits]


def _run_family(impl: Callable, family: registry.ProbeFamily, context, layer: LayerContext | None = None):
    """``impl(context)`` with its warnings logged and, for a layer family, a fit it cannot make
    turned into NaN rows (logged)."""
    where = family.name if layer is None else f"{family.name} on layer {layer.name!r} (fit_labels={layer.fit_labels})"
    with logged_warnings(where):
        if layer is None:
            return impl(context)
        try:
            return impl(context)
        except (ProbeFitError, np.linalg.LinAlgError) as exc:
            return _failed_rows(layer, family, where, exc)


def probe_layer(base: LayerContext, layer_families: list, sets: Mapping[str, np.ndarray | None],
                label_sets: Sequence[str], velpics: dict | None = None,
                on_family: Callable[[str, str, float], None] | None = None, input_cache=None) -> list[ProbeRow]:
    """The rows of the layer families ``[(registry entry, impl), ...]`` on one layer (``base``: its
    context on the corrupted labels), fit on each label set of ``sets`` (``{name: training labels
    or None}``; a name not in ``label_sets`` only for families with ``extra_labels``), in row
    order. One decomposition at a time: the families that share it (``shares_fit``) run first
    on each label set, then it is released, then the others run. ``velpics``: where to
    keep each label set's VeLPIC (the transfer's); ``on_family(family, label set, seconds)`` is
    told each family's wall time. ``input_cache`` (``latentgen.probing.run.InputRowCache``): rows of
    the ``input`` layer, which no checkpoint changes, reused instead of refit. The layer's arrays
    are released at the end (but ``test`` when VeLPICs are kept)."""
    import time

    produced: dict[tuple[int, int], list[ProbeRow]] = {}
    # the families of the shared decomposition first, so that it is released before the others
    order = sorted(range(len(layer_families)), key=lambda i: (not layer_families[i][0].shares_fit, i))
    for j, (label_set, fit_y) in enumerate(sets.items()):
        view = base if label_set == "corrupted" else base.with_labels(label_set, fit_y)
        for i in order:
            family, impl = layer_families[i]
            if label_set not in label_sets and not family.extra_labels:
                continue
            if family.skip_input and base.name == registry.INPUT_LAYER:
                continue
            cached = input_cache is not None and base.name == registry.INPUT_LAYER
            if cached and (rows := input_cache.get(view, family.name)) is not None:
                produced[(i, j)] = rows
                continue
            if not family.shares_fit:
                _keep_velpic(view, label_set, label_sets, velpics)
                view.release_fit()
            start = time.perf_counter()
            produced[(i, j)] = _run_family(impl, family, view, view)
            if cached:
                input_cache.put(view, family.name, produced[(i, j)])
            if on_family is not None:
                on_family(family.name, label_set, time.perf_counter() - start)
        _keep_velpic(view, label_set, label_sets, velpics)
        view.release_fit()
    base.release(keep=("test",) if velpics is not None else ())
    return [row for index in sorted(produced) for row in produced[index]]


def _keep_velpic(view: LayerContext, label_set: str, label_sets: Sequence[str], velpics: dict | None) -> None:
    if velpics is not None and label_set in label_sets and "probes" in view.__dict__:
        velpics[label_set] = view.probes.velpic


def _probe(acts, loaded: list, label_sets: tuple, extra_labels, options: ProbeOptions, checkpoint, data_root,
           prepared, input_cache=None) -> list[ProbeRow]:
    meta = acts.meta
    layer_families = [(f, impl) for f, impl in loaded if not f.needs_checkpoint]
    checkpoint_families = [(f, impl) for f, impl in loaded if f.needs_checkpoint]
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
    sets: dict[str, np.ndarray | None] = {name: None for name in label_sets}
    extra = read_extra_labels(extra_labels, acts.path, labels["train_true"], meta["dataset"]) if extra_labels else {}
    sets.update(extra)
    context = CheckpointContext(acts, meta, key, labels, classes, options, path, data_root, prepared,
                                fit_labels=tuple(label_sets), label_sets=sets)
    last_hidden = context.last_hidden_name
    if checkpoint_families and last_hidden not in acts.layers:
        raise ValueError(f"the last hidden layer {last_hidden!r} is not in {acts.path}; "
                         "the transfer needs it (or pass --no-transfer)")

    rows: list[ProbeRow] = []
    for name in acts.layers if layer_families else ():
        keep_hidden = bool(checkpoint_families) and name == last_hidden
        rows += probe_layer(context.layer(name), layer_families, sets, label_sets,
                            velpics=context.velpics if keep_hidden else None, input_cache=input_cache)
        if not keep_hidden:
            del context.layers[name]
    for family, impl in checkpoint_families:
        rows += _run_family(impl, family, context)
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
