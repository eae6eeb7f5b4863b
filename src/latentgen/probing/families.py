"""The probe families: one function per ``registry.PROBE_FAMILIES`` entry (its ``impl``).

A per-layer family is ``fn(layer: LayerContext) -> rows`` (the layer's arrays, labels and the shared
MASC/VeLPIC fit are in the context); a family that evaluates the network is
``fn(checkpoint: CheckpointContext) -> rows``. ``latentgen.probing.checkpoint.probe_checkpoint`` runs them.
Adding a family is one registry entry, one function here and one test.
"""

from __future__ import annotations

import sys

import numpy as np

from latentgen import registry
from latentgen.contracts import TEST_ONLY
from latentgen.contracts import ProbeRow
from latentgen.probing.contexts import CheckpointContext, LayerContext, ProbeFitError

# --------------------------------------------------------------------------------------------
# the families: MASC, VeLPIC, the transfer


def masc_rows(layer: LayerContext) -> list[ProbeRow]:
    """MASC (quadratic class-subspace probe) on one layer."""
    masc = layer.probes.masc
    return layer.score("masc", masc, cache_key=("masc", tuple(masc.n_components_)))


def velpic_rows(layer: LayerContext) -> list[ProbeRow]:
    """VeLPIC (one signed principal vector per class) on one layer."""
    return layer.score("velpic", layer.probes.velpic)


def masc_sensitivity_rows(layer: LayerContext) -> list[ProbeRow]:
    """MASC at each threshold of :data:`latentgen.registry.MASC_SENSITIVITY` (SPEC §10), each a
    truncation of the layer's one decomposition (``ClassSubspaces.at``); a threshold that keeps
    the same components as ``masc`` reuses its predictions."""
    from latentgen.probing.masc_velpic import MASC

    rows = []
    for name, variance, n_components in registry.MASC_SENSITIVITY:
        masc = MASC.from_subspaces(layer.subspaces.at(variance=variance, n_components=n_components))
        rows += layer.score(name, masc, cache_key=("masc", tuple(masc.n_components_)))
    return rows


def transfer_rows(checkpoint: CheckpointContext) -> list[ProbeRow]:
    """The network with VeLPIC's class vectors of the last hidden layer as its head, run on the
    training and test images: ``transfer`` (bias zeroed) and, where the head has a bias,
    ``transfer_bias`` (trained bias kept); one pair per label set VeLPIC is fit on."""
    from latentgen.models.forward import head_name, predict
    from latentgen.probing.velpic_transfer import transfer_velpic

    model, ckpt_meta = checkpoint.load_model()
    train_x, test_x = checkpoint.images(ckpt_meta)
    head = checkpoint.meta.get("head") or head_name(model)
    variants = [("transfer", False)]
    if model.get_submodule(head).bias is not None:
        variants.append(("transfer_bias", True))
    o = checkpoint.options
    rows = []
    for fit_labels in checkpoint.fit_labels:
        hidden, velpic = checkpoint.hidden(fit_labels), checkpoint.velpic(fit_labels)
        for name, keep_bias in variants:
            edited = transfer_velpic(model, head, velpic, keep_bias=keep_bias).eval()
            predicted = {"test": predict(edited, test_x, o.batch_size, o.device).numpy(),
                         "train": predict(edited, train_x, o.batch_size, o.device).numpy()}
            rows += hidden.rows_from_predictions(name, predicted)
            if not keep_bias:
                same = int(np.sum(predicted["test"] == velpic.predict(hidden.test)))
                print(f"transfer ({fit_labels} labels) agrees with VeLPIC on {same}/{len(test_x)} test rows",
                      file=sys.stderr)
    return rows


# --------------------------------------------------------------------------------------------
# the families: the authors' baselines (SPEC §10), on the test split; on a job whose device is not
# the CPU, 5-NN, LDA and QDA run there (latentgen.probing.device_baselines), logistic regression already does


def _check_rows(layer: LayerContext, minimum_per_class: int = 1) -> np.ndarray:
    """The class sizes of ``layer.fit_y``; ProbeFitError when there are no more training rows
    than classes or a class has fewer than ``minimum_per_class``."""
    labels, counts = np.unique(layer.fit_y, return_counts=True)
    if len(layer.fit_y) <= len(labels):
        raise ProbeFitError(f"{len(layer.fit_y)} training rows for {len(labels)} classes (more rows than classes "
                            "needed)")
    small = labels[counts < minimum_per_class]
    if len(small):
        raise ProbeFitError(f"class(es) {small.tolist()[:10]} have fewer than {minimum_per_class} training rows")
    if len(labels) < 2:
        raise ProbeFitError(f"only one class ({labels[0]!r}) in the training labels")
    return counts


def _logistic_key(layer: LayerContext) -> tuple:
    return ("logistic", layer.fit_labels)


def logistic_rows(layer: LayerContext) -> list[ProbeRow]:
    """Logistic regression as the authors: ``nn.Linear(d, K)``, Adam(1e-3), 20 epochs of shuffled
    batches of 128, cross-entropy; seeded with ``options.seed`` (initial weights and order). The
    fit :func:`fit_logistic_together` made for this layer and label set, else fitted here."""
    from latentgen.probing.baselines import LogisticRegressionProbe

    _check_rows(layer)
    o = layer.options
    probe = layer.shared.pop(_logistic_key(layer), None)
    if probe is None:
        probe = LogisticRegressionProbe(seed=o.seed, device=o.device).fit(layer.train, layer.fit_y)
    return layer.score("logistic", probe, TEST_ONLY)


