"""The class subspaces MASC and VeLPIC are built from (the classifiers: ``latentgen.probing.masc_velpic``;
the baselines: ``latentgen.probing.baselines``).

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
``latentgen.probing.masc_velpic.fit_probes(X, y)`` builds MASC and VeLPIC from one ``ClassSubspaces``
(one decomposition).
Everything runs on the configured torch device (``device="auto"``: CUDA when available): on a
GPU the Gram matrices and ``torch.linalg.eigh`` run there in float64, one class after another;
on the CPU classes are decomposed in parallel, one per BLAS thread, each single-threaded.
The 2025 paper's stronger baselines (SPEC §10) are in ``latentgen.probing.baselines``, with the
``PROBES`` registry of every estimator (``make_probe(name, **params)``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from latentgen import registry
from latentgen.argtypes import check_fraction

SIGN_MODES = registry.SIGN_MODES
_ROW_BLOCK = 4096  # rows (or columns) per float64 block when accumulating a Gram matrix
_SMALL_EIGH = 256  # below this size a full eigh is cheaper than the staged LAPACK route
_SCORE_ELEMENTS = 1 << 24  # rows per scoring batch × max(score columns, features)


def _device(device) -> torch.device:
    from latentgen.devices import resolve_device

    return resolve_device(device)


def _as_tensor(a: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``a`` as a tensor on ``device``; copies read-only or non-contiguous arrays (torch needs both)."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C")
    return torch.from_numpy(a).to(device, dtype)


# ------------------------------------------------------------------------------------------
# checks


def check_variance(variance) -> float:
    """``variance`` as a float in (0, 1] (MASC's threshold); ValueError otherwise."""
    return check_fraction(variance, "variance")


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

    def __init__(self, variance=registry.MASC_VARIANCE, n_components=None, device="auto", extra_variances=(),
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
            from latentgen.devices import blas_thread_count, one_blas_thread

            workers = max(1, min(len(classes), blas_thread_count()))
            with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
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
