"""Probing one checkpoint: its activation file in, tidy accuracy rows out.

:func:`probe_checkpoint` runs the probe families of :data:`latentgen.registry.PROBE_FAMILIES`
on one activations file (``latentgen activations``) and returns one :class:`ProbeRow` per
(layer, probe, fit labels, split); :func:`write_probe_csv` writes them as the tidy CSV of
``latentgen probe`` (columns: ``latentgen.contracts.PROBE_COLUMNS``). Splits: ``test`` (true labels),
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
  layer; ``test_only`` ones score the test split only. A family whose entry names a ``fit_many``
  is first fit on every layer of a group held in memory together (a file: one layer) and label
  set at once (logistic regression: one training loop), and its function scores those fits.
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

import csv
import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from latentgen import registry
from latentgen.probing.contexts import CheckpointContext, LayerContext, ProbeFitError, ProbeOptions, logged_warnings
from latentgen.contracts import PROBE_COLUMNS, SPLITS, TEST_ONLY, ProbeRow

logger = logging.getLogger("latentgen.probing.checkpoint")



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


def fit_together(bases: list[LayerContext], layer_families: list, sets: Mapping[str, np.ndarray | None],
                 label_sets: Sequence[str], input_cache=None) -> None:
    """Let each family with a ``fit_many`` fit every layer of ``bases`` (one group held in memory)
    and label set at once; :func:`probe_layer` then scores those fits. The ``input`` layer is
    left to :func:`probe_layer` when its rows may come from ``input_cache``."""
    for family, _ in layer_families:
        if not family.fit_many:
            continue
        views = [base if label_set == "corrupted" else base.with_labels(label_set, fit_y)
                 for base in bases
                 if not (base.name == registry.INPUT_LAYER and (family.skip_input or input_cache is not None))
                 for label_set, fit_y in sets.items() if label_set in label_sets or family.extra_labels]
        if views:
            with logged_warnings(f"{family.name} on layers {', '.join(repr(b.name) for b in bases)}"):
                registry.load(family.fit_many)(views)


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
    # activations held in memory come in groups of layers computed together; a file's, a layer at a time
    groups = getattr(acts, "groups", None) or [[name] for name in acts.layers]
    for group in groups if layer_families else ():
        fit_together([context.layer(name) for name in group], layer_families, sets, label_sets, input_cache)
        for name in group:
            keep_hidden = bool(checkpoint_families) and name == last_hidden
            rows += probe_layer(context.layer(name), layer_families, sets, label_sets,
                                velpics=context.velpics if keep_hidden else None, input_cache=input_cache)
            if not keep_hidden:
                del context.layers[name]
    for family, impl in checkpoint_families:
        rows += _run_family(impl, family, context)
    return rows


def write_probe_csv(rows: Iterable[ProbeRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as the tidy CSV (header ``PROBE_COLUMNS``; floats as ``repr``), atomically."""
    from latentgen._io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(PROBE_COLUMNS)
            for row in rows:
                values = row.values() if isinstance(row, ProbeRow) else row
                writer.writerow([repr(v) if isinstance(v, float) else v for v in values])
    return Path(path)