def fit_logistic_together(layers: list[LayerContext]) -> None:
    """The logistic-regression fits of many (layer, label set) advanced in one loop
    (``latentgen.probing.device_baselines.fit_logistic_many``: each equal to its single fit, bit
    for bit), kept in each layer's ``shared`` for :func:`logistic_rows`. A layer and label set it
    cannot fit are left to :func:`logistic_rows`, which says why. On a device, the layers go
    there in batches that fit in half its free memory."""
    from latentgen.probing.device_baselines import device_batches, fit_logistic_many

    fittable = []
    for layer in layers:
        try:
            _check_rows(layer)
        except ProbeFitError:
            continue
        if np.isfinite(layer.train).all():  # else logistic_rows raises what a single fit raises
            fittable.append(layer)
    if not fittable:
        return
    o = fittable[0].options
    for batch in device_batches(fittable, lambda layer: layer.train.nbytes, o.device):
        probes = fit_logistic_many([(layer.train, layer.fit_y) for layer in batch], seed=o.seed, device=o.device)
        for layer, probe in zip(batch, probes):
            layer.shared[_logistic_key(layer)] = probe


def ncm_rows(layer: LayerContext) -> list[ProbeRow]:
    """Nearest class mean by cosine similarity to the raw class means."""
    from latentgen.probing.baselines import NearestClassMean

    _check_rows(layer)
    return layer.score("ncm", NearestClassMean().fit(layer.train, layer.fit_y), TEST_ONLY)


KNN_NEIGHBORS = 5


def knn_rows(layer: LayerContext) -> list[ProbeRow]:
    """5-NN by cosine distance (scikit-learn's brute force, :class:`latentgen.probing.baselines.CosineKNN`);
    the neighbours of the test rows are searched once per layer and vote with each label set."""
    from latentgen.probing.baselines import CosineKNN, majority_vote
    from latentgen.probing.device_baselines import cosine_kneighbors, on_device

    _check_rows(layer)
    if len(layer.fit_y) < KNN_NEIGHBORS:
        raise ProbeFitError(f"{KNN_NEIGHBORS} neighbours need {KNN_NEIGHBORS} training rows, got {len(layer.fit_y)}")
    if "knn_neighbors" not in layer.shared and on_device(layer.options.device):
        layer.shared["knn_neighbors"] = cosine_kneighbors(layer.train, layer.test, KNN_NEIGHBORS, layer.options.device)
    elif "knn_neighbors" not in layer.shared:
        layer.shared["knn_neighbors"] = CosineKNN(KNN_NEIGHBORS).fit(layer.train).kneighbors(layer.test)
    predicted = majority_vote(layer.shared["knn_neighbors"], layer.fit_y)
    return layer.rows_from_predictions("knn", {"test": predicted}, splits=TEST_ONLY)


def lda_rows(layer: LayerContext) -> list[ProbeRow]:
    """LDA as the authors' scikit-learn computed it (solver ``svd``, within-class factor 1/(n − K)),
    fitted from the float64 within-class scatter (:func:`latentgen.probing.discriminant.fit_lda`)."""
    from latentgen.probing.device_baselines import fit_lda_device, lda_predict_device, on_device
    from latentgen.probing.discriminant import fit_lda

    _check_rows(layer)
    if not on_device(layer.options.device):
        return layer.score("lda", fit_lda(layer.train, layer.fit_y), TEST_ONLY)
    lda = fit_lda_device(layer.train, layer.fit_y, layer.options.device)
    return layer.rows_from_predictions("lda", {"test": lda_predict_device(lda, layer.test, layer.options.device)},
                                       splits=TEST_ONLY)


def qda_rows(layer: LayerContext) -> list[ProbeRow]:
    """QDA as the authors' scikit-learn (≤ 1.7) computed it (:class:`latentgen.probing.discriminant.AuthorsQDA`):
    a class covariance that is not of full rank is a warning, not a refusal, and the scores are
    numpy's arithmetic on it (inf, NaN), the prediction numpy's argmax. A class needs 2 rows (its
    covariance is otherwise undefined, as scikit-learn says). The tiny scalings and the non-finite
    test scores are logged per class."""
    from latentgen.probing.device_baselines import DeviceQDA, on_device
    from latentgen.probing.discriminant import AuthorsQDA, log_qda_diagnostics

    _check_rows(layer, minimum_per_class=2)
    device = layer.options.device
    qda = (DeviceQDA(device=device) if on_device(device) else AuthorsQDA()).fit(layer.train, layer.fit_y)
    scores = qda.class_scores(layer.test)
    log_qda_diagnostics(qda, scores, f"qda on layer {layer.name!r} (fit_labels={layer.fit_labels})")
    predicted = qda.classes_[scores.argmax(axis=1)]
    return layer.rows_from_predictions("qda", {"test": predicted}, splits=TEST_ONLY)
