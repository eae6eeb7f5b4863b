"""MASC and VeLPIC against a brute-force version of the authors' procedure, written here."""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
import torch

from latentgen.probing import subspaces as probes
from latentgen.probing.masc_velpic import MASC, VeLPIC, fit_probes


# ------------------------------------------------------------------------------------------
# brute force: explicit ± augmentation, np.cov, np.linalg.eigh, angles (SPEC §6–7)


def brute_subspaces(X, y, classes, variance=0.99, n_components=None):
    out = []
    for k in classes:
        Xk = X[y == k].astype(np.float64)
        augmented = np.empty((2 * len(Xk), X.shape[1]))
        augmented[0::2], augmented[1::2] = Xk, -Xk
        values, vectors = np.linalg.eigh(np.cov(augmented, rowvar=False))
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        if n_components is None:
            r = int(np.count_nonzero(np.cumsum(values) / values.sum() <= variance)) + 1
        else:
            r = n_components
        P = vectors.T[:r]
        out.append(P / np.linalg.norm(P, axis=1, keepdims=True))
    return out


def brute_angles(X, subspaces):
    """Angle (degrees) between each row and its projection on each class subspace (N×K)."""
    X = X.astype(np.float64)
    angles = np.empty((len(X), len(subspaces)))
    for k, P in enumerate(subspaces):
        proj = (X @ P.T) @ P
        cos = np.einsum("nd,nd->n", X, proj) / (np.linalg.norm(X, axis=1) * np.linalg.norm(proj, axis=1))
        angles[:, k] = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    return angles


def brute_velpic(X, y, classes, sign="all"):
    vectors = []
    for k, P in zip(classes, brute_subspaces(X, y, classes, n_components=1)):
        rows = X if sign == "all" else X[y == k]
        T = np.mean(rows.astype(np.float64) @ P[0])
        vectors.append(-P[0] if T < 0 else P[0])
    return np.array(vectors)


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    # the brute force's eigh is slow with multi-threaded BLAS on shared cores
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def projector(P):
    return P.T @ P


# ------------------------------------------------------------------------------------------
# data


def gaussian_data(rng, n_per_class, d, classes=4):
    means = rng.normal(size=(classes, d))
    X = np.concatenate([m + rng.normal(size=(n_per_class, d)) for m in means])
    y = np.repeat(np.arange(classes), n_per_class)
    return X, y


def relu_subspace_data(rng, n_per_class, d, classes=3, rank=12, dead=7):
    """Non-negative rows near a class-specific low-rank subspace, with dead features (all zero)."""
    X, y = [], []
    for k in range(classes):
        basis = rng.normal(size=(rank, d))
        codes = rng.normal(size=(n_per_class, rank)) * np.linspace(3, 0.3, rank)
        X.append(np.maximum(codes @ basis + 0.5 + 0.1 * rng.normal(size=(n_per_class, d)), 0))
        y.append(np.full(n_per_class, k))
    X = np.concatenate(X)
    X[:, rng.choice(d, dead, replace=False)] = 0.0
    return X, np.concatenate(y)


# (n rows per class, d): d < n_k (d×d Gram, small and staged LAPACK route) and d > n_k (row Gram)
SHAPES = {
    "d<n small": (120, 30),
    "d<n staged": (300, 270),
    "d>n small": (40, 150),
    "d>n staged": (270, 300),
}


