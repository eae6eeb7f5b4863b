"""Baseline probes (SPEC §10) and the probe registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from latentgen.probing.discriminant import AuthorsLDA, AuthorsQDA
from sklearn.neighbors import KNeighborsClassifier

from latentgen.probing.baselines import (PROBES, CosineKNN, LogisticRegressionProbe, NearestClassMean, knn_probe,
                                         make_probe)


def blobs(seed, n_per_class=60, d=12, classes=3, spread=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, d)) + spread
    X = np.concatenate([c + rng.normal(size=(n_per_class, d)) for c in centres])
    return X, np.repeat(np.arange(classes), n_per_class)


# every registry entry: one test below; adding a probe means one entry here and one test
@pytest.mark.parametrize("name", sorted(PROBES))
def test_every_registered_probe_fits_and_predicts(name):
    X, y = blobs(0, n_per_class=320)
    test = np.arange(len(X)) % 16 == 0  # 20 held-out rows per class
    X, y, X_test, y_test = X[~test], y[~test], X[test], y[test]
    params = {"device": "cpu"} if "device" in make_probe(name).get_params() else {}
    probe = make_probe(name, **params).fit(X, np.array(["a", "b", "c"])[y])
    assert list(probe.classes_) == ["a", "b", "c"]
    assert np.mean(probe.predict(X_test) == np.array(["a", "b", "c"])[y_test]) > 0.9


def test_registry_names_and_unknown_probe():
    assert {"masc", "velpic", "logistic", "ncm", "knn", "lda", "qda"} <= set(PROBES)
    with pytest.raises(ValueError, match="unknown probe 'svm'; known probes: .*masc"):
        make_probe("svm")


def test_knn_lda_qda_are_the_authors_settings():
    knn = make_probe("knn")
    assert isinstance(knn, CosineKNN) and knn.n_neighbors == 5
    reference = knn_probe()  # what CosineKNN computes (tests/probing/test_probe_families.py: equal on MNIST)
    assert isinstance(reference, KNeighborsClassifier) and reference.n_neighbors == 5 and reference.metric == "cosine"
    lda, qda = make_probe("lda"), make_probe("qda")
    assert isinstance(lda, AuthorsLDA) and lda.within_scale == "n-K"  # scikit-learn <= 1.3's svd solver
    assert isinstance(qda, AuthorsQDA) and qda.tol == 1e-4  # scikit-learn <= 1.7's QDA, reg_param=0


def test_knn_matches_brute_force_cosine_vote():
    X, y = blobs(2, spread=0.7)
    rng = np.random.default_rng(3)
    X_test = rng.normal(size=(80, X.shape[1])) + 0.7
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(1 - unit(X_test) @ unit(X).T, axis=1, kind="stable")[:, :5]
    votes = np.stack([np.bincount(y[row], minlength=3) for row in nearest])
    np.testing.assert_array_equal(make_probe("knn").fit(X, y).predict(X_test), votes.argmax(1))


def test_nearest_class_mean_is_cosine_to_raw_means():
    X, y = blobs(4, spread=0.5)
    X_test = np.random.default_rng(5).normal(size=(100, X.shape[1]))
    X_test[0] = 0.0
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    with np.errstate(invalid="ignore"):  # the zero row: 0/0, set below
        cosine = (X_test @ means.T) / np.outer(np.linalg.norm(X_test, axis=1), np.linalg.norm(means, axis=1))
    cosine[0] = 0.0  # a zero row has cosine 0 to every mean → class 0
    ncm = NearestClassMean().fit(X, y)
    np.testing.assert_allclose(ncm.decision_function(X_test), cosine, rtol=1e-12)
    np.testing.assert_array_equal(ncm.predict(X_test), cosine.argmax(1))


def test_logistic_regression_is_the_specified_training_loop():
    """nn.Linear(d, K), Adam(1e-3), 20 epochs, batch 128, shuffled each epoch; seed → init and order."""
    X, y = blobs(6, n_per_class=150, d=10)
    X32 = X.astype(np.float32)
    probe = LogisticRegressionProbe(seed=7, device="cpu").fit(X, y)
    assert (probe.epochs, probe.batch_size, probe.lr) == (20, 128, 1e-3)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        layer = torch.nn.Linear(10, 3)
    generator = torch.Generator().manual_seed(7)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(X32), torch.from_numpy(y)
    for _ in range(20):
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), 128):
            batch = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(layer(xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    np.testing.assert_array_equal(probe.coef_, layer.weight.detach().numpy())
    np.testing.assert_array_equal(probe.intercept_, layer.bias.detach().numpy())
    logits = X32 @ probe.coef_.T + probe.intercept_
    np.testing.assert_array_equal(probe.predict(X), logits.argmax(1))
    other = LogisticRegressionProbe(seed=8, device="cpu").fit(X, y)
    assert not np.array_equal(other.coef_, probe.coef_)


@pytest.mark.parametrize("params, match", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"lr": -1.0}, "lr must be positive"),
])
def test_logistic_regression_bad_settings(params, match):
    X, y = blobs(9)
    with pytest.raises(ValueError, match=match):
        LogisticRegressionProbe(device="cpu", **params).fit(X, y)


def test_baselines_refuse_nan_and_wrong_width():
    X, y = blobs(10)
    bad = X.copy()
    bad[0, 0] = np.nan
    for probe in (NearestClassMean(), LogisticRegressionProbe(epochs=1, device="cpu")):
        with pytest.raises(ValueError, match="NaN"):
            probe.fit(bad, y)
        probe.fit(X, y)
        with pytest.raises(ValueError, match="features"):
            probe.predict(X[:, :5])


def test_nearest_class_mean_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(NearestClassMean(), on_fail=None)
    assert not [r["check_name"] for r in results if r["status"] == "failed"]
