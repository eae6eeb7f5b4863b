"""LDA and QDA as the authors' scikit-learn computed them (SPEC §10: ``LDA_QDA_probe.py``, sklearn
defaults, run under scikit-learn 0.22–1.3).

**LDA** (:func:`fit_lda`): the svd solver's arithmetic — within-class standardisation, a rank rule
``S > tol`` on the scaled within-class data, then the between-class step — with the within-class
factor the authors' scikit-learn used, ``1/(n − K)`` (``within_scale="n-K"``; scikit-learn 1.9 uses
``1/n``, ``within_scale="n"``). The factor scales every singular value by the same amount, so it
moves the rank rule's threshold and the weight of the log priors against the distances (by
``n/(n − K)``, 1.003 for 3,000 rows and 10 classes): predictions differ only where those decide.
Two routes give the same fit:

- ``method="gram"`` (``"auto"``, the default, takes it where n ≥ d): the within-class scatter
  ``Σ_k (X_k − μ_k)ᵀ(X_k − μ_k)`` accumulated in float64 over row blocks of each class,
  standardised, and its eigendecomposition — the squared singular values and right singular
  vectors of the svd solver's matrix — in one d×d ``eigh`` instead of an n×d SVD. Tested against
  scikit-learn (tests/probing/test_discriminant.py: ranks equal, accuracy to 4 decimals on real layers);
  4.7× faster on MNIST fc4, 60,000 × 2,048 (``python -m latentgen.bench probes --lda``). The
  Grams MASC builds are not reused: they are uncentred, of live features only (n_k × n_k where a
  class has fewer rows than features) and freed after each class's ``eigh``; keeping ten d×d
  float64 matrices would cost 21 GB on ResNet-18's 16,384-wide layers.
- ``method="svd"``: scikit-learn's own route step for step (its fitted arrays bit for bit at
  ``within_scale="n"``), with the centred rows written once and scaled in place (about 4.3 times X
  at its peak instead of 6.6).

The returned object is a fitted ``LinearDiscriminantAnalysis`` (scikit-learn's own ``predict``),
with ``within_rank_`` (the first rank rule's count) and ``method_`` added. The gram route works in
float64 throughout; scikit-learn (and the svd route) in the input's dtype, float32 for
activations: on layers whose within-class spectrum decays smoothly through ``tol`` the float32
SVD's rounding alone moves a few test predictions (scikit-learn on float32 and on float64 copies
of the same rows differ there), so the gram route is tested against scikit-learn on float64.

**QDA** (:class:`AuthorsQDA`): scikit-learn ≤ 1.7's ``QuadraticDiscriminantAnalysis()``. Per class
an SVD of the centred rows, in the input's dtype; scalings ``S²/(n_k − 1)``; a rank below the
number of features (``S > tol``) is only a warning ("Variables are collinear"); the decision
``−½(‖(x − μ_k) R_k S_k^−½‖² + Σ log S_k) + log π_k``. A zero scaling makes ``S^−½`` infinite:
numpy's arithmetic then gives ±inf or NaN scores, and the prediction is numpy's argmax of them
(the first NaN, where a row has one). scikit-learn 1.8+ refuses such a class instead. On a
rank-deficient layer the result is driven by rounding: comparable in range, not digit by digit.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

logger = logging.getLogger("latentgen.probing.discriminant")

WITHIN_SCALES = ("n-K", "n")  # the authors' scikit-learn (0.22-1.3); scikit-learn 1.9
LDA_METHODS = ("auto", "gram", "svd")
_ROW_BLOCK = 4096  # rows per float64 block when accumulating a Gram matrix


def _workers(n_tasks: int) -> int:
    """As many workers as BLAS has threads (OMP_NUM_THREADS: a Snakemake job's threads), at most n_tasks."""
    from latentgen.devices import blas_thread_count

    return max(1, min(n_tasks, blas_thread_count()))


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def _lda_start(X, y):
    """Validated X, y and an LDA with classes_, priors_ and _max_components set (scikit-learn's fit)."""
    lda = LinearDiscriminantAnalysis()
    X, y = validate_data(lda, X, y, ensure_min_samples=2, dtype=[np.float64, np.float32])
    check_classification_targets(y)
    lda.classes_ = unique_labels(y)
    n_samples, n_features = X.shape
    n_classes = len(lda.classes_)
    if n_samples == n_classes:
        raise ValueError("The number of samples must be more than the number of classes.")
    if n_classes < 2:
        raise ValueError(f"LDA needs at least 2 classes, got 1 ({lda.classes_[0]})")
    _, counts = np.unique_counts(y)
    lda.priors_ = counts.astype(X.dtype) / float(n_samples)
    lda._max_components = min(n_classes - 1, n_features)
    return X, y, lda


def _lda_finish(lda, scalings, n_samples, dtype):
    """scikit-learn's between-class step, from the within-class ``scalings`` (d × rank)."""
    n_classes = len(lda.classes_)
    fac = 1.0 / (n_classes - 1)
    Xb = ((np.sqrt((n_samples * lda.priors_) * fac)) * (lda.means_ - lda.xbar_).T).T @ scalings
    _, S, Vt = scipy.linalg.svd(Xb, full_matrices=False)
    lda.explained_variance_ratio_ = (S**2 / np.sum(S**2))[:lda._max_components]
    rank = np.sum((S > lda.tol * S[0]).astype(np.int32))
    lda.scalings_ = scalings @ Vt.T[:, :rank]
    coef = (lda.means_ - lda.xbar_) @ lda.scalings_
    lda.intercept_ = -0.5 * np.sum(coef**2, axis=1) + np.log(lda.priors_)
    lda.coef_ = coef @ lda.scalings_.T
    lda.intercept_ -= lda.xbar_ @ lda.coef_.T
    if n_classes == 2:
        lda.coef_ = np.reshape(np.asarray(lda.coef_[1, :] - lda.coef_[0, :], dtype=dtype), (1, -1))
        lda.intercept_ = np.reshape(np.asarray(lda.intercept_[1] - lda.intercept_[0], dtype=dtype), (1,))
    lda._n_features_out = lda._max_components
    return lda


def fit_lda(X, y, *, within_scale="n-K", method="auto") -> LinearDiscriminantAnalysis:
    """A fitted ``LinearDiscriminantAnalysis`` (solver ``svd``, defaults) with the within-class factor
    ``1/(n − K)`` (``within_scale="n-K"``, the authors') or ``1/n`` (``"n"``, scikit-learn 1.9);
    ``method`` "gram" (float64 scatter + ``eigh``), "svd" (scikit-learn's route) or "auto": gram
    when there are at least as many rows as features (the d×d ``eigh`` is then the cheaper
    problem; every layer of the papers' full training sets), else svd. See the module docstring."""
    _check_choice(within_scale, WITHIN_SCALES, "within_scale")
    _check_choice(method, LDA_METHODS, "LDA method")
    X, y, lda = _lda_start(X, y)
    n_samples = len(X)
    fac = 1.0 / (n_samples - len(lda.classes_)) if within_scale == "n-K" else 1.0 / n_samples
    if method == "auto":
        method = "gram" if n_samples >= X.shape[1] else "svd"
    if method == "gram":
        lda.priors_ = lda.priors_.astype(np.float64)  # the gram route's attributes are all float64
    fit = _within_gram if method == "gram" else _within_svd
    scalings, lda.within_rank_ = fit(lda, X, y, fac)
    lda.method_ = method
    return _lda_finish(lda, scalings, n_samples, lda.priors_.dtype)


def _within_svd(lda, X, y, fac):
    """scikit-learn's within-class step (``_solve_svd``), with less memory."""
    from sklearn.discriminant_analysis import _class_means

    n_samples, n_features = X.shape
    lda.means_ = _class_means(X, y)
    Xc = np.empty((n_samples, n_features), dtype=X.dtype)  # scikit-learn's concatenation, C order
    start = 0
    for idx, group in enumerate(lda.classes_):
        rows = X[y == group]
        np.subtract(rows, lda.means_[idx, :], out=Xc[start:start + len(rows)])
        start += len(rows)
        del rows
    lda.xbar_ = lda.priors_ @ lda.means_
    std = np.std(Xc, axis=0)
    std[std == 0] = 1.0
    np.divide(Xc, std, out=Xc)
    np.multiply(np.sqrt(np.asarray(fac, dtype=X.dtype)), Xc, out=Xc)
    Xf = np.asfortranarray(Xc)  # what scipy would copy it into
    del Xc
    _, S, Vt = scipy.linalg.svd(Xf, full_matrices=False, overwrite_a=True)
    del Xf, _
    rank = int(np.sum((S > lda.tol).astype(np.int32)))
    return (Vt[:rank, :] / std).T / S[:rank], rank


def _within_gram(lda, X, y, fac):
    """The within-class step from the float64 within-class scatter: its standardised form
    ``fac·D⁻¹ S_w D⁻¹`` is ``AᵀA`` for the svd solver's matrix A, so its eigenvalues are A's squared
    singular values and its eigenvectors A's right singular vectors."""
    d = X.shape[1]
    y_idx = np.searchsorted(lda.classes_, y)
    means = np.zeros((len(lda.classes_), d))
    scatter = np.zeros((d, d))
    varies = np.zeros(d, dtype=bool)  # a feature not constant within some class
    for k in range(len(lda.classes_)):
        Xk = np.take(X, np.flatnonzero(y_idx == k), axis=0)
        means[k] = Xk.sum(axis=0, dtype=np.float64) / len(Xk)
        varies |= Xk.min(axis=0) != Xk.max(axis=0)
        # centred before the product: an uncentred Gram minus n_k μμᵀ cancels catastrophically
        # on ReLU layers, whose means are large against their within-class spread
        for i in range(0, len(Xk), _ROW_BLOCK):
            block = Xk[i:i + _ROW_BLOCK].astype(np.float64) - means[k]
            scatter += block.T @ block
        del Xk
    return _gram_scalings(lda, means, scatter, varies, len(X), fac)


def _gram_scalings(lda, means, scatter, varies, n_samples, fac):
    """The within-class scalings (d × rank) and rank from the class means and the float64 within-class
    ``scatter`` (overwritten); ``varies``: the features not constant within some class. Shared with
    the device route (``latentgen.probing.device_baselines``), which accumulates the scatter there."""
    lda.means_ = means
    lda.xbar_ = lda.priors_ @ lda.means_
    # scikit-learn: std of the centred rows, 1 where it is 0 (constant within every class; the
    # exact test keeps rounding residue of such a feature out of the rank)
    scatter[~varies] = 0.0
    scatter[:, ~varies] = 0.0
    std = np.sqrt(np.diag(scatter) / n_samples)
    std[~varies] = 1.0
    scatter /= std[:, None]
    scatter /= std[None, :]
    scatter *= fac
    w, V = scipy.linalg.eigh(scatter, overwrite_a=True, check_finite=False, driver="evd")
    del scatter
    S = np.sqrt(np.clip(w[::-1], 0.0, None))  # rounding can leave a zero eigenvalue slightly negative
    rank = int(np.sum(S > lda.tol))
    return (V[:, ::-1][:, :rank] / std[:, None]) / S[:rank], rank


# --------------------------------------------------------------------------------------------
# QDA


def check_qda_data(fitted, X, y):
    """scikit-learn <= 1.7's QDA input checks on ``X, y``: sets ``fitted``'s ``n_features_in_``,
    ``classes_`` and ``priors_``; returns ``X`` (float32 stays float32), each row's class index and
    the class counts."""
    X, y = validate_data(fitted, X, y)  # dtype "numeric": float32 stays float32, as scikit-learn's
    check_classification_targets(y)
    fitted.classes_, y_idx = np.unique(y, return_inverse=True)
    if len(fitted.classes_) < 2:
        raise ValueError(f"QDA needs at least 2 classes, got 1 ({fitted.classes_[0]})")
    counts = np.bincount(y_idx)
    if counts.min() == 1:
        k = int(np.argmin(counts))
        raise ValueError(f"y has only 1 sample in class {fitted.classes_[k]}, covariance is ill defined.")
    fitted.priors_ = counts / float(len(y))
    return X, y_idx, counts


class AuthorsQDA(ClassifierMixin, BaseEstimator):
    """scikit-learn ≤ 1.7's ``QuadraticDiscriminantAnalysis(reg_param=0, tol=1e-4)`` (the module
    docstring says what that computes).

    Attributes: ``classes_``, ``priors_``, ``means_``, ``rotations_`` / ``scalings_`` (per class, as
    scikit-learn's), ``rank_`` (per class, singular values > tol; below ``n_features`` scikit-learn warns) and
    ``tiny_scalings_`` (per class, the scalings of singular values ≤ tol: their ``S^−½`` is huge or
    infinite and drives the scores).
    :meth:`class_scores` is scikit-learn's ``_decision_function`` (n×K, with numpy's inf and NaN).
    """

    def __init__(self, tol=1.0e-4):
        self.tol = tol

    def fit(self, X, y):
        if not float(self.tol) >= 0:
            raise ValueError(f"tol must be non-negative, got {self.tol!r}")
        X, y_idx, counts = check_qda_data(self, X, y)
        n_samples, n_features = X.shape

        def decompose(k):
            Xg = X[y_idx == k, :]
            meang = Xg.mean(0)
            _, S, Vt = np.linalg.svd(Xg - meang, full_matrices=False)
            return meang, S, Vt

        # one class per worker, each SVD on one BLAS thread (as ClassSubspaces): multi-threaded LAPACK
        # on small matrices collapses on shared cores (10x slower on the digits layers, measured)
        from latentgen.devices import one_blas_thread

        with one_blas_thread(), ThreadPoolExecutor(_workers(len(self.classes_))) as pool:
            results = list(pool.map(decompose, range(len(self.classes_))))
        means, self.scalings_, self.rotations_, ranks = [], [], [], []
        for (meang, S, Vt), n_k in zip(results, counts):
            rank = int(np.sum(S > self.tol))
            if rank < n_features:
                warnings.warn("Variables are collinear")  # here, in the caller's thread, once per class
            means.append(meang)
            ranks.append(rank)
            self.scalings_.append((S**2) / (int(n_k) - 1))  # a Python int: float32 stays float32 (NEP 50)
            self.rotations_.append(Vt.T)
        self.means_ = np.asarray(means)
        self.rank_ = np.array(ranks)
        self.tiny_scalings_ = np.array([len(s) for s in self.scalings_]) - self.rank_
        return self

    def class_scores(self, X) -> np.ndarray:
        """scikit-learn ≤ 1.7's ``_decision_function``: the log posterior up to a constant, n×K."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        norm2 = []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf/NaN are the result here
            for R, S, mean in zip(self.rotations_, self.scalings_, self.means_):
                X2 = np.dot(X - mean, R * (S ** (-0.5)))
                norm2.append(np.sum(X2**2, axis=1))
            norm2 = np.array(norm2).T
            u = np.asarray([np.sum(np.log(s)) for s in self.scalings_])
            return -0.5 * (norm2 + u) + np.log(self.priors_)

    def decision_function(self, X):
        """n×K scores; with 2 classes, scikit-learn's ``score₁ − score₀``."""
        scores = self.class_scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        """``classes_[argmax]`` of the n×K scores, as numpy takes it (a NaN wins: the first one)."""
        return self.classes_[self.class_scores(X).argmax(axis=1)]


def log_qda_diagnostics(qda: AuthorsQDA, scores: np.ndarray, where: str) -> None:
    """Log, per class, the tiny scalings of the fit and the non-finite scores of ``scores``
    (``class_scores`` of some rows), when there are any."""
    bad = (~np.isfinite(scores)).sum(axis=0)
    if not qda.tiny_scalings_.any() and not bad.any():
        return
    per_class = ", ".join(f"{c}: {int(t)}/{int(b)}" for c, t, b in zip(qda.classes_, qda.tiny_scalings_, bad))
    logger.warning("%s: QDA per class, scalings of singular values <= tol / non-finite scores of %d rows: %s",
                   where, len(scores), per_class)


class AuthorsLDA(ClassifierMixin, BaseEstimator):
    """:func:`fit_lda` as an estimator (for ``latentgen.probing.baselines.PROBES``): ``lda_`` is the fitted
    ``LinearDiscriminantAnalysis``, whose ``decision_function`` and ``predict`` this one uses."""

    def __init__(self, within_scale="n-K", method="auto"):
        self.within_scale = within_scale
        self.method = method

    def fit(self, X, y):
        self.lda_ = fit_lda(X, y, within_scale=self.within_scale, method=self.method)
        self.classes_ = self.lda_.classes_
        self.n_features_in_ = self.lda_.n_features_in_
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        return self.lda_.decision_function(X)

    def predict(self, X):
        check_is_fitted(self)
        return self.lda_.predict(X)