@pytest.mark.parametrize("kind", ["gaussian", "relu_subspace"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_brute_force(kind, shape):
    n_per_class, d = SHAPES[shape]
    rng = np.random.default_rng(zlib.crc32(f"{kind} {shape}".encode()))
    make = gaussian_data if kind == "gaussian" else relu_subspace_data
    X, y = make(rng, n_per_class, d)
    X_test, _ = make(rng, 60, d)
    classes = np.unique(y)

    masc, velpic = fit_probes(X, y, device="cpu")
    ref = brute_subspaces(X, y, classes)
    assert masc.n_components_.tolist() == [len(P) for P in ref]
    for P, Q in zip(masc.components_, ref):
        np.testing.assert_allclose(P @ P.T, np.eye(len(P)), atol=1e-9)
        np.testing.assert_allclose(projector(P), projector(Q), atol=1e-7)

    angles = brute_angles(X_test, ref)
    np.testing.assert_array_equal(masc.predict(X_test), classes[np.argmin(angles, axis=1)])
    np.testing.assert_allclose(masc.class_scores(X_test), np.cos(np.radians(angles)) ** 2, atol=1e-9)

    vectors = brute_velpic(X, y, classes)
    np.testing.assert_allclose(velpic.class_vectors_, vectors, atol=1e-7)
    np.testing.assert_array_equal(velpic.predict(X_test), classes[np.argmax(X_test @ vectors.T, axis=1)])


def test_float32_input_gives_the_same_subspaces_and_predictions():
    rng = np.random.default_rng(1)
    X, y = relu_subspace_data(rng, 200, 80)
    X32 = X.astype(np.float32)
    m64, v64 = fit_probes(X32.astype(np.float64), y, device="cpu")
    m32, v32 = fit_probes(X32, y, device="cpu")
    assert m32.n_components_.tolist() == m64.n_components_.tolist()
    np.testing.assert_array_equal(m32.predict(X32), m64.predict(X32))
    np.testing.assert_array_equal(v32.predict(X32), v64.predict(X32.astype(np.float64)))
    assert v32.class_scores(X32).dtype == np.float32  # scored as the transferred network does


def test_string_labels_and_class_order():
    rng = np.random.default_rng(2)
    X, y = gaussian_data(rng, 50, 10, classes=3)
    names = np.array(["cat", "ant", "bee"])[y]
    masc = MASC(device="cpu").fit(X, names)
    assert masc.classes_.tolist() == ["ant", "bee", "cat"]
    numeric = MASC(device="cpu").fit(X, np.searchsorted(["ant", "bee", "cat"], names))
    np.testing.assert_array_equal(masc.predict(X), masc.classes_[numeric.predict(X)])


# ------------------------------------------------------------------------------------------
# properties


def test_proposition_1_quadratic_form():
    """cos²θ_k = xᵀ(Σ_i p_i p_iᵀ)x / ‖x‖² and the prediction is argmax_k of the quadratic form."""
    rng = np.random.default_rng(3)
    X, y = relu_subspace_data(rng, 150, 40)
    X_test = rng.normal(size=(200, 40))
    masc = MASC(device="cpu").fit(X, y)
    inside = rng.normal(size=(20, 3)) @ masc.components_[0][:3]  # rows in class 0's subspace
    scores = masc.class_scores(np.vstack([X_test, inside]))
    assert np.all((scores >= 0) & (scores <= 1)) and np.allclose(scores[-20:, 0], 1.0)
    quadratic = np.stack([np.einsum("nd,de,ne->n", X_test, projector(P), X_test) for P in masc.components_], axis=1)
    np.testing.assert_allclose(masc.class_scores(X_test),
                               quadratic / np.sum(X_test ** 2, axis=1, keepdims=True), rtol=1e-10)
    np.testing.assert_array_equal(masc.predict(X_test), np.argmax(quadratic, axis=1))


def test_positive_rescaling_never_changes_a_prediction():
    rng = np.random.default_rng(4)
    X, y = gaussian_data(rng, 80, 25)
    X_test = rng.normal(size=(300, 25))
    scales = np.exp(rng.uniform(-8, 8, size=(300, 1)))
    masc, velpic = fit_probes(X, y, device="cpu")
    np.testing.assert_array_equal(masc.predict(X_test * scales), masc.predict(X_test))
    np.testing.assert_array_equal(velpic.predict(X_test * scales), velpic.predict(X_test))


def test_velpic_sign_rule_both_modes():
    """Class 0 lies at +e0 but the overall mean lies at −e0: the two modes disagree on v_0."""
    rng = np.random.default_rng(5)
    d = 6
    e0 = np.eye(d)[0]
    class0 = 1.0 * e0 + 0.05 * rng.normal(size=(100, d))
    class1 = -6.0 * e0 + 3.0 * np.eye(d)[1] + 0.05 * rng.normal(size=(100, d))
    X, y = np.concatenate([class0, class1]), np.repeat([0, 1], 100)
    by_all = VeLPIC(device="cpu").fit(X, y)
    by_class = VeLPIC(sign="class", device="cpu").fit(X, y)
    np.testing.assert_allclose(by_all.class_vectors_, brute_velpic(X, y, [0, 1], "all"), atol=1e-9)
    np.testing.assert_allclose(by_class.class_vectors_, brute_velpic(X, y, [0, 1], "class"), atol=1e-9)
    assert by_all.class_vectors_[0] @ e0 < -0.99 and by_class.class_vectors_[0] @ e0 > 0.99
    assert by_all.flipped_[0] != by_class.flipped_[0]
    np.testing.assert_allclose(by_all.mean_projections_, (X @ by_all.class_vectors_.T).mean(0)
                               * np.where(by_all.flipped_, -1, 1), rtol=1e-9)
    # the default is the authors' rule
    assert VeLPIC().sign == "all"


def test_velpic_is_argmax_projection_and_unit_vectors():
    rng = np.random.default_rng(6)
    X, y = relu_subspace_data(rng, 100, 30)
    velpic = VeLPIC(device="cpu").fit(X, y)
    np.testing.assert_allclose(np.linalg.norm(velpic.class_vectors_, axis=1), 1.0)
    np.testing.assert_array_equal(velpic.predict(X), np.argmax(X @ velpic.class_vectors_.T, axis=1))


def _spectrum_data(variances, d, rng):
    """One class whose ± augmented second moment has exactly the eigenvalues ∝ ``variances``
    along a random orthonormal basis (rows ±sqrt(v_i)·q_i), plus a second, unrelated class."""
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rows = np.sqrt(np.asarray(variances))[:, None] * Q[:len(variances)]
    other = rng.normal(size=(20, d))
    return np.concatenate([rows, other]), np.repeat([0, 1], [len(rows), 20])


@pytest.mark.parametrize("variance, expected", [(0.3, 1), (0.6, 2), (0.85, 3), (0.96, 4), (1.0, 5)])
def test_variance_rule_includes_the_crossing_component(variance, expected):
    # cumulative ratios 0.5, 0.8, 0.95, 0.99, 1.0 → r = #{ratio ≤ v} + 1, capped at the rank (5)
    X, y = _spectrum_data([50, 30, 15, 4, 1], 8, np.random.default_rng(7))
    masc = MASC(variance=variance, device="cpu").fit(X, y)
    assert masc.n_components_[0] == expected
    assert masc.n_components_[0] == min(len(brute_subspaces(X, y, [0], variance)[0]), 5)
    np.testing.assert_allclose(masc.explained_variance_ratio_[0], np.array([50, 30, 15, 4, 1])[:expected] / 100)


@pytest.mark.parametrize("variance, expected", [(0.5, 2), (0.75, 3), (0.875, 4), (0.7, 2)])
def test_ratio_equal_to_variance_counts_as_below(variance, expected):
    """Exact arithmetic: X_kᵀX_k = diag(4, 2, 1, 1), cumulative ratios exactly 0.5, 0.75, 0.875, 1;
    the authors count ratio ≤ v, so a ratio equal to v still adds the next component."""
    e = np.eye(6)
    X = np.vstack([2 * e[0], e[1], e[1], e[2], e[3], 3 * e[4] + e[5], e[5] - e[4]])
    y = np.array([0, 0, 0, 0, 0, 1, 1])
    assert MASC(variance=variance, device="cpu").fit(X, y).n_components_[0] == expected


def test_ties_go_to_the_lowest_class_index():
    rng = np.random.default_rng(17)
    X, _ = gaussian_data(rng, 40, 8, classes=1)
    other = rng.normal(size=(40, 8)) + 5
    # classes 1 and 2 have identical training rows, so identical subspaces and vectors
    X_all = np.vstack([other, X, X])
    y = np.repeat([0, 1, 2], 40)
    masc, velpic = fit_probes(X_all, y, device="cpu")
    X_test = X + 0.01
    for probe in (masc, velpic):
        scores = probe.class_scores(X_test)
        assert np.array_equal(scores[:, 1], scores[:, 2])
        predicted = probe.predict(X_test)
        assert not np.any(predicted == 2)
        np.testing.assert_array_equal(predicted == 1, scores[:, 1] > scores[:, 0])


def test_n_components_paths():
    rng = np.random.default_rng(8)
    X, y = relu_subspace_data(rng, 120, 40)
    one = MASC(n_components=1, device="cpu").fit(X, y)
    assert one.n_components_.tolist() == [1, 1, 1]  # one component, not 100 %
    full = MASC(variance=0.99, device="cpu").fit(X, y)
    assert all(r > 1 for r in full.n_components_)
    for P1, P in zip(one.components_, full.components_):
        np.testing.assert_allclose(P1, P[:1], atol=1e-12)
    three = MASC(n_components=3, device="cpu").fit(X, y)
    assert three.n_components_.tolist() == [3, 3, 3]
    ref = brute_subspaces(X, y, [0, 1, 2], n_components=3)
    X_test = rng.normal(size=(100, 40)) + 0.5
    np.testing.assert_array_equal(three.predict(X_test), np.argmin(brute_angles(X_test, ref), axis=1))
    # n_components overrides variance; one component of MASC is |x·p|, VeLPIC's signed x·v
    np.testing.assert_allclose(one.class_scores(X_test),
                               (X_test @ VeLPIC(device="cpu").fit(X, y).class_vectors_.T) ** 2
                               / np.sum(X_test ** 2, axis=1, keepdims=True), rtol=1e-9)


def test_n_components_capped_at_class_rank():
    rng = np.random.default_rng(9)
    X, y = _spectrum_data([5, 3, 1], 10, rng)
    masc = MASC(n_components=6, device="cpu").fit(X, y)
    assert masc.n_components_.tolist() == [3, 6]


# ------------------------------------------------------------------------------------------
# one decomposition, GPU code path, zero rows


def test_fit_probes_decomposes_once(monkeypatch):
    calls = []
    original = probes._decompose_class

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(probes, "_decompose_class", counting)
    rng = np.random.default_rng(10)
    X, y = gaussian_data(rng, 60, 12)
    masc, velpic = fit_probes(X, y, device="cpu")
    assert len(calls) == 4  # once per class, shared by both probes
    alone_masc = MASC(device="cpu").fit(X, y)
    alone_velpic = VeLPIC(device="cpu").fit(X, y)
    np.testing.assert_array_equal(masc.predict(X), alone_masc.predict(X))
    np.testing.assert_array_equal(velpic.class_vectors_, alone_velpic.class_vectors_)
    for v, P in zip(velpic.class_vectors_, masc.components_):
        assert abs(v @ P[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", ["d<n staged", "d>n small"])
def test_torch_code_path_matches_lapack_path(shape):
    """The GPU route (torch Gram + torch.linalg.eigh), run here on CPU tensors."""
    n_per_class, d = SHAPES[shape]
    X, _ = relu_subspace_data(np.random.default_rng(11), n_per_class, d, classes=1)
    cpu = torch.device("cpu")
    w1, rank1, P1 = probes._decompose_class(X, 0.99, None, cpu, use_torch=False)
    w2, rank2, P2 = probes._decompose_class(X, 0.99, None, cpu, use_torch=True)
    assert rank1 == rank2 and len(P1) == len(P2)
    np.testing.assert_allclose(w1[:rank1], w2[:rank2], rtol=1e-9, atol=1e-9 * w1[0])
    np.testing.assert_allclose(projector(P1), projector(P2), atol=1e-8)


def test_zero_row_has_a_defined_answer():
    rng = np.random.default_rng(12)
    X, y = gaussian_data(rng, 50, 10)
    masc, velpic = fit_probes(X, y + 3, device="cpu")  # classes 3..6
    X_test = np.vstack([np.zeros(10), rng.normal(size=10)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = masc.class_scores(X_test)
        assert masc.predict(X_test)[0] == 3 and velpic.predict(X_test)[0] == 3
    assert np.all(scores[0] == 0) and np.all(np.isfinite(scores))
    assert np.all(velpic.class_scores(X_test)[0] == 0)


def test_all_zero_class_gets_empty_subspace():
    rng = np.random.default_rng(13)
    X = np.vstack([np.zeros((10, 5)), rng.normal(size=(10, 5))])
    y = np.repeat([0, 1], 10)
    masc, velpic = fit_probes(X, y, device="cpu")
    assert masc.n_components_[0] == 0 and np.all(velpic.class_vectors_[0] == 0)
    assert np.all(masc.class_scores(rng.normal(size=(4, 5)))[:, 0] == 0)


# ------------------------------------------------------------------------------------------
# scikit-learn conformance and bad input


@pytest.mark.parametrize("estimator", [MASC(device="cpu"), VeLPIC(device="cpu")], ids=["MASC", "VeLPIC"])
def test_check_estimator(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed


@pytest.mark.parametrize("make, fit_args, match", [
    (lambda: MASC(), lambda X, y: (X[:-1], y), "inconsistent numbers of samples"),
    (lambda: MASC(), lambda X, y: (np.where(np.eye(*X.shape) > 0, np.nan, X), y), "NaN"),
    (lambda: VeLPIC(), lambda X, y: (np.where(np.eye(*X.shape) > 0, np.inf, X), y), "infinity"),
    (lambda: MASC(variance=0.0), lambda X, y: (X, y), r"variance must be in \(0, 1\]"),
    (lambda: MASC(variance=1.5), lambda X, y: (X, y), r"variance must be in \(0, 1\]"),
    (lambda: MASC(variance=float("nan")), lambda X, y: (X, y), r"variance must be in \(0, 1\]"),
    (lambda: MASC(variance="most"), lambda X, y: (X, y), "variance must be a number"),
    (lambda: MASC(n_components=0), lambda X, y: (X, y), "n_components must be a positive integer"),
    (lambda: MASC(n_components=99), lambda X, y: (X, y), "exceeds the number of features"),
    (lambda: VeLPIC(sign="mean"), lambda X, y: (X, y), "unknown sign mode 'mean'"),
    (lambda: MASC(), lambda X, y: (X, np.zeros_like(y)), "at least 2 classes"),
    (lambda: MASC(device="tpu"), lambda X, y: (X, y), "unknown device"),
])
def test_bad_fit_input(make, fit_args, match):
    X, y = gaussian_data(np.random.default_rng(14), 20, 8)
    estimator = make()
    if estimator.device == "auto":
        estimator.set_params(device="cpu")
    with pytest.raises(ValueError, match=match):
        estimator.fit(*fit_args(X, y))


def test_class_without_rows_is_named():
    X, y = gaussian_data(np.random.default_rng(15), 20, 8, classes=3)
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] have no training rows"):
        fit_probes(X, y, classes=[0, 1, 2, 3], device="cpu")
    with pytest.raises(ValueError, match=r"label\(s\) \[2\] that are not in classes"):
        MASC(device="cpu").fit(X, y, classes=[0, 1])


def test_wrong_feature_count_at_predict():
    X, y = gaussian_data(np.random.default_rng(16), 20, 8)
    masc, velpic = fit_probes(X, y, device="cpu")
    for probe in (masc, velpic):
        with pytest.raises(ValueError, match="X has 7 features, but .* is expecting 8 features"):
            probe.predict(X[:, :7])
        with pytest.raises(ValueError, match="NaN"):
            probe.predict(np.full((2, 8), np.nan))


# ------------------------------------------------------------------------------------------
# real data


def test_real_mnist_probes_beat_chance(mnist_root):
    from latentgen.data.datasets import load_dataset
    from latentgen.models.forward import extract_activations
    from latentgen.models.architectures import build_model

    data = load_dataset("mnist", data_root=mnist_root)
    model = build_model("mlp", "mnist", seed=0).eval()
    with torch.no_grad():
        train = extract_activations(model, data.train_x[:6000], ["fc2"])["fc2"].numpy()
        test = extract_activations(model, data.test_x[:2000], ["fc2"])["fc2"].numpy()
    masc, velpic = fit_probes(train, data.train_y[:6000].numpy(), device="cpu")
    y_test = data.test_y[:2000].numpy()
    # chance is 0.10; a random-init MLP layer keeps enough of the input geometry for both
    assert masc.score(test, y_test) > 0.5
    assert velpic.score(test, y_test) > 0.4
    assert math.isclose(masc.score(test, y_test), np.mean(masc.predict(test) == y_test))


def test_benchmark_reference_procedure_agrees():
    """The benchmark's reference (the authors' procedure) and our probes, on small data."""
    from latentgen.bench import probes as bench

    rng = np.random.default_rng(18)
    X, y = relu_subspace_data(rng, 150, 60, classes=4)
    X_test, _ = relu_subspace_data(rng, 50, 60, classes=4)
    X, X_test = X.astype(np.float32), X_test.astype(np.float32)
    classes = np.unique(y)
    masc, velpic = fit_probes(X, y, device="cpu")
    subspaces = bench.reference_subspaces(X, y, classes, 0.99)
    assert [len(P) for P in subspaces] == masc.n_components_.tolist()
    np.testing.assert_array_equal(bench.reference_masc_predict(X_test, subspaces), masc.predict(X_test))
    vectors = bench.reference_velpic(X, bench.reference_subspaces(X, y, classes, 1))
    np.testing.assert_allclose(vectors.numpy(), velpic.class_vectors_, atol=1e-6)
    np.testing.assert_array_equal(bench.reference_velpic_predict(X_test, vectors), velpic.predict(X_test))


# ------------------------------------------------------------------------------------------
# several thresholds from one decomposition (the sensitivity study)


@pytest.mark.parametrize("shape", ["d<n staged", "d>n small"])
def test_one_fit_serves_every_threshold(shape, monkeypatch):
    n_per_class, d = SHAPES[shape]
    rng = np.random.default_rng(zlib.crc32(f"thresholds {shape}".encode()))
    X, y = relu_subspace_data(rng, n_per_class, d)
    X_test, _ = relu_subspace_data(rng, 40, d)
    calls = []
    original = probes._decompose_class
    monkeypatch.setattr(probes, "_decompose_class", lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = probes.ClassSubspaces(0.99, extra_variances=(0.25, 0.5, 0.75), extra_n_components=(1,),
                                   device="cpu").fit(X, y)
    assert len(calls) == 3  # one decomposition per class, whatever the thresholds
    monkeypatch.setattr(probes, "_decompose_class", original)
    for params in ({"variance": 0.25}, {"variance": 0.5}, {"variance": 0.75}, {"variance": 0.99},
                   {"n_components": 1}):
        view = shared.at(**params)
        alone = MASC(device="cpu", **params).fit(X, y)
        assert view.n_components_.tolist() == alone.n_components_.tolist()
        for P, Q, computed in zip(view.components_, alone.components_, shared.computed_components_):
            assert np.shares_memory(P, computed)  # a view: no copy, no recomputation
            np.testing.assert_allclose(projector(P), projector(Q), atol=1e-9)
        np.testing.assert_array_equal(MASC.from_subspaces(view).predict(X_test), alone.predict(X_test))
    assert shared.at(variance=0.99).n_components_.tolist() == shared.n_components_.tolist()
    # 0.99 needs the most components: the extra thresholds cost no extra eigenvectors
    plain = probes.ClassSubspaces(0.99, device="cpu").fit(X, y)
    assert [len(c) for c in plain.computed_components_] == [len(c) for c in shared.computed_components_]
    with pytest.raises(ValueError, match="fit with this threshold in extra_variances"):
        probes.ClassSubspaces(0.5, device="cpu").fit(X, y).at(variance=0.99)
    with pytest.raises(ValueError, match="needs a variance or n_components"):
        shared.at()
