"""MASC and VeLPIC as scikit-learn classifiers on one :class:`~latentgen.probing.subspaces.ClassSubspaces`
(how the subspaces are computed: that module).

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

``class_scores(X)`` is always n×K; ``decision_function`` follows scikit-learn (n×K, or
``score₁ − score₀`` for two classes), and ``predict`` is derived from it.
"""

from __future__ import annotations


import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from latentgen import registry

from latentgen.probing.subspaces import ClassSubspaces, _SCORE_ELEMENTS, _as_tensor, _check_sign, _device




def _batches(n: int, width: int):
    step = max(1, _SCORE_ELEMENTS // max(width, 1))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def _copy_input_attributes(source, target):
    target.classes_ = source.classes_
    target.n_features_in_ = source.n_features_in_
    if hasattr(source, "feature_names_in_"):
        target.feature_names_in_ = source.feature_names_in_


class ClassScoreClassifier(ClassifierMixin, BaseEstimator):
    """Shared predict logic of the probes that score classes (MASC, VeLPIC and the baselines
    logistic regression and NCM): one score per class, higher is closer; ties → lowest class index."""

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



class _AngleProbe(ClassScoreClassifier):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # angle probes through the origin are built for high-dimensional layers; on scikit-learn's
        # standardised 2-D blobs a 99 % subspace is the whole plane and every class ties
        tags.classifier_tags.poor_score = True
        return tags


class MASC(_AngleProbe):
    """Minimum Angle Subspace Classifier (Ketha & Ramaswamy 2025), as the authors implement it.

    ``variance`` in (0, 1]: keep components up to and including the one whose cumulative
    explained variance crosses it. ``n_components``: a fixed count instead (1 = one component).
    ``class_scores(X)`` / ``decision_function(X)``: cos² of the angle between each row and each
    class subspace; ``predict``: the class of the smallest angle. Learned: ``classes_``,
    ``components_`` (list of r_k×d orthonormal rows), ``n_components_``,
    ``explained_variance_ratio_`` (list), ``eigenvalues_`` (list).
    """

    def __init__(self, variance=registry.MASC_VARIANCE, n_components=None, device="auto"):
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


class VeLPIC(_AngleProbe):
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


def fit_probes(X, y, *, variance=registry.MASC_VARIANCE, n_components=None, sign="all", classes=None, device="auto"):
    """Fit MASC and VeLPIC on the same activations from one decomposition; returns (masc, velpic)."""
    _check_sign(sign)
    subspaces = ClassSubspaces(variance, n_components, device).fit(X, y, classes)
    return MASC.from_subspaces(subspaces), VeLPIC.from_subspaces(subspaces, sign)
