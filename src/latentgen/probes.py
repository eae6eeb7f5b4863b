"""Probes of layer activations: MASC, VeLPIC and the baselines of the 2025 paper.

MASC and VeLPIC are exactly the authors' algorithms (SPEC §6–7), computed differently:

- **Subspaces.** Class k's subspace comes from PCA of its ± augmented rows
  ``[x1, −x1, x2, −x2, …]``. That data has mean 0, so ``np.cov`` of it is the uncentered second
  moment ``2·X_kᵀX_k / (2n_k − 1)``: we form ``X_kᵀX_k`` (in float64, in row blocks) and never
  build the ± copy. Features that are zero on every row of the class (dead ReLU units) are
  dropped before the eigen-decomposition: they only add exact zero eigenvalues. When a class
  has fewer rows than (live) features we decompose the n_k×n_k Gram ``X_k X_kᵀ`` instead and
  map its eigenvectors back (``v = X_kᵀu / ‖X_kᵀu‖``); the nonzero spectrum is the same.
- **Components.** All eigenvalues first (on the CPU: one LAPACK tridiagonalisation and the
  tridiagonal eigenvalues), then ``r`` from them, then only the top r eigenvectors. With
  ``variance=v`` (default 0.99), ``r = #{i : cumsum(λ)_i / Σλ ≤ v} + 1``: the component that
  crosses v is included, as in the authors' code. ``n_components=k`` forces k components
  (k=1 is one component, the authors' "n = 1"). ``variance=1.0`` keeps every component of
  nonzero variance. r never exceeds the class's numerical rank: components of zero variance
  are arbitrary directions (any basis of the null space), so no answer could depend on them.
  The Gram matrix is accumulated in float64 because r must be the authors' float64 count: on
  MNIST fc4 the cumulative ratio passes within 2e-6 of 0.99 for some classes, and a float32
  Gram moves it by ~1e-8 — rarely enough to flip r, but not never.
- **Scores.** MASC's cos θ_k = ‖P_k x‖ / ‖x‖ (SPEC §6.4; Proposition 1 of the TMLR paper), so
  we score cos²θ_k = ‖P_k x‖² / ‖x‖² with one matrix product against all classes' components
  instead of angles, in float64 as the authors. argmin θ = argmax cos²; ties go to the lowest
  class index, as ``torch.min`` in the authors' code. cos² is clipped to [0, 1] as the authors
  clamp cos. VeLPIC scores ``x·v_k`` and predicts the argmax (first index on ties).
- **VeLPIC's sign.** ``v_k = p_k`` flipped when T_k, the mean projection of training rows on
  p_k, is negative. ``sign="all"`` (default) averages over **all** training rows of every class,
  as the authors' code (SPEC §7.2, D6); ``sign="class"`` averages over class k's rows only, the
  paper's wording (footnote 4). They differ when the overall mean lies on the other side of
  p_k's orthogonal hyperplane than class k's mean. Before the rule, every eigenvector is given
  a canonical sign (its largest-magnitude entry positive), so T_k = 0 has one answer.
- **VeLPIC's dtype.** Scores are computed in the dtype of X: float32 activations are scored in
  float32 with the float32-rounded class vectors through ``torch.nn.functional.linear`` —
  exactly what the network computes after ``transfer_velpic`` — so the transfer reproduces
  VeLPIC's predictions by construction. float64 input is scored in float64 (the authors).
- **Zero rows.** A zero row at predict time scores 0 for every class (its angle to every
  subspace is undefined) and is predicted as ``classes_[0]``, which is also what the authors'
  code returns (NaN propagates through ``torch.min``, which then picks the first class). One
  deliberate difference: a nonzero x orthogonal to class k's subspace gets cos² = 0 (θ = 90°)
  here, while the authors' 0/0 gives NaN and ``torch.min`` would pick class k.
- A class whose training rows are all zero has an empty subspace (MASC score 0) and a zero class
  vector (VeLPIC score 0).

``fit_probes(X, y)`` builds MASC and VeLPIC from one ``ClassSubspaces`` (one decomposition).
Everything runs on the configured torch device (``device="auto"``: CUDA when available): on a
GPU the Gram matrices and ``torch.linalg.eigh`` run there in float64, one class after another;
on the CPU classes are decomposed in parallel, one per BLAS thread, each single-threaded.
``class_scores(X)`` is always n×K; ``decision_function`` follows scikit-learn (n×K, or
``score₁ − score₀`` for two classes), and ``predict`` is derived from it.

Baselines (SPEC §10): logistic regression (``nn.Linear``, Adam 1e-3, 20 epochs, batch 128,
shuffled with an explicit seed), nearest class mean (cosine), k-NN (k=5, cosine), LDA, QDA.
``PROBES`` maps each probe's name to its factory; ``make_probe(name, **params)``.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_info, threadpool_limits

from latentgen import registry

SIGN_MODES = registry.SIGN_MODES
_ROW_BLOCK = 4096  # rows (or columns) per float64 block when accumulating a Gram matrix
_SMALL_EIGH = 256  # below this size a full eigh is cheaper than the staged LAPACK route
_SCORE_ELEMENTS = 1 << 24  # rows per scoring batch × max(score columns, features)


def _device(device) -> torch.device:
    from latentgen.devices import resolve_device

    return resolve_device(device)


def _blas_threads() -> int:
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


def _as_tensor(a: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``a`` as a tensor on ``device``; copies read-only or non-contiguous arrays (torch needs both)."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C")
    return torch.from_numpy(a).to(device, dtype)


# ------------------------------------------------------------------------------------------
# checks


def check_variance(variance) -> float:
    """``variance`` as a float in (0, 1] (MASC's threshold); ValueError otherwise."""
    try:
        value = float(variance)
    except (TypeError, ValueError):
        raise ValueError(f"variance must be a number in (0, 1], got {variance!r}") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"variance must be in (0, 1], got {variance!r}")
    return value


