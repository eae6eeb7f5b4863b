"""The baselines on a torch device (latentgen.probing.device_baselines) against the CPU code they stand in
for, run here on CPU torch (tests/gpu/test_gpu.py runs the same comparisons on CUDA).

Real data: the paper's MLP at its seed-0 initialisation on 6,000 MNIST training images and 2,000
test images, with the authors' 40 % corrupted labels (fc1 128 wide, fc2 512, fc4 2,048; dead units
on fc2 and fc4, so LDA's and QDA's rank rules and QDA's tiny scalings are exercised)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from latentgen import registry
from latentgen.probing import device_baselines
from latentgen.probing.baselines import CosineKNN, LogisticRegressionProbe, majority_vote
from latentgen.probing.device_baselines import (DeviceQDA, cosine_kneighbors, fit_lda_device, fit_logistic_many,
                                                lda_predict_device)
from latentgen.probing.discriminant import AuthorsQDA, fit_lda
from latentgen.data.labels import corrupt_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread", "single_threaded_blas")

N_TRAIN, N_TEST = 6000, 2000
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist_mlp(mnist_root):
    """``(train, test, labels)``: fc1, fc2, fc4 of the MLP at initialisation (module docstring)."""
    from latentgen.data.datasets import load_dataset
    from latentgen.models.forward import iter_activations
    from latentgen.models.architectures import build_model

    data = load_dataset("mnist", data_root=mnist_root)
    model = build_model("mlp", "mnist", seed=0).eval()
    layers = ["fc1", "fc2", "fc4"]

    def acts(x):
        parts = [a for _, a in iter_activations(model, x, layers, 1000)]
        return {name: torch.cat([p[name] for p in parts]).numpy() for name in layers}

    y = data.train_y[:N_TRAIN].numpy()
    labels = {"test": data.test_y[:N_TEST].numpy(), "train_true": y,
              "train_corrupted": corrupt_labels(y, 0.4, 10, seed=42)}
    return acts(data.train_x[:N_TRAIN]), acts(data.test_x[:N_TEST]), labels


def _agree(a, b, labels):
    """Agreement of two prediction vectors, and the gap between their accuracies."""
    return float(np.mean(a == b)), abs(float(np.mean(a == labels)) - float(np.mean(b == labels)))


# ------------------------------------------------------------------------------------------
# 5-NN


@pytest.mark.parametrize("layer", ["fc1", "fc2", "fc4"])
def test_knn_on_the_device_finds_scikit_learns_neighbours(mnist_mlp, layer):
    train, test, labels = mnist_mlp
    X, T = train[layer], test[layer]
    reference = CosineKNN(5).fit(X).kneighbors(T)
    ours, resolved = cosine_kneighbors(X, T, 5, CPU, block_elements=N_TRAIN * 700, return_resolved=True)
    np.testing.assert_array_equal(ours, reference)  # indices and their order, every row
    assert 0 < len(resolved) < 0.2 * len(T)  # some near ties went to the CPU code; most rows did not
    y = labels["train_corrupted"]
    sklearn_predicted = KNeighborsClassifier(5, metric="cosine").fit(X, y).predict(T[:300])
    np.testing.assert_array_equal(majority_vote(ours, y)[:300], sklearn_predicted)


def test_knn_ties_are_broken_as_scikit_learn_breaks_them(monkeypatch):
    """Each reference row three times (exact copies, one scaled: ties at the 5th neighbour, which
    numpy's introselect orders, not by index) with different labels, zero rows on both sides
    (every distance 1) and queries equal to reference rows. (Sizes as a layer's: numpy's product
    of a few rows takes another BLAS path whose rounding breaks near ties otherwise.)"""
    rng = np.random.default_rng(0)
    base = np.maximum(rng.normal(size=(1000, 64)), 0).astype(np.float32)
    X = np.concatenate([base, base, base * np.float32(3.0), np.zeros((5, 64), np.float32)])
    y = rng.integers(0, 4, len(X))
    T = np.concatenate([base[:100], base[100:200] + np.float32(1e-3) * rng.random((100, 64), np.float32),
                        np.zeros((4, 64), np.float32), np.maximum(rng.normal(size=(296, 64)), 0).astype(np.float32)])
    reference = CosineKNN(5).fit(X).kneighbors(T)
    ours, resolved = cosine_kneighbors(X, T, 5, CPU, block_elements=len(X) * 150, return_resolved=True)
    np.testing.assert_array_equal(ours, reference)
    assert set(range(100)) | {200, 201, 202, 203} <= set(resolved.tolist())  # exact ties: the CPU decides
    np.testing.assert_array_equal(majority_vote(ours, y),
                                  KNeighborsClassifier(5, metric="cosine").fit(X, y).predict(T))
    # without the CPU's decision the device's tie order (and index order) would pick other sets
    monkeypatch.setattr(device_baselines, "tie_tolerance", lambda dtype, d: -1.0)
    undecided = cosine_kneighbors(X, T, 5, CPU)
    assert (np.sort(undecided, axis=1) != np.sort(reference, axis=1)).any(axis=1).sum() > 100


def test_knn_refuses_what_the_cpu_refuses():
    X = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="5 neighbours need at least 5"):
        cosine_kneighbors(X, X, 5, CPU)
    with pytest.raises(ValueError, match="NaN"):
        cosine_kneighbors(np.full((6, 3), np.nan), X, 5, CPU)
    with pytest.raises(ValueError, match="one width"):
        cosine_kneighbors(np.ones((6, 3)), np.ones((2, 4)), 5, CPU)


# ------------------------------------------------------------------------------------------
# LDA, QDA


@pytest.mark.parametrize("layer,fit_labels", [("fc1", "corrupted"), ("fc2", "true"), ("fc4", "corrupted")])
def test_lda_on_the_device_agrees_with_the_gram_route(mnist_mlp, layer, fit_labels):
    train, test, labels = mnist_mlp
    X, y = train[layer], labels[f"train_{fit_labels}"]
    reference = fit_lda(X, y)
    ours = fit_lda_device(X, y, CPU)
    assert ours.within_rank_ == reference.within_rank_ and ours.scalings_.shape == reference.scalings_.shape
    agreement, gap = _agree(lda_predict_device(ours, test[layer], CPU), reference.predict(test[layer]), labels["test"])
    assert agreement >= 0.999 and gap <= 1e-3
    # its own predict is scikit-learn's on the same fit
    np.testing.assert_array_equal(lda_predict_device(ours, test[layer], CPU, block_rows=700), ours.predict(test[layer]))


def test_lda_on_the_device_with_two_classes(mnist_mlp):
    train, test, labels = mnist_mlp
    y = labels["train_true"] % 2
    reference, ours = fit_lda(train["fc1"], y), fit_lda_device(train["fc1"], y, CPU)
    agreement, _ = _agree(lda_predict_device(ours, test["fc1"], CPU), reference.predict(test["fc1"]), labels["test"] % 2)
    assert agreement >= 0.999


@pytest.mark.parametrize("layer", ["fc1", "fc2"])
def test_qda_on_the_device_agrees_with_the_authors_qda(mnist_mlp, layer):
    """Both layers are rank-deficient within classes (600 rows per class, dead units): the rows
    whose scores are decided by rounding are scored by the CPU code."""
    train, test, labels = mnist_mlp
    X, y, T = train[layer], labels["train_corrupted"], test[layer]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        reference = AuthorsQDA().fit(X, y)
        ours = DeviceQDA(device=CPU).fit(X, y)
        ref_scores, scores = reference.class_scores(T), ours.class_scores(T)
    assert (reference.rank_ < X.shape[1]).any()
    np.testing.assert_array_equal(ours.rank_, reference.rank_)
    agreement, gap = _agree(scores.argmax(axis=1), ref_scores.argmax(axis=1), labels["test"])
    assert agreement >= 0.999 and gap <= 1e-3
    np.testing.assert_array_equal(np.isfinite(scores), np.isfinite(ref_scores))
    sure = np.setdiff1d(np.arange(len(T)), ours.resolved_)
    # the rows the device decided, it decided as the CPU (their scores differ by rounding only)
    np.testing.assert_array_equal(scores[sure].argmax(axis=1), ref_scores[sure].argmax(axis=1))


def test_qda_fit_on_the_device_on_full_rank_classes():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(loc=k, scale=1 + k, size=(300, 20)) for k in range(3)]).astype(np.float32)
    y = np.repeat(np.arange(3), 300)
    T = rng.normal(loc=1, scale=2, size=(500, 20)).astype(np.float32)
    reference = AuthorsQDA().fit(X, y)
    ours = DeviceQDA(device=CPU, fit_on="device").fit(X, y)
    assert (ours.rank_ == 20).all()
    assert np.mean(ours.predict(T) == reference.predict(T)) >= 0.999
    scores, ref_scores = ours.class_scores(T), reference.class_scores(T)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4 * np.abs(ref_scores).max())
    with pytest.raises(ValueError, match="only 1 sample in class 1"):
        DeviceQDA(device=CPU, fit_on="device").fit(X[:301], y[:301])
    with pytest.raises(ValueError, match="unknown QDA fit_on"):
        DeviceQDA(device=CPU, fit_on="gpu").fit(X, y)


# ------------------------------------------------------------------------------------------
# logistic regression, many at once


def test_logistic_regressions_in_one_loop_equal_their_single_fits(mnist_mlp):
    train, _, labels = mnist_mlp
    n = 1500
    problems = [(train["fc1"][:n], labels["train_corrupted"][:n]), (train["fc1"][:n], labels["train_true"][:n]),
                (train["fc2"][:n], labels["train_corrupted"][:n]), (train["fc2"][:n], labels["train_true"][:n] % 3)]
    many = fit_logistic_many(problems, epochs=2, seed=3, device=CPU)
    for probe, (X, y) in zip(many, problems):
        single = LogisticRegressionProbe(epochs=2, seed=3, device=CPU).fit(X, y)
        np.testing.assert_array_equal(probe.coef_, single.coef_)  # bit for bit
        np.testing.assert_array_equal(probe.intercept_, single.intercept_)
        np.testing.assert_array_equal(probe.classes_, single.classes_)
        np.testing.assert_array_equal(probe.predict(X[:100]), single.predict(X[:100]))
    with pytest.raises(ValueError, match="same training rows"):
        fit_logistic_many([problems[0], (train["fc1"][:10], labels["train_true"][:10])], device=CPU)
    assert fit_logistic_many([], device=CPU) == []


def test_device_batches_keep_each_batch_within_the_budget():
    from latentgen.probing.device_baselines import device_batches

    sizes = [40, 30, 50, 120, 10, 10]
    batches = device_batches(sizes, lambda n: n, CPU, budget=100)
    assert batches == [[40, 30], [50], [120], [10, 10]]  # in order; 120 alone exceeds it: a batch of its own
    assert device_batches(sizes, lambda n: n, CPU) == [sizes]  # the CPU: one batch (no copies)
    assert device_batches([], lambda n: n, CPU) == []


# ------------------------------------------------------------------------------------------
# the families on a device


def test_the_families_take_the_device_path_off_the_cpu(mnist_mlp, monkeypatch, caplog):
    """knn, lda and qda on one layer through ``probe_layer``: the CPU's rows, and with the device
    path forced (as a CUDA job takes it) rows equal to 1e-3 and the device functions called."""
    from latentgen.probing.checkpoint import probe_layer
    from latentgen.probing.contexts import LayerContext, ProbeOptions

    train, test, labels = mnist_mlp

    class Acts:
        def array(self, split, name):
            return (train if split == "train" else test)[name]

    names = ("knn", "lda", "qda")
    loaded = [(registry.PROBE_FAMILIES[n], registry.load(registry.PROBE_FAMILIES[n].impl)) for n in names]
    test_labels = {"test": labels["test"], "train_corrupted": labels["train_corrupted"],
                   "train_true": labels["train_true"]}

    def rows():
        context = LayerContext(Acts(), "fc1", ("mlp", "mnist", 0.4, 1, 0), test_labels, np.arange(10),
                               ProbeOptions(device=CPU))
        with caplog.at_level(logging.WARNING):
            return {(r.probe, r.fit_labels): r.accuracy
                    for r in probe_layer(context, loaded, dict.fromkeys(("corrupted", "true")), ("corrupted", "true"))}

    cpu = rows()
    called = []
    for name in ("cosine_kneighbors", "fit_lda_device", "DeviceQDA"):
        real = getattr(device_baselines, name)
        monkeypatch.setattr(device_baselines, name, lambda *a, _real=real, _name=name, **k: (called.append(_name),
                                                                                            _real(*a, **k))[1])
    monkeypatch.setattr(device_baselines, "on_device", lambda device: True)
    device = rows()
    assert sorted(set(called)) == ["DeviceQDA", "cosine_kneighbors", "fit_lda_device"]
    assert cpu.keys() == device.keys() and len(cpu) == 6
    for key in cpu:
        assert abs(cpu[key] - device[key]) <= 1e-3, key


def test_the_benchmark_times_both_paths_and_checks_their_agreement(tmp_path):
    import contextlib
    import io
    import json

    from latentgen.bench.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["baselines_device", "--json", "--device", "cpu", "--data-root", str(tmp_path), "--n-train", "800",
              "--n-test", "100", "--epochs", "1"])
    figures = json.loads(out.getvalue())
    assert figures["data"].startswith("SYNTHETIC") and figures["n_features"] == 2048
    assert figures["knn_identical"] and figures["logistic_identical"] and figures["lda_agreement"] >= 0.99
    assert all(figures[f"{name}_ratio"] > 0 for name in ("knn", "lda", "qda", "logistic"))
