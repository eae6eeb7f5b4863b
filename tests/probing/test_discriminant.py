"""LDA and QDA as the authors' scikit-learn computed them (latentgen.probing.discriminant), on real MNIST
activations: a 3,000-image, 2-epoch MLP (fc1–fc4), the CNN's flatten layer and a 4,096-wide layer.

Oracles: scikit-learn's own LDA (svd solver) — for the authors' 1/(n − K) factor its arithmetic
with that one factor changed (``method="svd"``, which equals scikit-learn bit for bit at 1/n) —
and, for QDA, a transcription of scikit-learn 1.7's ``fit`` and ``_decision_function`` below
(scikit-learn 1.8+ refuses rank-deficient classes, so the installed one cannot serve)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from latentgen import registry
from latentgen.probing.discriminant import AuthorsLDA, AuthorsQDA, fit_lda
from latentgen.data.labels import corrupt_labels
from latentgen.probing.checkpoint import probe_layer
from latentgen.probing.contexts import LayerContext, ProbeOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread", "single_threaded_blas")



N_TRAIN = 3000


def _acts(model, x, layers, batch=1000):
    from latentgen.models.forward import iter_activations

    parts = [a for _, a in iter_activations(model, x, layers, batch)]
    return {layer: torch.cat([p[layer] for p in parts]).numpy() for layer in layers}


@pytest.fixture(scope="module")
def mnist(mnist_root):
    from latentgen.data.datasets import load_dataset

    return load_dataset("mnist", data_root=mnist_root)


@pytest.fixture(scope="module")
def labels(mnist):
    y = mnist.train_y[:N_TRAIN].numpy()
    return {"test": mnist.test_y.numpy(), "train_true": y, "train_corrupted": corrupt_labels(y, 0.4, 10, seed=42)}


@pytest.fixture(scope="module")
def mlp_layers(tmp_path_factory, mnist):
    """fc1–fc4 of the paper's MLP trained 2 epochs on 3,000 MNIST images with 40 % corrupted labels."""
    from latentgen.training.loop import train
    from latentgen.training.hyperparameters import default_train_config
    from latentgen.training.checkpoints import load_checkpoint

    folder = tmp_path_factory.mktemp("mlp")
    config = default_train_config("mlp", "mnist", corruption=0.4, run=1, train_subset=N_TRAIN, max_epochs=2,
                                  grid_dense_until=2, grid_step=1)
    train(config, folder / "run", dataset=mnist, device="cpu", verbose=False)
    model, _ = load_checkpoint(folder / "run" / "checkpoints" / "epoch2.pt")
    layers = ["fc1", "fc2", "fc3", "fc4"]
    return _acts(model.eval(), mnist.train_x[:N_TRAIN], layers), _acts(model.eval(), mnist.test_x, layers)


@pytest.fixture(scope="module")
def cnn_flatten(mnist):
    """The CNN's flatten layer (576) at the authors' fixed initialisation."""
    from latentgen.models.architectures import build_model

    model = build_model("cnn", "mnist").eval()
    return _acts(model, mnist.train_x[:N_TRAIN], ["flatten"])["flatten"], _acts(model, mnist.test_x, ["flatten"])["flatten"]


def _accuracy(estimator, T, y):
    return round(float(np.mean(estimator.predict(T) == y)), 4)


# ------------------------------------------------------------------------------------------
# LDA


def _check_lda(X, y, T, y_test, full=True):
    """The gram route against scikit-learn (float64 rows: the route's own precision; see the module
    docstring of latentgen.probing.discriminant) at 1/n, and against scikit-learn's arithmetic with the
    authors' 1/(n − K); ranks equal, accuracies equal to 4 decimals."""
    X64 = X.astype(np.float64)
    reference = LinearDiscriminantAnalysis().fit(X64, y)
    gram_n = fit_lda(X, y, within_scale="n", method="gram")
    if full:  # (one n×d SVD less on the wide layer)
        svd_n = fit_lda(X64, y, within_scale="n", method="svd")
        assert np.array_equal(svd_n.coef_, reference.coef_)  # the svd route is scikit-learn's arithmetic
        assert gram_n.within_rank_ == svd_n.within_rank_
    assert gram_n.scalings_.shape == reference.scalings_.shape
    assert _accuracy(gram_n, T, y_test) == _accuracy(reference, T, y_test)

    authors_svd = fit_lda(X64, y, within_scale="n-K", method="svd")
    authors = fit_lda(X, y)  # the family's fit: n-K, gram where n >= d
    assert authors.method_ == ("gram" if len(X) >= X.shape[1] else "svd")
    authors_gram = authors if authors.method_ == "gram" else fit_lda(X, y, method="gram")
    assert authors_gram.within_rank_ == authors_svd.within_rank_
    assert authors_gram.scalings_.shape == authors_svd.scalings_.shape
    assert _accuracy(authors_gram, T, y_test) == _accuracy(authors_svd, T, y_test)
    # the factor is 1/(n − K): the within-class singular values are scikit-learn 1.9's × √(n/(n − K))
    n, k = len(X), len(np.unique(y))
    metric_n = reference.scalings_ @ reference.scalings_.T
    np.testing.assert_allclose(authors_svd.scalings_ @ authors_svd.scalings_.T * (n / (n - k)), metric_n,
                               rtol=1e-6, atol=1e-12 * np.abs(metric_n).max())
    return authors