def _check_n_components(n_components, n_features: int):
    if n_components is None:
        return None
    if isinstance(n_components, (bool, np.bool_)) or int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer or None, got {n_components!r}")
    if n_components > n_features:
        raise ValueError(f"n_components={n_components} exceeds the number of features ({n_features})")
    return int(n_components)


def _check_sign(sign) -> str:
    if sign not in SIGN_MODES:
        raise ValueError(f"unknown sign mode {sign!r}; choose one of {', '.join(SIGN_MODES)}")
    return sign


def _check_fit_data(estimator, X, y, classes):
    """Validated (X, class indices, classes): X float32 or float64, finite; every class has rows."""
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    X, y = validate_data(estimator, X, y, dtype=[np.float64, np.float32], ensure_all_finite=True)
    check_classification_targets(y)
    present = np.unique(y)
    if classes is None:
        classes = present
    else:
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(np.unique(classes)) != len(classes):
            raise ValueError("classes must be a 1-D array of distinct labels")
        classes = np.sort(classes)
        unknown = np.setdiff1d(present, classes)
        if len(unknown):
            raise ValueError(f"y has label(s) {unknown.tolist()[:10]} that are not in classes")
        empty = np.setdiff1d(classes, present)
        if len(empty):
            raise ValueError(f"class(es) {empty.tolist()[:10]} have no training rows")
    if len(classes) < 2:
        raise ValueError(f"{type(estimator).__name__} needs at least 2 classes, got 1 class ({classes[0]!r})")
    return X, np.searchsorted(classes, y), classes


# ------------------------------------------------------------------------------------------
# the shared decomposition


def _n_components(eigenvalues, rank: int, variance: float, n_components) -> int:
    """The authors' component count (SPEC §6.3), capped at the class's numerical rank."""
    if rank == 0:
        return 0
    if n_components is not None:
        return min(n_components, rank)
    ratio = np.cumsum(eigenvalues) / eigenvalues.sum()
    return min(int(np.count_nonzero(ratio <= variance)) + 1, rank)


def _numerical_rank(eigenvalues, size: int) -> int:
    # numpy's matrix_rank tolerance, applied to a symmetric positive semi-definite matrix
    if len(eigenvalues) == 0 or eigenvalues[0] <= 0:
        return 0
    tol = eigenvalues[0] * size * np.finfo(np.float64).eps
    return int(np.count_nonzero(eigenvalues > tol))


