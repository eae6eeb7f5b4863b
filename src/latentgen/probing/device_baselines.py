"""The 2025 paper's baselines on a torch device (SPEC §10; issue 16): 5-NN cosine, LDA, QDA and
logistic regression for many layers and label sets in one loop, computing what the CPU
implementations (``latentgen.probing.baselines``, ``latentgen.probing.discriminant``) compute.

**When they run.** The probe families (``latentgen.probing.families``) take these where the job's
device is not the CPU (``--device cuda``); a CPU job keeps today's numpy / scikit-learn code and
so today's numbers, bit for bit. Each function here takes ``device=`` and runs on any torch
device, CPU torch included: that is how the tests compare them with the CPU code on a machine
without a GPU (tests/probing/test_device_baselines.py; on CUDA, tests/gpu/test_gpu.py).

- **5-NN** (:func:`cosine_kneighbors`): scikit-learn's brute force (rows normalised, distances
  ``1 − x̂·ŷ`` clipped to [0, 2], in float32 for float32 inputs) as exact products over blocks of
  query rows, with TF32 off, and a top-(k+1) per row. scikit-learn's order among equal distances is
  numpy's ``argpartition`` (introselect: not index order, nothing a device can reproduce), so a
  row whose k+1 nearest distances are not separated by more than the products' rounding
  (``tie_tolerance``) is searched again by the CPU code (:class:`latentgen.probing.baselines.CosineKNN`,
  scikit-learn's steps): exact ties (duplicate rows, zero rows) and near ties get scikit-learn's
  answer; every other row's neighbours are the same whatever the rounding.
- **LDA** (:func:`fit_lda_device`): the gram route of ``latentgen.probing.discriminant.fit_lda`` (the
  authors' 1/(n − K)) with the float64 within-class scatter accumulated on the device; its
  ``eigh`` and the between-class step stay scipy's on the host (d×d: they decide the rank rule,
  so they are the CPU's arithmetic). Predictions (:func:`lda_predict_device`): float64 products.
- **QDA** (:class:`DeviceQDA`): scikit-learn ≤ 1.7's, as ``AuthorsQDA``: fitted by AuthorsQDA
  itself (numpy's per-class SVDs: on rank-deficient classes their rounding decides the
  predictions, so they stay the CPU's; ``fit_on="device"`` moves them too, for full-rank layers),
  the decision's products (n × d × d per class, the cost) on the device; inf and NaN as numpy's.
  A row whose best score is not clear of the others by the products' rounding bound (common on
  rank-deficient classes, where ``S^−½`` is huge) is scored on the host by numpy: there the CPU's
  own scores change with how many rows numpy multiplies at once (measured: 1 of 2,000 MNIST fc2
  predictions), so no device can match them more closely than ≥ 99.9 %.
- Both fallbacks (5-NN's near ties, QDA's unsure rows) give the CPU's answer when numpy multiplies
  those rows as it multiplies a layer's; a handful of rows of a tiny matrix can take another BLAS
  path (tests/probing/test_device_baselines.py uses layer-sized data).
- **Logistic regression** (:func:`fit_logistic_many`): one ``LogisticRegressionProbe`` per (layer,
  label set) advanced together: the same seeded initial weights, one shared batch order (the
  probes share the training rows and the seed), one backward of the summed losses and one Adam
  over all of them. Each result equals its single fit bit for bit (the losses' gradients are
  independent; Adam is elementwise).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import torch

from latentgen.devices import free_device_memory, resolve_device

BLOCK_ELEMENTS = 1 << 27  # distances per block of query rows (512 MiB in float32)
_ROW_BLOCK = 4096  # rows per float64 block of the LDA scatter (as latentgen.probing.discriminant)


def on_device(device) -> bool:
    """Whether the probe families use this module for ``device`` (anything but the CPU)."""
    return resolve_device(device).type != "cpu"


@contextlib.contextmanager
def exact_float32():
    """float32 products in float32 (no TF32 on CUDA): the distances must round as the CPU's."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def _tensor(X, device, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(X)) if isinstance(X, np.ndarray) else torch.as_tensor(X)
    return t.to(device=device, dtype=dtype or t.dtype)