# fc3 and fc4 (2,048 wide, ~65 s each) run with -m long; at that width the default run checks the
# gram route against scikit-learn on the same MLP's fc4 at initialisation (test_probe_families.py)
@pytest.mark.parametrize("layer", ["fc1", "fc2", pytest.param("fc3", marks=pytest.mark.long),
                                   pytest.param("fc4", marks=pytest.mark.long)])
def test_lda_matches_scikit_learn_on_the_mlp(mlp_layers, labels, layer):
    train, test = mlp_layers
    for fit_labels in ("corrupted", "true"):
        _check_lda(train[layer], labels[f"train_{fit_labels}"], test[layer], labels["test"])


def test_lda_matches_scikit_learn_on_the_cnn_flatten_layer(cnn_flatten, labels):
    X, T = cnn_flatten
    assert (X.max(axis=0) == 0).any()  # dead units: standardised by 1, zero singular values
    for fit_labels in ("corrupted", "true"):
        _check_lda(X, labels[f"train_{fit_labels}"], T, labels["test"])


@pytest.mark.long
def test_lda_matches_scikit_learn_on_a_4096_wide_layer(mnist, labels):
    """ResNet-18's layer3 output (256×4×4 = 4,096) on MNIST padded to 32×32×3, at initialisation,
    with more rows than features (the gram route's case, as fc4 at 2,048 wide; 3-4 minutes on 2 cores)."""
    from latentgen.models.architectures import build_model

    n = 4500
    pad = lambda x: torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1).repeat(1, 3, 1, 1)  # noqa: E731
    model = build_model("resnet18", "cifar10", seed=0).eval()
    X = _acts(model, pad(mnist.train_x[:n]), ["l3"], 500)["l3"]
    T = _acts(model, pad(mnist.test_x[:2000]), ["l3"], 500)["l3"]
    y = corrupt_labels(mnist.train_y[:n].numpy(), 0.4, 10, seed=42)
    assert X.shape[1] == 4096
    _check_lda(X, y, T, mnist.test_y[:2000].numpy(), full=False)


def test_lda_estimator_and_bad_input(mlp_layers, labels):
    train, test = mlp_layers
    probe = AuthorsLDA().fit(train["fc1"], labels["train_true"])
    assert np.array_equal(probe.predict(test["fc1"]), fit_lda(train["fc1"], labels["train_true"]).predict(test["fc1"]))
    with pytest.raises(ValueError, match="unknown within_scale 'K'"):
        fit_lda(train["fc1"], labels["train_true"], within_scale="K")
    with pytest.raises(ValueError, match="unknown LDA method"):
        fit_lda(train["fc1"], labels["train_true"], method="eigen")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_lda(train["fc1"][:20], np.zeros(20))
    with pytest.raises(ValueError):
        fit_lda(np.full((20, 3), np.nan), np.arange(20) % 2)


# ------------------------------------------------------------------------------------------
# QDA: scikit-learn 1.7, transcribed (fit and _decision_function; reg_param=0, tol=1e-4)


def sklearn17_qda_fit(X, y, tol=1.0e-4):
    classes, y = np.unique(y, return_inverse=True)
    priors = np.bincount(y) / float(X.shape[0])
    means, scalings, rotations = [], [], []
    for ind in range(len(classes)):
        Xg = X[y == ind, :]
        meang = Xg.mean(0)
        means.append(meang)
        Xgc = Xg - meang
        _, S, Vt = np.linalg.svd(Xgc, full_matrices=False)
        rank = np.sum(S > tol)
        if rank < X.shape[1]:
            warnings.warn("Variables are collinear")
        S2 = (S**2) / (len(Xg) - 1)
        S2 = ((1 - 0.0) * S2) + 0.0
        scalings.append(S2)
        rotations.append(Vt.T)
    return classes, priors, np.asarray(means), scalings, rotations