def _top_eigenpairs_cpu(G: np.ndarray, how_many):
    """All eigenvalues (descending) of symmetric G and its top m eigenvectors as rows, m = how_many(λ).

    LAPACK's staged route (what ``dsyevr`` does), so eigenvectors are computed only for the m
    needed: tridiagonalise once (dsytrd), eigenvalues of the tridiagonal (sterf), m eigenvectors
    of the tridiagonal (stemr), back-transform with the Householder reflectors. LAPACK's dormtr
    is not wrapped by scipy; for ``lower`` storage it is dormqr on rows 2..n.
    """
    n = G.shape[0]
    if n <= _SMALL_EIGH:
        w, V = np.linalg.eigh(G)
        w = w[::-1]
        m = how_many(w)
        return w, np.ascontiguousarray(V[:, ::-1][:, :m].T)
    lwork = int(lapack.dsytrd_lwork(n, lower=1)[0])
    # G is symmetric, so its transpose (a Fortran-ordered view) is G itself: no copy
    a, diag, off, tau, info = lapack.dsytrd(G.T, lower=1, lwork=lwork, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsytrd failed (info={info})")
    w = scipy.linalg.eigvalsh_tridiagonal(diag, off, lapack_driver="sterf")[::-1]
    m = how_many(w)
    if m == 0:
        return w, np.zeros((0, n))
    try:
        _, Z = scipy.linalg.eigh_tridiagonal(diag, off, select="i", select_range=(n - m, n - 1),
                                             lapack_driver="stemr")
    except np.linalg.LinAlgError:  # MRRR can fail on rare inputs; bisection + inverse iteration cannot
        _, Z = scipy.linalg.eigh_tridiagonal(diag, off, select="i", select_range=(n - m, n - 1),
                                             lapack_driver="stebz")
    Z = np.asfortranarray(Z[:, ::-1])
    reflectors = a[1:, :-1]
    lwork = int(lapack.dormqr("L", "N", reflectors, tau, Z[1:], -1)[1][0])
    rest, _, info = lapack.dormqr("L", "N", reflectors, tau, Z[1:], max(lwork, 1))
    if info != 0:
        raise np.linalg.LinAlgError(f"dormqr failed (info={info})")
    Z[1:] = rest
    return w, np.ascontiguousarray(Z.T)


def _top_eigenpairs_torch(G: torch.Tensor, how_many):
    w, V = torch.linalg.eigh(G)
    w = w.flip(0).cpu().numpy()
    m = how_many(w)
    return w, V[:, V.shape[1] - m:].flip(1).T.cpu().numpy()


def _gram(Xa, rows: bool, device: torch.device, use_torch: bool):
    """float64 ``XᵀX`` (or ``XXᵀ`` with ``rows``), accumulated over blocks converted to float64."""
    n, d = Xa.shape
    if not use_torch:
        G = np.zeros((n, n) if rows else (d, d))
        for i in range(0, d if rows else n, _ROW_BLOCK):
            block = (Xa[:, i:i + _ROW_BLOCK] if rows else Xa[i:i + _ROW_BLOCK]).astype(np.float64)
            G += block @ block.T if rows else block.T @ block
        return G
    Xt = _as_tensor(Xa, device)
    G = torch.zeros((n, n) if rows else (d, d), dtype=torch.float64, device=device)
    for i in range(0, d if rows else n, _ROW_BLOCK):
        block = (Xt[:, i:i + _ROW_BLOCK] if rows else Xt[i:i + _ROW_BLOCK]).double()
        G += block @ block.T if rows else block.T @ block
    return G


def _canonical_signs(V: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (eigenvector signs are arbitrary)."""
    if len(V):
        pivot = V[np.arange(len(V)), np.abs(V).argmax(axis=1)]
        V *= np.where(pivot < 0, -1.0, 1.0)[:, None]
    return V


def _decompose_class(Xk: np.ndarray, variance: float, n_components, device: torch.device, use_torch=None,
                     also=()):
    """Eigenvalues (of X_kᵀX_k, descending, nonzero part), the numerical rank and the leading unit
    eigenvectors: r_k of them for (``variance``, ``n_components``), or the most that any threshold
    of ``also`` (more ``(variance, n_components)`` pairs) needs. numpy/LAPACK on the CPU; torch on
    other devices (``use_torch`` forces it)."""
    use_torch = device.type != "cpu" if use_torch is None else use_torch
    n_k, d = Xk.shape
    live = np.flatnonzero(np.any(Xk != 0, axis=0))  # features not identically zero in this class
    Xa = Xk[:, live] if len(live) < d else Xk
    use_rows = n_k < len(live)  # fewer rows than features: decompose the n_k×n_k Gram
    G = _gram(Xa, use_rows, device, use_torch)
    size = G.shape[0]
    rank = [0]
    thresholds = [(variance, n_components), *also]

    def how_many(w):
        rank[0] = _numerical_rank(w, size)
        return max(_n_components(w, rank[0], v, n) for v, n in thresholds)

    eig = _top_eigenpairs_torch if use_torch else _top_eigenpairs_cpu
    w, V = eig(G, how_many) if size else (np.zeros(0), np.zeros((0, 0)))
    del G
    if use_rows and len(V):  # v = X_kᵀu / ‖X_kᵀu‖
        U = V
        V = np.empty((len(U), Xa.shape[1]))
        for j in range(0, Xa.shape[1], _ROW_BLOCK):
            V[:, j:j + _ROW_BLOCK] = U @ Xa[:, j:j + _ROW_BLOCK].astype(np.float64)
        V /= np.linalg.norm(V, axis=1, keepdims=True)
    if len(live) == d and V.shape == (len(V), d):
        components = V  # every feature live: no scattered copy (r_k × d float64 can be GBs)
    else:
        components = np.zeros((len(V), d))
        components[:, live] = V
    del V
    return w, rank[0], _canonical_signs(components)


class ClassSubspaces(BaseEstimator):
    """Per-class principal subspaces of the ± augmented class data — the one decomposition that
    MASC and VeLPIC share (see the module docstring for the algorithm).

    ``fit(X, y, classes=None)`` learns, per class k (in ``classes_`` order):
    ``eigenvalues_[k]`` (descending, the nonzero part of the spectrum of the authors' covariance
    ``2·X_kᵀX_k/(2n_k−1)``), ``n_components_[k]`` (r_k), ``components_[k]`` (r_k×d orthonormal rows),
    ``explained_variance_ratio_[k]``, ``rank_[k]``, ``n_samples_[k]``, ``class_means_[k]``; and
    ``mean_`` (the mean training row). ``classes`` names the expected labels: one without
    training rows is an error (default: the labels present in y).

    **Several thresholds from one fit.** ``extra_variances`` (fractions in (0, 1]) and
    ``extra_n_components`` (counts) name further thresholds: the fit computes, per class, as many
    leading eigenvectors as the largest of all thresholds needs (``computed_components_``; with
    the default 0.99 and the sensitivity thresholds 0.25–0.99 and 1 PC that is no more than
    0.99 alone needs), and :meth:`at` then gives the subspaces of any of them from the same
    eigenvalues and eigenvectors — no second decomposition. ``components_`` of every threshold
    are views of the same arrays.
    """

    def __init__(self, variance=0.99, n_components=None, device="auto", extra_variances=(),
                 extra_n_components=()):
        self.variance = variance
        self.n_components = n_components
        self.device = device
        self.extra_variances = extra_variances
        self.extra_n_components = extra_n_components

    def fit(self, X, y, classes=None):
        variance = check_variance(self.variance)
        X, y_idx, classes = _check_fit_data(self, X, y, classes)
        n_components = _check_n_components(self.n_components, X.shape[1])
        also = [(check_variance(v), None) for v in self.extra_variances]
        also += [(1.0, _check_n_components(n, X.shape[1])) for n in self.extra_n_components]
        device = _device(self.device)
        self.classes_ = classes
        self.gram_eigenvalues_, self.computed_components_ = [], []
        self.rank_ = np.zeros(len(classes), dtype=np.int64)
        self.n_samples_ = np.bincount(y_idx, minlength=len(classes))
        self.class_means_ = np.zeros((len(classes), X.shape[1]))

        def decompose(k):
            Xk = np.take(X, np.flatnonzero(y_idx == k), axis=0)
            mean = Xk.sum(axis=0, dtype=np.float64) / len(Xk)
            return (mean, *_decompose_class(Xk, variance, n_components, device, also=also))

        if device.type == "cpu":
            # one class per worker, each with single-threaded BLAS, as many workers as BLAS has
            # threads (OMP_NUM_THREADS, which Snakemake sets to a job's threads): the
            # tridiagonalisation is bandwidth-bound and synchronises its threads 2d times, so
            # multi-threaded BLAS gains little on idle cores and collapses (4-10x slower,
            # measured) on shared ones
            workers = max(1, min(len(classes), _blas_threads()))
            with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(decompose, range(len(classes))))
        else:
            results = [decompose(k) for k in range(len(classes))]
        for k, (mean, w, rank, P) in enumerate(results):
            self.class_means_[k] = mean
            self.gram_eigenvalues_.append(w)
            self.computed_components_.append(P)
            self.rank_[k] = rank
        self.mean_ = self.n_samples_ @ self.class_means_ / self.n_samples_.sum()
        self.eigenvalues_ = [w * (2.0 / (2 * n - 1)) for w, n in zip(self.gram_eigenvalues_, self.n_samples_)]
        self._select(variance, n_components)
        return self

    def _select(self, variance, n_components):
        """``components_`` and what derives from them for one threshold (views, no copies)."""
        self.components_, self.explained_variance_ratio_ = [], []
        for k, (w, computed) in enumerate(zip(self.gram_eigenvalues_, self.computed_components_)):
            r = _n_components(w, int(self.rank_[k]), variance, n_components)
            if r > len(computed):
                raise ValueError(f"class {self.classes_[k]!r} needs {r} components at variance={variance}, "
                                 f"n_components={n_components}, but the fit computed {len(computed)}: fit with "
                                 "this threshold in extra_variances / extra_n_components")
            self.components_.append(computed[:r])
            self.explained_variance_ratio_.append(w[:r] / w.sum() if r else np.zeros(0))
        self.n_components_ = np.array([len(P) for P in self.components_], dtype=np.int64)

    def at(self, variance=None, n_components=None) -> "ClassSubspaces":
        """The subspaces of another threshold — ``variance`` (a fraction) or ``n_components`` (a
        count, which wins as in the constructor) — from this fit's eigenvalues and eigenvectors,
        with no new decomposition; a ValueError when the fit did not compute enough components
        (name the threshold in ``extra_variances`` / ``extra_n_components``)."""
        check_is_fitted(self)
        if variance is None and n_components is None:
            raise ValueError("at() needs a variance or n_components")
        variance = check_variance(1.0 if variance is None else variance)
        n_components = _check_n_components(n_components, self.n_features_in_)
        view = ClassSubspaces(variance, n_components, self.device, self.extra_variances, self.extra_n_components)
        for name, value in vars(self).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(view, name, value)
        view._select(variance, n_components)
        return view


# ------------------------------------------------------------------------------------------
# MASC and VeLPIC


def _batches(n: int, width: int):
    step = max(1, _SCORE_ELEMENTS // max(width, 1))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def _copy_input_attributes(source, target):
    target.classes_ = source.classes_
    target.n_features_in_ = source.n_features_in_
    if hasattr(source, "feature_names_in_"):
        target.feature_names_in_ = source.feature_names_in_


class _ClassScoreClassifier(ClassifierMixin, BaseEstimator):
    """Shared predict logic: one score per class, higher is closer; ties → lowest class index."""

    def class_scores(self, X) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X):
        """n×K class scores; with 2 classes, scikit-learn's 1-D convention ``score₁ − score₀``."""
        scores = self.class_scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        decision = self.decision_function(X)
        index = (decision > 0).astype(np.int64) if decision.ndim == 1 else decision.argmax(axis=1)
        return self.classes_[index]

    def _validate_predict_input(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # angle probes through the origin are built for high-dimensional layers; on scikit-learn's
        # standardised 2-D blobs a 99 % subspace is the whole plane and every class ties
        tags.classifier_tags.poor_score = True
        return tags


class MASC(_ClassScoreClassifier):
    """Minimum Angle Subspace Classifier (Ketha & Ramaswamy 2025), as the authors implement it.

    ``variance`` in (0, 1]: keep components up to and including the one whose cumulative
    explained variance crosses it. ``n_components``: a fixed count instead (1 = one component).
    ``class_scores(X)`` / ``decision_function(X)``: cos² of the angle between each row and each
    class subspace; ``predict``: the class of the smallest angle. Learned: ``classes_``,
    ``components_`` (list of r_k×d orthonormal rows), ``n_components_``,
    ``explained_variance_ratio_`` (list), ``eigenvalues_`` (list).
    """

    def __init__(self, variance=0.99, n_components=None, device="auto"):
        self.variance = variance
        self.n_components = n_components
        self.device = device

    def fit(self, X, y, classes=None):
        subspaces = ClassSubspaces(self.variance, self.n_components, self.device).fit(X, y, classes)
        return self._set_from(subspaces)

    @classmethod
    def from_subspaces(cls, subspaces: ClassSubspaces) -> "MASC":
        """A fitted MASC from a fitted ``ClassSubspaces`` (no further decomposition)."""
        check_is_fitted(subspaces)
        return cls(subspaces.variance, subspaces.n_components, subspaces.device)._set_from(subspaces)

    def _set_from(self, subspaces):
        _copy_input_attributes(subspaces, self)
        self.components_ = subspaces.components_
        self.n_components_ = subspaces.n_components_
        self.explained_variance_ratio_ = subspaces.explained_variance_ratio_
        self.eigenvalues_ = subspaces.eigenvalues_
        return self

    def class_scores(self, X) -> np.ndarray:
        """n×K cos²θ_k = ‖P_k x‖²/‖x‖² in [0, 1] (float64); 0 for a zero row."""
        X = self._validate_predict_input(X)
        device = _device(self.device)
        # one product per class (as the authors' loop): classes with identical subspaces then
        # get bit-identical scores, so ties really go to the lowest index
        P = [torch.from_numpy(c).to(device) for c in self.components_]
        out = np.empty((len(X), len(self.classes_)))
        for rows in _batches(len(X), max(max(len(c) for c in P), X.shape[1])):
            x = _as_tensor(X[rows], device, torch.float64)
            projected = torch.stack([(x @ c.T).square_().sum(1) for c in P], dim=1)
            norm2 = x.square().sum(1, keepdim=True)
            cos2 = torch.where(norm2 > 0, projected / norm2.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
            out[rows] = cos2.clamp_(0.0, 1.0).cpu().numpy()
        return out


class VeLPIC(_ClassScoreClassifier):
    """Vector Linear Probe Intermediate-layer Classifier (TMLR 2026), as the authors implement it.

    Class vector v_k = top principal direction of class k's ± augmented data, flipped when the
    mean projection of the training rows on it is negative: over all rows (``sign="all"``, the
    authors' code) or class k's rows (``sign="class"``, the paper's wording). ``predict``:
    argmax_k x·v_k. Learned: ``classes_``, ``class_vectors_`` (K×d unit rows, float64),
    ``mean_projections_`` (T_k before the flip), ``flipped_``.
    """

    def __init__(self, sign="all", device="auto"):
        self.sign = sign
        self.device = device

    def fit(self, X, y, classes=None):
        _check_sign(self.sign)
        subspaces = ClassSubspaces(n_components=1, device=self.device).fit(X, y, classes)
        return self._set_from(subspaces)

    @classmethod
    def from_subspaces(cls, subspaces: ClassSubspaces, sign="all") -> "VeLPIC":
        """A fitted VeLPIC from the leading component of each class of a fitted ``ClassSubspaces``."""
        check_is_fitted(subspaces)
        return cls(_check_sign(sign), subspaces.device)._set_from(subspaces)

    def _set_from(self, subspaces):
        sign = _check_sign(self.sign)
        _copy_input_attributes(subspaces, self)
        top = np.zeros((len(self.classes_), self.n_features_in_))
        for k, P in enumerate(subspaces.components_):
            if len(P):
                top[k] = P[0]
        means = np.broadcast_to(subspaces.mean_, top.shape) if sign == "all" else subspaces.class_means_
        self.mean_projections_ = np.einsum("kd,kd->k", means, top)
        self.flipped_ = self.mean_projections_ < 0
        self.class_vectors_ = np.where(self.flipped_[:, None], -top, top)
        return self

    def class_scores(self, X) -> np.ndarray:
        """n×K projections x·v_k, in X's dtype (float32 rows: float32, as the transferred network)."""
        X = self._validate_predict_input(X)
        device = _device(self.device)
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        V = torch.from_numpy(self.class_vectors_).to(device, dtype)
        out = np.empty((len(X), len(self.classes_)), dtype=X.dtype)
        for rows in _batches(len(X), X.shape[1]):
            out[rows] = torch.nn.functional.linear(_as_tensor(X[rows], device), V).cpu().numpy()
        return out


def fit_probes(X, y, *, variance=0.99, n_components=None, sign="all", classes=None, device="auto"):
    """Fit MASC and VeLPIC on the same activations from one decomposition; returns (masc, velpic)."""
    _check_sign(sign)
    subspaces = ClassSubspaces(variance, n_components, device).fit(X, y, classes)
    return MASC.from_subspaces(subspaces), VeLPIC.from_subspaces(subspaces, sign)


# ------------------------------------------------------------------------------------------
# baselines (2025 paper, SPEC §10)


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LogisticRegressionProbe(ClassifierMixin, BaseEstimator):
    """The authors' logistic-regression probe: ``nn.Linear(d, K)`` trained with cross-entropy,
    Adam(lr), ``epochs`` passes over the data in shuffled batches. ``seed`` fixes both the
    initial weights and the shuffling. Inputs are used as they are (no standardisation), held
    as one tensor on the device (no data loader). On the CPU the loop runs on one torch thread:
    its products (a batch of 128 rows × d × K) are too small to gain from more, and several
    threads lose up to 15x on shared cores (measured); one thread also makes the result the
    same on every machine."""

    def __init__(self, epochs=20, batch_size=128, lr=1e-3, seed=0, device="auto"):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_all_finite=True)
        check_classification_targets(y)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        device = _device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            layer = torch.nn.Linear(X.shape[1], len(self.classes_)).to(device)
        generator = torch.Generator().manual_seed(int(self.seed))
        optimizer = torch.optim.Adam(layer.parameters(), lr=float(self.lr))
        Xt = torch.from_numpy(X).to(device)
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(device)
        with _torch_threads(1) if device.type == "cpu" else contextlib.nullcontext():
            for _ in range(int(self.epochs)):
                order = torch.randperm(len(X), generator=generator).to(device)
                for i in range(0, len(X), int(self.batch_size)):
                    batch = order[i:i + int(self.batch_size)]
                    loss = torch.nn.functional.cross_entropy(layer(Xt[batch]), yt[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        self.coef_ = layer.weight.detach().cpu().numpy()
        self.intercept_ = layer.bias.detach().cpu().numpy()
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, ensure_all_finite=True)
        logits = X @ self.coef_.T + self.intercept_
        return logits[:, 1] - logits[:, 0] if len(self.classes_) == 2 else logits

    def predict(self, X):
        decision = self.decision_function(X)
        index = (decision > 0).astype(np.int64) if decision.ndim == 1 else decision.argmax(axis=1)
        return self.classes_[index]


class NearestClassMean(ClassifierMixin, BaseEstimator):
    """Nearest class mean by cosine similarity to the raw class means (the authors' NCM).
    A zero row (or a zero class mean) has cosine 0. Means and cosines are computed in float64
    over blocks of rows, so float32 activations are never copied whole to float64."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_all_finite=True)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        sums = np.zeros((len(self.classes_), X.shape[1]))
        for i in range(0, len(X), _ROW_BLOCK):
            _add_rows_by_class(sums, y_idx[i:i + _ROW_BLOCK], X[i:i + _ROW_BLOCK].astype(np.float64))
        self.means_ = sums / np.bincount(y_idx, minlength=len(self.classes_))[:, None]
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=True)
        mean_norms = np.linalg.norm(self.means_, axis=1)
        cosine = np.empty((len(X), len(self.classes_)))
        for i in range(0, len(X), _ROW_BLOCK):
            block = X[i:i + _ROW_BLOCK].astype(np.float64)
            norms = np.linalg.norm(block, axis=1, keepdims=True) * mean_norms
            dots = block @ self.means_.T
            cosine[i:i + _ROW_BLOCK] = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return cosine[:, 1] - cosine[:, 0] if len(self.classes_) == 2 else cosine

    def predict(self, X):
        decision = self.decision_function(X)
        index = (decision > 0).astype(np.int64) if decision.ndim == 1 else decision.argmax(axis=1)
        return self.classes_[index]


def _add_rows_by_class(sums: np.ndarray, y_idx: np.ndarray, block: np.ndarray) -> None:
    """``sums[k] += Σ block[y_idx == k]`` for every class k."""
    for k in np.unique(y_idx):
        sums[k] += block[y_idx == k].sum(axis=0)


def knn_probe(n_neighbors=5, metric="cosine", **params):
    """The authors' k-NN probe: ``KNeighborsClassifier(n_neighbors=5, metric="cosine")``."""
    return KNeighborsClassifier(n_neighbors=n_neighbors, metric=metric, **params)


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine distance with a majority vote: scikit-learn's
    ``KNeighborsClassifier(n_neighbors=5, metric="cosine")`` (the authors' k-NN), computed the
    same way — its brute force, step for step — so that it returns the same neighbours and
    predictions, but with the reference rows normalised once instead of once per block of
    queries (scikit-learn re-normalises all of them for every ~1 GB block of distances).

    Per block of query rows (scikit-learn's block size): ``normalize`` the rows, distances
    ``1 − x̂·ŷ`` clipped to [0, 2] in the input dtype, ``argpartition`` then ``argsort`` of the k
    smallest (scikit-learn's ``_kneighbors_reduce_func``). ``predict``: the most common label of
    the k neighbours, ties to the smallest label (``scipy.stats.mode``). :meth:`kneighbors` and
    :func:`majority_vote` are separate so that one neighbour search serves several label sets.
    """

    def __init__(self, n_neighbors=5):
        self.n_neighbors = n_neighbors

    def fit(self, X, y=None):
        from sklearn.preprocessing import normalize

        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite=True, order="C")
        k = self.n_neighbors
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {k!r}")
        if len(X) < k:
            raise ValueError(f"{k} neighbours need at least {k} reference rows, got {len(X)}")
        self.reference_ = normalize(X, copy=True)
        if y is not None:
            check_classification_targets(y)
            if len(y) != len(X):
                raise ValueError(f"y has {len(y)} labels for {len(X)} rows")
            self.classes_, self.y_index_ = np.unique(y, return_inverse=True)
        return self

    def kneighbors(self, X) -> np.ndarray:
        """Indices (n × k) of each row's k nearest reference rows, nearest first."""
        from sklearn.preprocessing import normalize
        from sklearn.utils import gen_batches
        from sklearn.utils._chunking import get_chunk_n_rows  # the block size scikit-learn uses

        check_is_fitted(self, "reference_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=True, order="C")
        if X.dtype != self.reference_.dtype:  # scikit-learn's check_pairwise_arrays: both float32, else float64
            X = X.astype(np.float64)
        Y = self.reference_ if self.reference_.dtype == X.dtype else self.reference_.astype(np.float64)
        k = int(self.n_neighbors)
        out = np.empty((len(X), k), dtype=np.intp)
        rows = get_chunk_n_rows(row_bytes=8 * len(Y), max_n_rows=len(X))
        for part in gen_batches(len(X), rows):
            S = normalize(X[part], copy=True) @ Y.T
            S *= -1
            S += 1
            dist = np.clip(S, 0.0, 2.0)
            del S
            nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
            order = np.argsort(dist[np.arange(len(dist))[:, None], nearest])
            out[part] = nearest[np.arange(len(dist))[:, None], order]
        return out

    def predict(self, X):
        check_is_fitted(self, "y_index_")
        return majority_vote(self.kneighbors(X), self.classes_[self.y_index_])


def majority_vote(neighbors: np.ndarray, y) -> np.ndarray:
    """The most common label ``y[j]`` over each row's neighbour indices j; ties go to the
    smallest label (scikit-learn's k-NN, ``scipy.stats.mode``)."""
    classes, y_index = np.unique(np.asarray(y), return_inverse=True)
    votes = y_index[neighbors]
    counts = np.zeros((len(votes), len(classes)), dtype=np.int64)
    rows = np.arange(len(votes))
    for j in range(votes.shape[1]):
        np.add.at(counts, (rows, votes[:, j]), 1)
    return classes[counts.argmax(axis=1)]


def fit_lda(X, y) -> LinearDiscriminantAnalysis:
    """scikit-learn's ``LinearDiscriminantAnalysis().fit(X, y)`` (solver ``svd``, the defaults) —
    the same arithmetic step for step, so the same fitted arrays bit for bit — with less memory.

    scikit-learn's SVD solver holds, besides X, the centred rows (a list, then their
    concatenation), their scaled copy, a temporary, LAPACK's Fortran-ordered copy of it and the
    SVD's U: about 6.6 times X at its peak beyond X itself (measured), for a whole probe job on a
    ResNet-18 layer of 50,000 × 16,384 float32 rows 22 GiB. Here the centred rows are written
    once into one array, scaled in place and handed to the same ``scipy.linalg.svd`` call already
    in Fortran order (``overwrite_a``): the same values in the same layout reach the same LAPACK
    routine, and the peak is about 4.3 times X (15.6 GiB for that job's LDA). The returned estimator is a
    fitted ``LinearDiscriminantAnalysis`` (its own ``predict``). Tested equal to scikit-learn's
    fit (tests/test_probe_families.py); a scikit-learn that computes differently fails that test.
    """
    from sklearn.discriminant_analysis import _class_means
    from sklearn.utils.multiclass import unique_labels

    lda = LinearDiscriminantAnalysis()
    X, y = validate_data(lda, X, y, ensure_min_samples=2, dtype=[np.float64, np.float32])
    lda.classes_ = unique_labels(y)
    n_samples, n_features = X.shape
    n_classes = lda.classes_.shape[0]
    if n_samples == n_classes:
        raise ValueError("The number of samples must be more than the number of classes.")
    _, counts = np.unique_counts(y)
    lda.priors_ = counts.astype(X.dtype) / float(n_samples)
    if np.abs(np.sum(lda.priors_) - 1.0) > 1e-5:
        import warnings

        warnings.warn("The priors do not sum to 1. Renormalizing", UserWarning)
        lda.priors_ = lda.priors_ / lda.priors_.sum()
    lda._max_components = min(n_classes - 1, n_features)

    # scikit-learn's _solve_svd
    lda.means_ = _class_means(X, y)
    Xc = np.empty((n_samples, n_features), dtype=X.dtype)  # the concatenation, C order
    start = 0
    for idx, group in enumerate(lda.classes_):
        rows = X[y == group]
        np.subtract(rows, lda.means_[idx, :], out=Xc[start:start + len(rows)])
        start += len(rows)
        del rows
    lda.xbar_ = lda.priors_ @ lda.means_
    std = np.std(Xc, axis=0)
    std[std == 0] = 1.0
    fac = np.asarray(1.0 / n_samples, dtype=X.dtype)
    np.divide(Xc, std, out=Xc)
    np.multiply(np.sqrt(fac), Xc, out=Xc)
    Xf = np.asfortranarray(Xc)  # what scipy would copy it into
    del Xc
    _, S, Vt = scipy.linalg.svd(Xf, full_matrices=False, overwrite_a=True)
    del Xf, _
    rank = np.sum((S > lda.tol).astype(np.int32))
    scalings = (Vt[:rank, :] / std).T / S[:rank]
    fac = 1.0 if n_classes == 1 else 1.0 / (n_classes - 1)
    Xb = ((np.sqrt((n_samples * lda.priors_) * fac)) * (lda.means_ - lda.xbar_).T).T @ scalings
    _, S, Vt = scipy.linalg.svd(Xb, full_matrices=False)
    if lda._max_components == 0:
        lda.explained_variance_ratio_ = np.empty((0,), dtype=S.dtype)
    else:
        lda.explained_variance_ratio_ = (S**2 / np.sum(S**2))[:lda._max_components]
    rank = np.sum((S > lda.tol * S[0]).astype(np.int32))
    lda.scalings_ = scalings @ Vt.T[:, :rank]
    coef = (lda.means_ - lda.xbar_) @ lda.scalings_
    lda.intercept_ = -0.5 * np.sum(coef**2, axis=1) + np.log(lda.priors_)
    lda.coef_ = coef @ lda.scalings_.T
    lda.intercept_ -= lda.xbar_ @ lda.coef_.T
    if lda.classes_.shape[0] == 2:
        lda.coef_ = np.reshape(np.asarray(lda.coef_[1, :] - lda.coef_[0, :], dtype=X.dtype), (1, -1))
        lda.intercept_ = np.reshape(np.asarray(lda.intercept_[1] - lda.intercept_[0], dtype=X.dtype), (1,))
    lda._n_features_out = lda._max_components
    return lda


# name → factory(**params) returning an unfitted scikit-learn classifier
PROBES = {
    "masc": MASC,
    "velpic": VeLPIC,
    "logistic": LogisticRegressionProbe,
    "ncm": NearestClassMean,
    "knn": CosineKNN,  # scikit-learn's KNeighborsClassifier(5, metric="cosine"), its neighbours reused
    "lda": LinearDiscriminantAnalysis,  # scikit-learn defaults (solver "svd"), as the authors
    "qda": QuadraticDiscriminantAnalysis,  # reg_param=0, as the authors
}


def make_probe(name: str, **params):
    """An unfitted probe by name (see ``PROBES``)."""
    try:
        factory = PROBES[name]
    except KeyError:
        raise ValueError(f"unknown probe {name!r}; known probes: {', '.join(PROBES)}") from None
    return factory(**params)