# --------------------------------------------------------------------------------------------
# 5-NN, cosine


def _unit_rows(t: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    norms[norms == 0] = 1.0  # scikit-learn's normalize: a zero row stays zero (distance 1 to all)
    return t / norms


def tie_tolerance(dtype, d: int) -> float:
    """Distances closer than this may be ordered differently by two roundings of the same products
    (a d-long float dot product of unit vectors: about √d·eps; 8 times that, to be safe)."""
    return 8.0 * float(torch.finfo(dtype).eps) * math.sqrt(max(d, 1))


def cosine_kneighbors(reference, queries, k: int = 5, device="auto", *, block_elements: int = BLOCK_ELEMENTS,
                      return_resolved: bool = False):
    """Indices (n × k) of each query row's k nearest ``reference`` rows by cosine distance, nearest
    first: ``latentgen.probing.baselines.CosineKNN(k).fit(reference).kneighbors(queries)`` (scikit-learn's),
    computed on ``device`` (module docstring). With ``return_resolved``, also the query rows that
    were searched again on the CPU (near ties)."""
    from latentgen.probing.baselines import CosineKNN

    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {k!r}")
    reference, queries = np.asarray(reference), np.asarray(queries)
    if len(reference) < k:
        raise ValueError(f"{k} neighbours need at least {k} reference rows, got {len(reference)}")
    if reference.ndim != 2 or queries.ndim != 2 or reference.shape[1] != queries.shape[1]:
        raise ValueError(f"reference {reference.shape} and queries {queries.shape} are not rows of one width")
    if not (np.isfinite(reference).all() and np.isfinite(queries).all()):
        raise ValueError("Input contains NaN or infinity")
    device = resolve_device(device)
    # scikit-learn's check_pairwise_arrays: float32 when both are, else float64
    dtype = torch.float32 if reference.dtype == queries.dtype == np.float32 else torch.float64
    n_ref, d = reference.shape
    take = min(k + 1, n_ref)  # the (k+1)-th tells whether the k-th is tied
    tol = tie_tolerance(dtype, d)
    out = np.empty((len(queries), k), dtype=np.intp)
    near_tie = np.zeros(len(queries), dtype=bool)
    rows = max(1, block_elements // max(n_ref, 1))
    with exact_float32(), torch.no_grad():
        Y = _unit_rows(_tensor(reference, device, dtype))
        for start in range(0, len(queries), rows):
            Xb = _unit_rows(_tensor(queries[start:start + rows], device, dtype))
            dist = torch.clamp(1.0 - Xb @ Y.T, 0.0, 2.0)
            values, index = torch.topk(dist, take, dim=1, largest=False, sorted=True)
            # any two of the k+1 nearest within rounding of each other: the order (and, at the k-th,
            # the set) is a matter of rounding and tie order, which the CPU decides
            close = (values[:, 1:] - values[:, :-1] <= tol).any(dim=1) if take > 1 else torch.zeros(
                len(values), dtype=torch.bool, device=device)
            out[start:start + len(Xb)] = index[:, :k].cpu().numpy()
            near_tie[start:start + len(Xb)] = close.cpu().numpy()
        del Y
    resolved = np.flatnonzero(near_tie)
    if len(resolved):
        out[resolved] = CosineKNN(k).fit(reference).kneighbors(queries[resolved])
    return (out, resolved) if return_resolved else out


# --------------------------------------------------------------------------------------------
# LDA


def fit_lda_device(X, y, device="auto", *, within_scale: str = "n-K"):
    """``latentgen.probing.discriminant.fit_lda(X, y, within_scale=..., method="gram")`` with the float64
    within-class scatter accumulated on ``device`` (module docstring); a fitted
    ``LinearDiscriminantAnalysis`` with ``within_rank_`` and ``method_ = "gram-device"``."""
    from latentgen.probing.discriminant import WITHIN_SCALES, _check_choice, _gram_scalings, _lda_finish, _lda_start

    _check_choice(within_scale, WITHIN_SCALES, "within_scale")
    X, y, lda = _lda_start(X, y)
    n_samples, d = X.shape
    n_classes = len(lda.classes_)
    fac = 1.0 / (n_samples - n_classes) if within_scale == "n-K" else 1.0 / n_samples
    lda.priors_ = lda.priors_.astype(np.float64)
    device = resolve_device(device)
    y_idx = torch.as_tensor(np.searchsorted(lda.classes_, y), device=device)
    with torch.no_grad():
        Xt = _tensor(X, device)
        means = torch.zeros((n_classes, d), dtype=torch.float64, device=device)
        scatter = torch.zeros((d, d), dtype=torch.float64, device=device)
        varies = torch.zeros(d, dtype=torch.bool, device=device)
        for k in range(n_classes):
            Xk = Xt[torch.nonzero(y_idx == k).flatten()]
            means[k] = Xk.sum(dim=0, dtype=torch.float64) / len(Xk)
            varies |= Xk.amin(dim=0) != Xk.amax(dim=0)
            for i in range(0, len(Xk), _ROW_BLOCK):  # centred before the product, as the CPU route
                block = Xk[i:i + _ROW_BLOCK].to(torch.float64) - means[k]
                scatter += block.T @ block
            del Xk
        del Xt
        host = (means.cpu().numpy(), scatter.cpu().numpy(), varies.cpu().numpy())
    scalings, lda.within_rank_ = _gram_scalings(lda, *host, n_samples, fac)
    lda.method_ = "gram-device"
    return _lda_finish(lda, scalings, n_samples, lda.priors_.dtype)


def lda_predict_device(lda, X, device="auto", *, block_rows: int = 65536) -> np.ndarray:
    """``lda.predict(X)`` (scikit-learn's: ``X @ coef_.T + intercept_``, float64 as numpy promotes
    float32 rows against float64 coefficients; with 2 classes the sign of the one score) on ``device``."""
    device = resolve_device(device)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != lda.coef_.shape[1]:
        raise ValueError(f"X has shape {X.shape}; LDA was fit on {lda.coef_.shape[1]} features")
    dtype = torch.float64 if (X.dtype == np.float64 or lda.coef_.dtype == np.float64) else torch.float32
    coef = _tensor(lda.coef_, device, dtype)
    intercept = _tensor(lda.intercept_, device, dtype)
    picks = []
    with exact_float32(), torch.no_grad():
        for start in range(0, len(X), block_rows):
            scores = _tensor(X[start:start + block_rows], device, dtype) @ coef.T + intercept
            picks.append((scores[:, 0] > 0).long() if scores.shape[1] == 1 else scores.argmax(dim=1))
    chosen = torch.cat(picks).cpu().numpy() if picks else np.empty(0, dtype=np.int64)
    return lda.classes_[chosen]


# --------------------------------------------------------------------------------------------
# QDA


class DeviceQDA:
    """scikit-learn ≤ 1.7's ``QuadraticDiscriminantAnalysis()`` (``latentgen.probing.discriminant.AuthorsQDA``)
    with the decision's products on ``device``. ``fit_on="host"`` (the default) fits with
    AuthorsQDA itself (numpy's SVDs): on a layer where a class's covariance is not of full rank —
    most ReLU layers, where a unit is dead within a class — the tiny singular values that rounding
    leaves decide the predictions, and only the CPU's LAPACK reproduces them (a device SVD agreed
    on 10-83 % of the test rows of MNIST MLP layers). ``fit_on="device"``: the per-class SVDs on
    the device too (in the input's dtype), for layers of full rank. Attributes as AuthorsQDA's (host
    arrays): ``classes_``, ``priors_``, ``means_``, ``scalings_``, ``rotations_``, ``rank_``,
    ``tiny_scalings_``."""

    def __init__(self, tol: float = 1.0e-4, device="auto", fit_on: str = "host"):
        self.tol = tol
        self.device = device
        self.fit_on = fit_on

    def fit(self, X, y):
        from latentgen.probing.discriminant import AuthorsQDA, _check_choice

        _check_choice(self.fit_on, ("host", "device"), "QDA fit_on")
        device = self._device = resolve_device(self.device)
        if self.fit_on == "host":
            fitted = AuthorsQDA(self.tol).fit(X, y)
        else:
            fitted = self._fit_on_device(X, y, device)
        self._host = AuthorsQDA(self.tol)  # the unsure rows' arithmetic (class_scores)
        for name in ("classes_", "priors_", "means_", "scalings_", "rotations_", "rank_", "tiny_scalings_",
                     "n_features_in_"):
            setattr(self, name, getattr(fitted, name))
            setattr(self._host, name, getattr(fitted, name))
        with np.errstate(divide="ignore", over="ignore"):  # S^-1/2 of a zero scaling is inf, as numpy's
            # the factor as AuthorsQDA.class_scores computes it, so only the products round differently
            self._factors = [(_tensor(mean, device), _tensor(R * (S ** (-0.5)), device))
                             for mean, R, S in zip(self.means_, self.rotations_, self.scalings_)]
        return self

    def _fit_on_device(self, X, y, device):
        from latentgen.probing.discriminant import AuthorsQDA, check_qda_data

        fitted = AuthorsQDA()
        X, y_idx, counts = check_qda_data(fitted, X, y)  # AuthorsQDA's checks: float32 stays float32
        n_samples, n_features = X.shape
        means, fitted.scalings_, fitted.rotations_, ranks = [], [], [], []
        with torch.no_grad():
            Xt = _tensor(X, device)
            labels = torch.as_tensor(y_idx, device=device)
            for k, n_k in enumerate(counts):
                Xg = Xt[torch.nonzero(labels == k).flatten()]
                meang = Xg.mean(dim=0)
                _, S, Vt = torch.linalg.svd(Xg - meang, full_matrices=False)
                rank = int((S > self.tol).sum())
                if rank < n_features:
                    warnings.warn("Variables are collinear")  # as AuthorsQDA, once per class
                means.append(meang.cpu().numpy())
                ranks.append(rank)
                fitted.scalings_.append((S**2 / (int(n_k) - 1)).cpu().numpy())
                fitted.rotations_.append(Vt.T.cpu().numpy())
        fitted.means_ = np.asarray(means)
        fitted.rank_ = np.array(ranks)
        fitted.tiny_scalings_ = np.array([len(s) for s in fitted.scalings_]) - fitted.rank_
        return fitted

    def class_scores(self, X, *, block_rows: int = 8192) -> np.ndarray:
        """scikit-learn ≤ 1.7's ``_decision_function`` (n×K), as ``AuthorsQDA.class_scores``: the
        squared norms on the device, in the input's dtype, and the rest as numpy computes it.

        On a rank-deficient class the factor ``R S^−½`` has huge columns and a score can be mostly
        rounding of the products, which differs between BLAS libraries. So each score carries a
        bound on that rounding (``γ·|x − μ|·|R S^−½|``, propagated through the squares, γ =
        :func:`tie_tolerance`), and a row whose best score is not ahead of the others by more
        than their bounds, or that has a non-finite score, is computed on the host by
        AuthorsQDA's numpy arithmetic (``resolved_``: those rows of the last call)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; QDA was fit on {self.n_features_in_} features")
        dtype = self._factors[0][1].dtype
        gamma = tie_tolerance(dtype, X.shape[1])
        norms, bounds = [], []
        with exact_float32(), torch.no_grad(), np.errstate(invalid="ignore"):
            absolute = [factor.abs() for _, factor in self._factors]
            for start in range(0, len(X), block_rows):
                T = _tensor(X[start:start + block_rows], self._device, dtype)
                norm2, bound = [], []
                for (mean, factor), abs_factor in zip(self._factors, absolute):
                    centred = T - mean
                    X2 = centred @ factor
                    err = gamma * (centred.abs() @ abs_factor)  # each product's rounding, bounded
                    n2 = (X2**2).sum(dim=1)
                    norm2.append(n2)
                    bound.append((2 * X2.abs() * err + err**2).sum(dim=1) + gamma * n2)
                norms.append(torch.stack(norm2, dim=1).cpu().numpy())
                bounds.append(torch.stack(bound, dim=1).double().cpu().numpy())
        K = len(self.classes_)
        norm2 = np.concatenate(norms) if norms else np.empty((0, K), dtype=np.dtype(str(dtype).split(".")[1]))
        bound = np.concatenate(bounds) if bounds else np.empty((0, K))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf/NaN are the result here
            u = np.asarray([np.sum(np.log(s)) for s in self.scalings_])
            scores = -0.5 * (norm2 + u) + np.log(self.priors_)
            bound = 0.5 * bound + gamma * (np.abs(norm2) + np.abs(u))  # and the sum's own rounding
            if K > 1 and len(scores):
                top2 = np.sort(scores, axis=1)[:, -2:]
                margin = top2[:, 1] - top2[:, 0]
                unsure = ~np.isfinite(scores).all(axis=1) | ~np.isfinite(bound).all(axis=1) | ~(
                    margin > 2 * bound.max(axis=1))
            else:
                unsure = ~np.isfinite(scores).all(axis=1)
        self.resolved_ = np.flatnonzero(unsure)
        if len(self.resolved_):
            scores[self.resolved_] = self._host.class_scores(X[self.resolved_])
        return scores

    def predict(self, X) -> np.ndarray:
        """``classes_[argmax]`` of the scores as numpy takes it (a NaN wins: the first one)."""
        return self.classes_[self.class_scores(X).argmax(axis=1)]


# --------------------------------------------------------------------------------------------
# logistic regression, many at once


def device_batches(items: list, nbytes, device="auto", budget: int | None = None) -> list[list]:
    """``items`` in consecutive batches whose ``nbytes(item)`` add up to at most ``budget`` bytes
    (default: half the device's free memory; an item larger than that is a batch of its own). On
    the CPU one batch: tensors there share the arrays' memory."""
    device = resolve_device(device)
    if budget is None:
        if device.type != "cuda":
            return [list(items)] if items else []
        budget = free_device_memory(device) // 2
    batches: list[list] = []
    used = 0
    for item in items:
        size = int(nbytes(item))
        if not batches or used + size > budget:
            batches.append([])
            used = 0
        batches[-1].append(item)
        used += size
    return batches


def fit_logistic_many(problems, *, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                      device="auto") -> list:
    """Fitted ``latentgen.probing.baselines.LogisticRegressionProbe`` for each ``(X, y)`` of ``problems``
    (one per layer and label set; every X has the same rows), advanced in one loop (module
    docstring): each equals ``LogisticRegressionProbe(epochs, batch_size, lr, seed, device).fit(X, y)``."""
    from latentgen.probing.baselines import LogisticRegressionProbe, _torch_threads

    problems = list(problems)
    if not problems:
        return []
    probes = [LogisticRegressionProbe(epochs, batch_size, lr, seed, device) for _ in problems]
    for name in ("epochs", "batch_size"):
        value = locals()[name]
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not float(lr) > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    n = len(problems[0][0])
    if any(len(X) != n for X, _ in problems):
        raise ValueError("every problem must have the same training rows (one shared batch order)")
    device = resolve_device(device)
    layers, data = [], []
    for probe, (X, y) in zip(probes, problems):
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not np.isfinite(X).all():
            raise ValueError("Input contains NaN or infinity")
        probe.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        probe.n_features_in_ = X.shape[1]
        with torch.random.fork_rng(devices=[]):  # the single fit's initial weights
            torch.manual_seed(int(seed))
            layers.append(torch.nn.Linear(X.shape[1], len(probe.classes_)).to(device))
        data.append((torch.from_numpy(X).to(device), torch.from_numpy(y_idx.astype(np.int64)).to(device)))
    generator = torch.Generator().manual_seed(int(seed))
    # one Adam over every probe: its update is elementwise, so each probe's steps are its own
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=float(lr))
    with _torch_threads(1) if device.type == "cpu" else contextlib.nullcontext():
        for _ in range(int(epochs)):
            order = torch.randperm(n, generator=generator).to(device)
            for i in range(0, n, int(batch_size)):
                batch = order[i:i + int(batch_size)]
                # the sum's gradient is 1 for each loss: each probe gets its own loss's gradient
                loss = sum(torch.nn.functional.cross_entropy(layer(Xt[batch]), yt[batch])
                           for layer, (Xt, yt) in zip(layers, data))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    for probe, layer in zip(probes, layers):
        probe.coef_ = layer.weight.detach().cpu().numpy()
        probe.intercept_ = layer.bias.detach().cpu().numpy()
    return probes