def sklearn17_qda_decision(fitted, X):
    classes, priors, means, scalings, rotations = fitted
    norm2 = []
    for i in range(len(classes)):
        R = rotations[i]
        S = scalings[i]
        Xm = X - means[i]
        X2 = np.dot(Xm, R * (S ** (-0.5)))
        norm2.append(np.sum(X2**2, axis=1))
    norm2 = np.array(norm2).T
    u = np.asarray([np.sum(np.log(s)) for s in scalings])
    return -0.5 * (norm2 + u) + np.log(priors)


def _qda_rows(train, test, labels, layer):
    acts = type("Acts", (), {"array": lambda self, split, name: {"train": train, "test": test}[split][name]})()
    context = LayerContext(acts, layer, ("mlp", "mnist", 0.4, 1, 2), labels, np.arange(10),
                           ProbeOptions(device=torch.device("cpu")))
    loaded = [(registry.PROBE_FAMILIES["qda"], registry.load(registry.PROBE_FAMILIES["qda"].impl))]
    return {r.fit_labels: r.accuracy for r in probe_layer(context, loaded, dict.fromkeys(("corrupted", "true")),
                                                            ("corrupted", "true"))}


def test_qda_is_scikit_learn_17_on_every_mlp_layer(mlp_layers, labels, caplog):
    """fc1 (128 features, ~300 rows per class: full rank), fc2–fc4 (512–2,048 features: fewer rows
    per class than features), with dead units; both label sets. Scores equal the transcription's
    (inf and NaN where it has them), predictions its argmax, accuracy a number on every layer."""
    train, test = mlp_layers
    assert (train["fc4"].max(axis=0) == 0).any(), "expected dead units on fc4"
    with np.errstate(all="ignore"), caplog.at_level(logging.WARNING):
        rows = {layer: _qda_rows(train, test, labels, layer) for layer in train}
    for layer, X in train.items():
        for fit_labels in ("corrupted", "true"):
            y = labels[f"train_{fit_labels}"]
            with warnings.catch_warnings(record=True) as ours_warned, np.errstate(all="ignore"):
                warnings.simplefilter("always")
                qda = AuthorsQDA().fit(X, y)
                ours = qda.class_scores(test[layer])
            with warnings.catch_warnings(record=True) as ref_warned, np.errstate(all="ignore"):
                warnings.simplefilter("always")
                fitted = sklearn17_qda_fit(X, y)
                reference = sklearn17_qda_decision(fitted, test[layer])
            assert [str(w.message) for w in ours_warned] == [str(w.message) for w in ref_warned]
            np.testing.assert_array_equal(ours, reference)  # same arithmetic: bit for bit, inf/NaN included
            predicted = fitted[0][reference.argmax(axis=1)]
            assert np.array_equal(qda.predict(test[layer]), predicted)
            expected = float(np.mean(predicted == labels["test"]))
            assert rows[layer][fit_labels] == expected and not np.isnan(expected)
            counts = np.bincount(y)
            if counts.min() <= X.shape[1]:  # fewer rows than features: rank-deficient, a warning only
                assert "Variables are collinear" in [str(w.message) for w in ours_warned]
    assert "QDA per class, scalings of singular values <= tol / non-finite scores" in caplog.text


def test_qda_diagnostics_count_tiny_scalings_and_non_finite_scores(mlp_layers, labels, caplog):
    train, test = mlp_layers
    X = train["fc4"]
    y = labels["train_true"]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qda = AuthorsQDA().fit(X, y)
        scores = qda.class_scores(test["fc4"])
    for k in range(10):
        S = np.linalg.svd(X[y == k] - X[y == k].mean(0), compute_uv=False)
        assert qda.tiny_scalings_[k] == np.sum(S <= 1e-4) and qda.rank_[k] == np.sum(S > 1e-4)
    from latentgen.probing.discriminant import log_qda_diagnostics

    with caplog.at_level(logging.WARNING, logger="latentgen.probing.discriminant"):
        log_qda_diagnostics(qda, scores, "here")
    bad = (~np.isfinite(scores)).sum(axis=0)
    expected = ", ".join(f"{k}: {qda.tiny_scalings_[k]}/{bad[k]}" for k in range(10))
    assert f"here: QDA per class, scalings of singular values <= tol / non-finite scores of 10000 rows: {expected}" \
        in caplog.text


def test_qda_refuses_what_scikit_learn_17_refused():
    X = np.random.default_rng(0).normal(size=(7, 3))
    with pytest.raises(ValueError, match="only 1 sample in class 2"):
        AuthorsQDA().fit(X, np.array([0, 0, 0, 1, 1, 1, 2]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        AuthorsQDA().fit(X, np.zeros(7))
    with pytest.raises(ValueError, match="tol must be non-negative"):
        AuthorsQDA(tol=-1).fit(X, np.arange(7) % 2)
