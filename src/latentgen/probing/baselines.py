"""The stronger baselines of the 2025 paper, exactly as the authors' code (SPEC §10).

Logistic regression (``nn.Linear(d, K)``, Adam 1e-3, 20 epochs, batch 128, shuffled, seeded),
nearest class mean (cosine), 5-NN (cosine; scikit-learn's brute force step for step), LDA and QDA
as the authors' scikit-learn computed them (``latentgen.probing.discriminant``), as scikit-learn estimators in the ``PROBES`` registry (``make_probe(name)``). The per-checkpoint
probing runs them as the registry's probe families (``latentgen.probing.checkpoint``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from latentgen.devices import resolve_device
from latentgen.probing.discriminant import AuthorsLDA, AuthorsQDA, fit_lda  # noqa: F401 (fit_lda: re-exported)
from latentgen.probing.masc_velpic import MASC, ClassScoreClassifier, VeLPIC

_ROW_BLOCK = 4096  # rows per float64 block when summing class means (no whole float64 copy)



@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LogisticRegressionProbe(ClassScoreClassifier):
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
        device = resolve_device(self.device)
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

    def class_scores(self, X) -> np.ndarray:
        """The logits (float32, as the authors' nn.Linear)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, ensure_all_finite=True)
        return X @ self.coef_.T + self.intercept_


class NearestClassMean(ClassScoreClassifier):
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

    def class_scores(self, X) -> np.ndarray:
        """Cosine similarity of each row to each class mean (float64)."""
        X = self._validate_predict_input(X)
        mean_norms = np.linalg.norm(self.means_, axis=1)
        cosine = np.empty((len(X), len(self.classes_)))
        for i in range(0, len(X), _ROW_BLOCK):
            block = X[i:i + _ROW_BLOCK].astype(np.float64)
            norms = np.linalg.norm(block, axis=1, keepdims=True) * mean_norms
            dots = block @ self.means_.T
            cosine[i:i + _ROW_BLOCK] = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return cosine


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


# name → factory(**params) returning an unfitted scikit-learn classifier
PROBES = {
    "masc": MASC,
    "velpic": VeLPIC,
    "logistic": LogisticRegressionProbe,
    "ncm": NearestClassMean,
    "knn": CosineKNN,  # scikit-learn's KNeighborsClassifier(5, metric="cosine"), its neighbours reused
    "lda": AuthorsLDA,  # scikit-learn's svd solver with the authors' 1/(n - K) (latentgen.probing.discriminant)
    "qda": AuthorsQDA,  # scikit-learn <= 1.7's QDA, reg_param=0, as the authors
}


def make_probe(name: str, **params):
    """An unfitted probe by name (see ``PROBES``)."""
    try:
        factory = PROBES[name]
    except KeyError:
        raise ValueError(f"unknown probe {name!r}; known probes: {', '.join(PROBES)}") from None
    return factory(**params)
