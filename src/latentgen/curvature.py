"""K-FAC curvature edit (Merullo et al. 2025) and the controls it is compared with.

Method (``../shared/CURVATURE.md`` §1, §5). For each edited ``nn.Linear`` with weight W (out×in):

- factors from **training inputs only**: A = E[a aᵀ] of the layer input a, G = E[g gᵀ] of the
  gradient g of the per-example loss w.r.t. the layer output (before any ReLU);
- the labels in g: ``true`` (default) is the exact true Fisher over the K classes, the expectation
  over y ~ p of the per-example gradient outer product. Its logit-side matrix is
  Σ_y p_y (e_y − p)(e_y − p)ᵀ = diag(p) − ppᵀ; we backpropagate the K−1 columns of its
  stick-breaking Cholesky factor (``fisher_factor``), which gives the same G as the K vectors
  √p_y (e_y − p), in one batched backward pass. ``empirical`` uses the given (corrupted) labels;
  ``sampled`` draws y ~ p (seeded), as the paper's text;
- eigenbases G = U_G diag(λ) U_Gᵀ, A = U_A diag(μ) U_Aᵀ (descending, tiny negatives clamped to 0);
  coefficients C = U_Gᵀ W U_A; pair (i, j) has curvature λ_i μ_j;
- keep the highest-curvature pairs, the smallest prefix (by λ_i μ_j, descending) whose mass is
  ≥ ρ · (Σλ)(Σμ), found without sorting all pairs (``kfac_select``), and rebuild
  W ← U_G (C ⊙ M) U_Aᵀ. ρ = 1 keeps every pair (no edit), as the authors' code treats ρ ≈ 1;
  the prefix rule alone would drop zero-curvature pairs.

Everything is accumulated in float64 from per-example (sum-reduced) gradients: the gradient
w.r.t. each layer output is taken with ``torch.autograd.grad`` from explicit per-example logit
vectors, so no batch-mean 1/B factor enters. The model runs in eval mode; no damping anywhere.

Repairs sit in one registry, ``REPAIRS`` (name → ``Repair``): ``kfac``, the controls ``svd``
(same fraction of components removed), ``svd_norm`` (same ‖ΔW‖_F), ``random`` (same number of
K-FAC pairs, chosen at random), ``a_only`` / ``g_only`` (one factor truncated at mass ρ),
``kfac_reestimate`` (layer by layer, later factors re-estimated after each edit), the VeLPIC
transfer ``velpic`` / ``velpic_bias`` and the combination ``kfac_velpic``. ``edit_model``
applies any of them to a copy of a model. ``band_activation_ratios`` is the paper's §4
diagnostic.
"""

from __future__ import annotations

import copy
import hashlib
import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

FISHER_KINDS = ("true", "empirical", "sampled")
BIAS_MODES = ("keep", "homogeneous")

# --------------------------------------------------------------------------------------------
# layers and arguments


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """All ``nn.Linear`` modules of ``model`` by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def resolve_layers(model: nn.Module, layers: Iterable[str] | str) -> list[str]:
    """Check that ``layers`` is a non-empty list of distinct ``nn.Linear`` module names of ``model``."""
    if isinstance(layers, str):
        layers = parse_layer_set(layers)
    layers = list(layers)
    if not layers:
        raise ValueError("empty layer set: name at least one nn.Linear layer to edit")
    linears = linear_layers(model)
    modules = dict(model.named_modules())
    for name in layers:
        if name not in linears:
            what = f"a {type(modules[name]).__name__}, not an nn.Linear" if name in modules else "not a module"
            raise ValueError(f"layer {name!r} of {type(model).__name__} is {what}; "
                             f"nn.Linear layers: {', '.join(linears) or '(none)'}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer set {'+'.join(layers)} names a layer twice")
    return layers


def parse_layer_set(text: str) -> list[str]:
    """``"fc1+fc4"`` → ``["fc1", "fc4"]``; an empty string is an empty set."""
    return [part.strip() for part in text.split("+") if part.strip()] if text.strip() else []


def check_rho(rho) -> float:
    try:
        value = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    return value


def head_name(model: nn.Module) -> str:
    """The pre-softmax ``nn.Linear``: ``model.head`` (our model zoo), else the last ``nn.Linear``."""
    head = getattr(model, "head", None)
    if isinstance(head, str):
        return head
    linears = list(linear_layers(model))
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    return linears[-1]


# --------------------------------------------------------------------------------------------
# factors


@dataclass
class Eigenbasis:
    """Descending eigenpairs of G (output side, λ, U_G) and A (input side, μ, U_A), float64."""

    lam: torch.Tensor
    U_G: torch.Tensor
    mu: torch.Tensor
    U_A: torch.Tensor


@dataclass
class LayerFactors:
    """K-FAC factors of one ``nn.Linear`` (float64, on the CPU)."""

    name: str
    A: torch.Tensor        # (in, in)  E[a aᵀ]
    G: torch.Tensor        # (out, out) E[g gᵀ]
    a_mean: torch.Tensor   # (in,)     E[a], for the homogeneous-bias variant
    num_rows: int          # input rows averaged over (examples × positions)
    fisher: str
    _eigen: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, kind: str, W: torch.Tensor, compute: Callable[[], object]):
        """``compute()`` once per (kind, content of W): a sweep edits the same weights many times.
        Only the latest weights are kept per kind."""
        key = hashlib.sha1(W.numpy().tobytes()).hexdigest()
        hit = self._cache.get(kind)
        if hit is None or hit[0] != key:
            hit = self._cache[kind] = (key, compute())
        return hit[1]

    def A_homogeneous(self) -> torch.Tensor:
        """E[ā āᵀ] for ā = [a; 1]."""
        q = self.A.shape[0]
        out = torch.empty(q + 1, q + 1, dtype=torch.float64)
        out[:q, :q] = self.A
        out[:q, q] = self.a_mean
        out[q, :q] = self.a_mean
        out[q, q] = 1.0
        return out

    def eigenbasis(self, homogeneous: bool = False) -> Eigenbasis:
        key = bool(homogeneous)
        if key not in self._eigen:
            lam, U_G = sorted_eigh(self.G)
            mu, U_A = sorted_eigh(self.A_homogeneous() if homogeneous else self.A)
            self._eigen[key] = Eigenbasis(lam, U_G, mu, U_A)
        return self._eigen[key]


def sorted_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, negatives from round-off clamped to 0) and eigenvectors (columns), float64."""
    sym = matrix.to(torch.float64)
    sym = (sym + sym.T) / 2
    if sym.device.type == "cpu":  # LAPACK's divide and conquer via scipy: faster than torch's on the CPU
        import scipy.linalg

        values, vectors = scipy.linalg.eigh(sym.numpy(), driver="evd", check_finite=False)
        values, vectors = torch.from_numpy(values), torch.from_numpy(vectors)
    else:
        values, vectors = torch.linalg.eigh(sym)
    return values.flip(0).clamp_min(0.0), vectors.flip(1).contiguous()


# Rows are gathered into blocks before each BLAS call: scipy's OpenBLAS and torch's OpenMP are
# separate thread pools, and every switch between them leaves OpenBLAS threads spinning on the
# cores torch wants next (measured: fc4 factors on 60,000 MNIST images 58 s with one syrk per
# 512-image batch, 40 s with 16,384-row blocks). The budget bounds the blocks' memory.
GRAM_BUFFER_BYTES = 512 * 2**20
GRAM_MAX_BLOCK_ROWS = 16384
GRAM_FLOAT32_BLOCK_ROWS = 4096  # float32 products: keep each float32 partial sum short


class _Gram:
    """Running float64 sum of xᵀx over batches. On the CPU it uses BLAS syrk (one triangle) on
    blocks of up to ``block_rows`` rows gathered across batches.

    ``dtype=float64`` (default) forms each block's products in float64; ``float32`` forms them in
    float32 (about twice as fast) and still adds the blocks up in float64.
    """

    def __init__(self, dim: int, device: torch.device, dtype: torch.dtype = torch.float64,
                 block_rows: int = GRAM_MAX_BLOCK_ROWS):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Gram dtype must be float32 or float64, got {dtype}")
        self.dim = dim
        self.cpu = device.type == "cpu"
        self.dtype = dtype
        if self.cpu:
            from scipy.linalg import blas

            self._syrk = blas.dsyrk if dtype == torch.float64 else blas.ssyrk
            self._acc = np.zeros((dim, dim), dtype=np.float64, order="F")
            if dtype == torch.float32:
                block_rows = min(block_rows, GRAM_FLOAT32_BLOCK_ROWS)
            self._block = torch.empty(max(1, int(block_rows)), dim, dtype=dtype)
            self._filled = 0
        else:
            self._acc = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.dim)
        if not self.cpu:
            x = x.to(self.dtype)
            self._acc += (x.T @ x).to(torch.float64)
            return
        start = 0
        while start < len(x):
            take = min(len(x) - start, len(self._block) - self._filled)
            self._block[self._filled:self._filled + take].copy_(x[start:start + take])  # casts to dtype
            self._filled += take
            start += take
            if self._filled == len(self._block):
                self._flush()

    def _flush(self) -> None:
        if not self._filled:
            return
        # the block's first rows are C-ordered rows×dim, so their transpose is dim×rows F-ordered:
        # syrk computes (x.T)(x.T)ᵀ = xᵀx into the upper triangle
        xt = self._block[:self._filled].numpy().T
        if self.dtype == torch.float64:
            self._acc = self._syrk(1.0, xt, beta=1.0, c=self._acc, trans=0, lower=0, overwrite_c=1)
        else:
            self._acc += self._syrk(1.0, xt, trans=0, lower=0)  # upper triangle; lower is 0
        self._filled = 0

    def value(self) -> torch.Tensor:
        if self.cpu:
            self._flush()
            upper = torch.from_numpy(np.triu(self._acc))
            return upper + torch.triu(upper, 1).T
        return self._acc.cpu()


def _one_hot_minus_p(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rows e_y − p, with 1 − p_y summed from the other classes (no cancellation when p_y ≈ 1)."""
    v = -p
    rest = p.scatter(1, y[:, None], 0.0).sum(1)
    return v.scatter(1, y[:, None], rest[:, None])


def fisher_factor(p: torch.Tensor) -> torch.Tensor:
    """L (B×K×(K−1)) with L Lᵀ = diag(p) − ppᵀ per row of p (float64): the multinomial covariance's
    Cholesky factor by stick breaking. With the classes in ascending order of p and tail sums
    q_y = Σ_{k≥y} p_k, column y has L_yy = √(p_y q_{y+1} / q_y) and L_ky = −p_k √(p_y / (q_y q_{y+1}))
    for k > y.

    Σ_y p_y (e_y − p)(e_y − p)ᵀ is the same matrix, so backpropagating these K−1 columns gives the
    exact true Fisher with one backward vector fewer than the K vectors √p_y (e_y − p). Putting the
    most probable class last keeps every q_y ≈ 1 when p is nearly one-hot, so tiny entries come
    out with full relative accuracy (no difference of nearly equal numbers is formed).
    """
    n, k = p.shape
    order = p.argsort(1)                       # ascending: the most probable class last
    ps = p.gather(1, order)
    q = ps.flip(1).cumsum(1).flip(1)           # q[:, y] = Σ_{k≥y} ps_k
    q_now, q_next = q[:, :-1], q[:, 1:]        # q_y, q_{y+1} for y = 0..K−2
    p_col = ps[:, :-1]
    ok = q_next > 0                            # q_{y+1} = 0: every later p is 0 and the column is 0
    tiny = torch.finfo(p.dtype).tiny
    # square roots taken separately: products like q_y q_{y+1} underflow for p ~ 1e-300
    root_p, root_now = p_col.sqrt(), q_now.clamp_min(tiny).sqrt()
    root_next = torch.where(ok, q_next, torch.ones_like(q_next)).sqrt()
    diag = root_p * (q_next.sqrt() / root_now)
    scale = torch.where(ok, root_p / root_now / root_next, torch.zeros_like(q_next))
    L = -ps[:, :, None] * scale[:, None, :]    # L[n, k, y] = −p_k · scale_y below the diagonal
    rows = torch.arange(k, device=p.device)[:, None]
    cols = torch.arange(k - 1, device=p.device)[None, :]
    L = torch.where(rows > cols, L, torch.zeros_like(L))
    L[:, cols[0], cols[0]] = diag
    # back to the original class order (rows); the columns are just a basis of the factor
    return torch.zeros_like(L).scatter_(1, order[:, :, None].expand(-1, -1, k - 1), L)


def _logit_vectors(logits, fisher, labels, samples, generator, chunk: int = 16):
    """Stacks (V×B×K) of per-example vectors to backpropagate from the logits, in float64.

    G sums the outer products of all backpropagated vectors; ``collect_factors`` divides by the
    number of examples (and by ``samples`` for the sampled Fisher).
    """
    p = torch.softmax(logits.detach().to(torch.float64), dim=1)
    if fisher == "true":
        yield fisher_factor(p).permute(2, 0, 1)
    elif fisher == "empirical":
        yield _one_hot_minus_p(p, labels)[None]
    else:  # sampled, in chunks of draws
        p_cpu = p.cpu()
        for first in range(0, samples, chunk):
            draws = torch.multinomial(p_cpu, min(chunk, samples - first), replacement=True, generator=generator)
            yield torch.stack([_one_hot_minus_p(p, y.to(p.device)) for y in draws.T])


def _backprop(logits, outs, vectors):
    """Gradients of ⟨vectors[v], logits⟩ w.r.t. each output, stacked over v: one batched backward."""
    vectors = vectors.to(logits.dtype)
    try:
        return torch.autograd.grad(logits, outs, grad_outputs=vectors, retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # an operation without a batching rule: one backward pass per vector
        per_vector = [torch.autograd.grad(logits, outs, grad_outputs=v, retain_graph=True) for v in vectors]
        return [torch.stack(gs) for gs in zip(*per_vector)]


def collect_factors(model: nn.Module, inputs: torch.Tensor, layers: Iterable[str], *, fisher: str = "true",
                    labels: torch.Tensor | None = None, samples: int = 1, seed: int = 0, batch_size: int = 512,
                    device: torch.device | str | None = None,
                    gram_dtype: torch.dtype = torch.float64) -> dict[str, LayerFactors]:
    """K-FAC factors A, G of each layer in ``layers`` from ``inputs`` (training inputs only).

    ``fisher``: ``true`` (exact expectation over the model's predictive distribution: K−1
    backward vectors per example, ``fisher_factor``), ``empirical`` (``labels``, e.g. the
    corrupted training labels) or ``sampled`` (``samples`` labels per example drawn from the
    model's prediction with ``seed``). Gradients are per example (sum reduction): each example's
    vector is backpropagated on its own row, so no 1/B factor enters. Sums are kept in float64;
    ``gram_dtype=torch.float32`` forms the products in float32 (faster, ~1e-6 relative). On the CPU
    rows are gathered into blocks (at most ``GRAM_BUFFER_BYTES`` for all layers together) so that
    BLAS is called rarely.
    The model is put in eval mode for the pass and restored afterwards; its weights are untouched.
    """
    if fisher not in FISHER_KINDS:
        raise ValueError(f"unknown Fisher kind {fisher!r}; choose one of {', '.join(FISHER_KINDS)}")
    names = resolve_layers(model, layers)
    if fisher == "empirical":
        if labels is None:
            raise ValueError("the empirical Fisher needs labels (the corrupted training labels)")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (len(inputs),):
            raise ValueError(f"labels must have one entry per input: {tuple(labels.shape)} vs {len(inputs)} inputs")
    if fisher == "sampled" and (int(samples) != samples or samples < 1):
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if len(inputs) == 0:
        raise ValueError("no inputs to collect K-FAC factors from")
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    modules = dict(model.named_modules())
    dims = [modules[n].in_features + modules[n].out_features for n in names]
    block_rows = min(GRAM_MAX_BLOCK_ROWS, max(1, GRAM_BUFFER_BYTES // (8 * sum(dims))))
    grams_a = {n: _Gram(modules[n].in_features, device, gram_dtype, block_rows) for n in names}
    grams_g = {n: _Gram(modules[n].out_features, device, gram_dtype, block_rows) for n in names}
    a_sums = {n: torch.zeros(modules[n].in_features, dtype=torch.float64, device=device) for n in names}
    rows = 0
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_hook(name):
        def hook(module, args, output):
            if name in captured:
                raise ValueError(f"layer {name!r} is called more than once per forward pass; "
                                 "K-FAC factors for shared layers are not supported")
            captured[name] = (args[0].detach(), output)
        return hook

    generator = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    original_device = param.device
    model.eval().to(device)
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        for start in range(0, len(inputs), batch_size):
            xb = inputs[start:start + batch_size].to(device=device, dtype=param.dtype)
            captured.clear()
            with torch.enable_grad():
                logits = model(xb)
            if logits.ndim != 2:
                raise ValueError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
            outs = []
            for n in names:
                a, out = captured[n]
                a = a.reshape(-1, a.shape[-1])
                grams_a[n].add(a)
                a_sums[n] += a.to(torch.float64).sum(0)
                outs.append(out)
            rows += a.shape[0]
            yb = labels[start:start + batch_size].to(device) if fisher == "empirical" else None
            for vectors in _logit_vectors(logits, fisher, yb, samples, generator):
                for n, g in zip(names, _backprop(logits, outs, vectors)):
                    grams_g[n].add(g.reshape(-1, g.shape[-1]))  # all vectors of the batch
            del logits, outs
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        model.train(was_training).to(original_device)
    g_rows = rows * (samples if fisher == "sampled" else 1)
    return {n: LayerFactors(n, grams_a[n].value() / rows, grams_g[n].value() / g_rows,
                            (a_sums[n] / rows).cpu(), rows, fisher) for n in names}


# --------------------------------------------------------------------------------------------
# selection and per-layer edits


def kfac_select(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> tuple[torch.Tensor, float]:
    """The pairs kept at mass ρ: flat indices i·len(μ) + j, best first, and the mass fraction reached.

    Order: λ_i μ_j descending, ties by flat index. Kept: the smallest prefix whose mass reaches
    ρ · (Σλ)(Σμ), the crossing pair included; ρ = 1 keeps every pair (also those of zero mass).
    Vectorised without sorting all pairs: λ and μ are sorted, so for a threshold t row i holds
    #{j : μ_j ≥ t/λ_i} pairs above t (a binary search) and their mass is λ_i times a prefix sum
    of μ. Bisection on t finds the crossing value; only the pairs above it are then sorted.
    (numpy, single-threaded: these are many small operations.)
    """
    rho = check_rho(rho)
    lam = lam.detach().to("cpu", torch.float64).numpy()
    mu = mu.detach().to("cpu", torch.float64).numpy()
    p, q = len(lam), len(mu)
    if rho == 1.0:
        return torch.arange(p * q), 1.0
    total = float(lam.sum()) * float(mu.sum())
    if total <= 0:  # no curvature at all: the empty prefix already reaches ρ · 0
        return torch.zeros(0, dtype=torch.long), 1.0
    target = rho * total
    mu_ascending = np.ascontiguousarray(mu[::-1])
    mu_prefix = np.concatenate([[0.0], np.cumsum(mu)])
    live = lam > 0

    def counts(t: float) -> np.ndarray:  # per row: #j with λ_i μ_j ≥ t (up to rounding of t/λ_i)
        c = np.zeros(p, dtype=np.int64)
        c[live] = q - np.searchsorted(mu_ascending, t / lam[live], side="left")
        return c

    def mass(t: float) -> float:
        return float(lam @ mu_prefix[counts(t)])

    # bisection (geometric) for the largest t whose pairs above it reach the target
    lo = float(lam[live].min()) * float(mu[mu > 0].min())  # mass(lo) = total ≥ target
    hi = float(lam[0]) * float(mu[0]) * (1 + 1e-9)          # mass(hi) = 0 < target
    for _ in range(200):
        if hi <= lo * (1 + 1e-12):
            break
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if mass(mid) >= target else (lo, mid)
    threshold = lo * (1 - 1e-9)  # a little lower: rounding in t/λ_i can only add candidates
    for widen in range(4):
        if widen == 3:
            threshold = 0.0  # every pair of positive mass
        c = counts(threshold)
        rows = np.repeat(np.arange(p), c)
        cols = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        values = lam[rows] * mu[cols]                      # the same products as np.outer(λ, μ)
        order = np.argsort(-values, kind="stable")         # candidates are in flat order: ties stay so
        cumulative = np.cumsum(values[order])
        if len(cumulative) and cumulative[-1] >= target:
            break
        threshold /= 2  # rounding left the crossing outside the candidates: widen
    k = min(int(np.searchsorted(cumulative, target, side="left")) + 1, len(cumulative))
    kept = (rows * q + cols)[order[:k]]
    return torch.from_numpy(kept), float(cumulative[k - 1]) / total


def kfac_keep_mask(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> torch.Tensor:
    """Boolean (len λ × len μ) mask of the pairs ``kfac_select`` keeps at mass ρ."""
    return _mask_from(kfac_select(lam, mu, rho)[0], (len(lam), len(mu)))


def _mask_from(indices: torch.Tensor, shape) -> torch.Tensor:
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    mask[indices] = True
    return mask.reshape(shape)


def _augmented(layer: nn.Linear, homogeneous: bool) -> torch.Tensor:
    W = layer.weight.detach().to("cpu", torch.float64, copy=True)
    if homogeneous:
        return torch.cat([W, layer.bias.detach().to("cpu", torch.float64, copy=True)[:, None]], 1)
    return W


def _write_back(layer: nn.Linear, W_new: torch.Tensor, homogeneous: bool) -> None:
    with torch.no_grad():
        if homogeneous:
            layer.bias.copy_(W_new[:, -1].to(layer.bias))
            W_new = W_new[:, :-1]
        layer.weight.copy_(W_new.to(layer.weight))


def _edit_log(name, method, W, W_new, mask=None, **extra) -> dict:
    norm = float(torch.linalg.norm(W))
    log = {"layer": name, "method": method, "shape": f"{W.shape[0]}x{W.shape[1]}",
           "weight_norm": norm, "delta_norm": float(torch.linalg.norm(W_new - W)),
           "rel_change": float(torch.linalg.norm(W_new - W)) / norm if norm > 0 else 0.0}
    if mask is not None:
        log.update(pairs_total=mask.numel(), pairs_kept=int(mask.sum()),
                   fraction_kept=float(mask.sum()) / mask.numel(),
                   distinct_out_vectors=int(mask.any(1).sum()), distinct_in_vectors=int(mask.any(0).sum()))
    log.update(extra)
    return log


def _basis_and_weight(layer: nn.Linear, factors: LayerFactors, homogeneous: bool) -> tuple[Eigenbasis, torch.Tensor]:
    """The factors' eigenbasis and the layer's (augmented) float64 weight, checked to match."""
    basis = factors.eigenbasis(homogeneous)
    W = _augmented(layer, homogeneous)
    if basis.U_G.shape[0] != W.shape[0] or basis.U_A.shape[0] != W.shape[1]:
        raise ValueError(f"factors of {factors.name!r} ({basis.U_G.shape[0]}×{basis.U_A.shape[0]}) do not "
                         f"match the layer's weight {W.shape[0]}×{W.shape[1]}")
    return basis, W


def _kfac_plan(layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool):
    """Basis, weights, coefficients C = U_Gᵀ W U_A, the kept mask and the reached mass (nothing written)."""
    basis, W = _basis_and_weight(layer, factors, homogeneous)
    C = factors.cached(f"C{int(homogeneous)}", W, lambda: basis.U_G.T @ W @ basis.U_A)
    kept, reached = kfac_select(basis.lam, basis.mu, rho)
    return basis, W, C, _mask_from(kept, W.shape), reached


def _rebuild(basis: Eigenbasis, C: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """U_G (C ⊙ M) U_Aᵀ: the kept components of W."""
    return basis.U_G @ (C * mask) @ basis.U_A.T


def kfac_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False) -> dict:
    """W ← U_G (C ⊙ M) U_Aᵀ in place, keeping the top pairs by λ_i μ_j up to mass ρ."""
    basis, W, C, mask, reached = _kfac_plan(layer, factors, rho, homogeneous)
    W_new = _rebuild(basis, C, mask)
    _write_back(layer, W_new, homogeneous)
    return _edit_log(name, "kfac", W, W_new, mask, rho=rho, rho_reached=reached)


def random_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False,
                      seed: int = 0) -> dict:
    """Keep as many K-FAC pairs as the K-FAC edit at ρ, chosen uniformly at random.

    The random order depends only on (seed, layer name), so the kept sets are nested across ρ.
    """
    basis, W, C, kfac_mask, _ = _kfac_plan(layer, factors, rho, homogeneous)
    k = int(kfac_mask.sum())
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode()))
    mask = _mask_from(torch.randperm(W.numel(), generator=generator)[:k], W.shape)
    W_new = _rebuild(basis, C, mask)
    _write_back(layer, W_new, homogeneous)
    mass = torch.outer(basis.lam, basis.mu)
    total = float(mass.sum())
    return _edit_log(name, "random", W, W_new, mask, rho=rho,
                     rho_reached=float(mass[mask].sum()) / total if total > 0 else 1.0)


def factor_prefix(values: torch.Tensor, rho: float) -> int:
    """Eigenvalues sorted descending: the smallest prefix whose sum is ≥ ρ · total (all at ρ = 1)."""
    if rho >= 1.0 or values.numel() == 0:
        return values.numel()
    cumulative = torch.cumsum(values, 0)
    threshold = torch.tensor([rho * float(cumulative[-1])], dtype=cumulative.dtype)
    return min(values.numel(), int(torch.searchsorted(cumulative, threshold)) + 1)


def factor_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False,
                      side: str = "A") -> dict:
    """Control: truncate one factor only. ``side="A"`` (input PCA) keeps the top input
    eigenvectors of A holding mass ρ of Σμ, W ← W U_A,k U_A,kᵀ; ``side="G"`` keeps the top output
    eigenvectors of G holding mass ρ of Σλ, W ← U_G,k U_G,kᵀ W ([C]'s per-factor variant)."""
    basis, W = _basis_and_weight(layer, factors, homogeneous)
    if side == "A":
        k = factor_prefix(basis.mu, rho)
        W_new = (W @ basis.U_A[:, :k]) @ basis.U_A[:, :k].T
        kept = k * W.shape[0]
    elif side == "G":
        k = factor_prefix(basis.lam, rho)
        W_new = basis.U_G[:, :k] @ (basis.U_G[:, :k].T @ W)
        kept = k * W.shape[1]
    else:
        raise ValueError(f"unknown factor side {side!r}; use 'A' or 'G'")
    _write_back(layer, W_new, homogeneous)
    return _edit_log(name, f"{side.lower()}_only", W, W_new, rho=rho, vectors_kept=k,
                     pairs_total=W.numel(), pairs_kept=kept, fraction_kept=kept / W.numel())


def svd_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False,
                   match: str = "count") -> dict:
    """SVD truncation of W matched to the K-FAC edit at ρ on the same layer.

    ``match="count"``: remove the same *fraction* of components. The K-FAC basis has out·in rank-1
    components and the SVD min(out, in); the K-FAC edit removes a fraction f of its pairs, so the
    SVD edit removes round(f · min(out, in)) of the smallest singular components.
    ``match="norm"``: remove the fewest smallest singular components whose removed norm reaches
    the K-FAC edit's ‖ΔW‖_F. The bias is never changed (``homogeneous`` only sizes the K-FAC match).
    """
    basis, Wa, C, kfac_mask, _ = _kfac_plan(layer, factors, rho, homogeneous)
    W = layer.weight.detach().to("cpu", torch.float64, copy=True)
    U, S, Vh = factors.cached("svd", W, lambda: torch.linalg.svd(W, full_matrices=False))
    r_max = S.numel()
    if match == "count":
        removed_fraction = 1.0 - float(kfac_mask.sum()) / kfac_mask.numel()
        removed = int(round(removed_fraction * r_max))
    elif match == "norm":
        target = float(torch.linalg.norm(_rebuild(basis, C, kfac_mask) - Wa))
        tail = torch.sqrt(torch.cumsum(S.flip(0) ** 2, 0))  # norm removed by dropping the last m
        removed = 0 if target <= 0 else min(r_max, int(torch.searchsorted(tail, torch.tensor([target], dtype=tail.dtype))) + 1)
    else:
        raise ValueError(f"unknown SVD match {match!r}; use 'count' or 'norm'")
    keep = r_max - removed
    W_new = (U[:, :keep] * S[:keep]) @ Vh[:keep]
    _write_back(layer, W_new, False)
    return _edit_log(name, "svd" if match == "count" else "svd_norm", W, W_new, rho=rho,
                     pairs_total=r_max, pairs_kept=keep, fraction_kept=keep / r_max,
                     kfac_fraction_kept=float(kfac_mask.sum()) / kfac_mask.numel())


# --------------------------------------------------------------------------------------------
# the band diagnostic of Merullo et al. §4 (CURVATURE.md §1.5)

BANDS = ((0.0, 0.10), (0.10, 0.25), (0.25, 0.50), (0.50, 1.0))  # fractions of the pairs, by curvature rank


def band_weights(layer: nn.Linear, factors: LayerFactors, bands=BANDS) -> list[torch.Tensor]:
    """W split into bands of K-FAC components: the pairs ranked by λ_i μ_j (descending, stable),
    band [lo, hi) holding ranks lo·pq … hi·pq; each band's U_G (C ⊙ M_band) U_Aᵀ. The bands of a
    partition of [0, 1] add up to W."""
    basis, W = _basis_and_weight(layer, factors, False)
    C = factors.cached("C0", W, lambda: basis.U_G.T @ W @ basis.U_A)
    order = torch.argsort(torch.outer(basis.lam, basis.mu).flatten(), descending=True, stable=True)
    total = order.numel()
    out = []
    for lo, hi in bands:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"a band must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi})")
        picked = order[int(round(lo * total)):int(round(hi * total))]
        out.append(_rebuild(basis, C, _mask_from(picked, W.shape)))
    return out


def band_activation_ratios(model: nn.Module, name: str, factors: LayerFactors, inputs: torch.Tensor,
                           changed: torch.Tensor, bands=BANDS, batch_size: int = 1024) -> list[dict]:
    """Per band, mean ‖W_band a‖ over the training inputs whose label was changed (memorized)
    divided by the mean over the unchanged ones (clean), a = the layer's input. A ratio above 1
    means the band acts more on memorized examples."""
    changed = torch.as_tensor(changed, dtype=torch.bool)
    if changed.shape != (len(inputs),) or not changed.any() or changed.all():
        raise ValueError("band ratios need a changed-label mask over the inputs with both changed and unchanged rows")
    a = layer_inputs(model, inputs, name, batch_size).double()
    rows = []
    for (lo, hi), W_band in zip(bands, band_weights(model.get_submodule(name), factors, bands)):
        norms = torch.linalg.norm(a @ W_band.T, dim=1)
        mem, clean = float(norms[changed].mean()), float(norms[~changed].mean())
        rows.append({"layer": name, "band_lo": lo, "band_hi": hi, "norm_changed": mem, "norm_unchanged": clean,
                     "ratio": mem / clean if clean > 0 else float("nan")})
    return rows


# --------------------------------------------------------------------------------------------
# activity of hidden units (dead / revived ReLU units)


def unit_max_preactivation(model: nn.Module, inputs: torch.Tensor, layers: list[str],
                           batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per layer, the largest output (pre-ReLU) of each unit over ``inputs`` (eval mode)."""
    return predict(model, inputs, batch_size, watch=layers)[1]


def dead_unit_counts(before: torch.Tensor, after: torch.Tensor) -> dict:
    """A unit is dead when its pre-activation is ≤ 0 on every input (its ReLU output is always 0)."""
    dead_before, dead_after = before <= 0, after <= 0
    return {"dead_before": int(dead_before.sum()), "dead_after": int(dead_after.sum()),
            "revived": int((dead_before & ~dead_after).sum()), "killed": int((~dead_before & dead_after).sum())}


# --------------------------------------------------------------------------------------------
# repair registry


@dataclass
class RepairInputs:
    """What a repair may use: factors and the training inputs with their (corrupted) labels."""

    factors: dict[str, LayerFactors] | None = None
    bias: str = "keep"                     # "keep" or "homogeneous" (curvature edits)
    seed: int = 0                          # random control
    train_x: torch.Tensor | None = None    # training inputs (VeLPIC transfer, dead units)
    train_labels: torch.Tensor | None = None  # the labels the repairer has: the corrupted ones
    batch_size: int = 1024
    fisher: str = "true"                   # how factors are re-estimated (kfac_reestimate) ...
    samples: int = 1
    gram_dtype: torch.dtype = torch.float64
    factor_rows: np.ndarray | None = None  # ... and from which training rows (default all)

    def factor_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs and labels to (re-)estimate factors from."""
        if self.factor_rows is None:
            return self.train_x, self.train_labels
        picked = torch.as_tensor(np.asarray(self.factor_rows), dtype=torch.long)
        return self.train_x[picked], None if self.train_labels is None else torch.as_tensor(self.train_labels)[picked]


@dataclass(frozen=True)
class Repair:
    """One repair method: ``apply(model, layers, rho, inputs) -> per-layer logs`` edits ``model`` in place."""

    name: str
    summary: str
    apply: Callable[[nn.Module, list[str], float | None, RepairInputs], list[dict]]
    uses_rho: bool = True
    needs_factors: bool = True


def _per_layer(edit: Callable) -> Callable:
    """A repair that edits each named layer on its own with ``edit(name, layer, factors, rho, homogeneous, ctx)``."""
    def apply(model, layers, rho, ctx):
        if ctx.factors is None:
            raise ValueError("this repair needs K-FAC factors; compute them with collect_factors")
        modules = dict(model.named_modules())
        logs = []
        for name in layers:
            if name not in ctx.factors:
                raise ValueError(f"no K-FAC factors for layer {name!r}; factors exist for {', '.join(ctx.factors)}")
            layer = modules[name]
            homogeneous = ctx.bias == "homogeneous" and layer.bias is not None
            logs.append(edit(name, layer, ctx.factors[name], rho, homogeneous, ctx))
        return logs
    return apply


def _kfac(name, layer, factors, rho, homogeneous, ctx):
    return kfac_edit_layer(name, layer, factors, rho, homogeneous)


def _svd_count(name, layer, factors, rho, homogeneous, ctx):
    return svd_edit_layer(name, layer, factors, rho, homogeneous, match="count")


def _svd_norm(name, layer, factors, rho, homogeneous, ctx):
    return svd_edit_layer(name, layer, factors, rho, homogeneous, match="norm")


def _random(name, layer, factors, rho, homogeneous, ctx):
    return random_edit_layer(name, layer, factors, rho, homogeneous, seed=ctx.seed)


def _a_only(name, layer, factors, rho, homogeneous, ctx):
    return factor_edit_layer(name, layer, factors, rho, homogeneous, side="A")


def _g_only(name, layer, factors, rho, homogeneous, ctx):
    return factor_edit_layer(name, layer, factors, rho, homogeneous, side="G")


def _velpic_transfer(model: nn.Module, keep_bias: bool, inputs: RepairInputs) -> dict:
    """Replace the head by the VeLPIC class vectors of its input (the last hidden layer)."""
    from latentgen.probes import VeLPIC
    from latentgen.transfer import transfer_velpic

    if inputs.train_x is None or inputs.train_labels is None:
        raise ValueError("the VeLPIC transfer needs the training inputs and their (corrupted) labels")
    head = head_name(model)
    layer = dict(model.named_modules())[head]
    feats = head_inputs(model, inputs.train_x, inputs.batch_size)
    labels = torch.as_tensor(inputs.train_labels).numpy()
    velpic = VeLPIC().fit(feats, labels, classes=np.arange(layer.out_features))
    W = layer.weight.detach().to("cpu", torch.float64, copy=True)
    transferred = transfer_velpic(model, head, velpic, keep_bias=keep_bias)  # a copy of the model
    layer.load_state_dict(transferred.get_submodule(head).state_dict())  # this repair edits in place
    W_new = layer.weight.detach().to("cpu", torch.float64, copy=True)
    return _edit_log(head, "velpic_bias" if keep_bias else "velpic", W, W_new, keep_bias=keep_bias)


@torch.no_grad()
def layer_inputs(model: nn.Module, inputs: torch.Tensor, name: str, batch_size: int = 1024) -> torch.Tensor:
    """The input of layer ``name`` for every input row (eval mode), float32 on the CPU."""
    layer = dict(model.named_modules())[name]
    chunks = []
    handle = layer.register_forward_pre_hook(lambda m, args: chunks.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size].to(device=param.device, dtype=param.dtype))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(chunks)


def head_inputs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """The head's input (the last hidden layer after its ReLU) for every input row, float32."""
    return layer_inputs(model, inputs, head_name(model), batch_size).numpy()


def _apply_velpic(keep_bias):
    def apply(model, layers, rho, inputs):
        head = head_name(model)
        if list(layers) != [head]:
            raise ValueError(f"the VeLPIC transfer edits the head {head!r} only, got {'+'.join(layers)}")
        return [_velpic_transfer(model, keep_bias, inputs)]
    return apply


def _apply_kfac_reestimated(model, layers, rho, ctx):
    """K-FAC edit layer by layer in forward order; every layer after the first gets factors
    re-estimated on the model as edited so far (the first uses the given factors)."""
    if ctx.train_x is None:
        raise ValueError("the re-estimated K-FAC edit needs the training inputs")
    order = [n for n in linear_layers(model) if n in layers]
    factor_x, factor_y = ctx.factor_data()
    logs = []
    for k, name in enumerate(order):
        factors = ctx.factors if k == 0 and ctx.factors and name in ctx.factors else collect_factors(
            model, factor_x, [name], fisher=ctx.fisher, labels=factor_y, samples=ctx.samples,
            seed=ctx.seed, gram_dtype=ctx.gram_dtype)
        (log,) = _per_layer(_kfac)(model, [name], rho, replace(ctx, factors=factors))
        logs.append({**log, "method": "kfac_reestimate", "reestimated": k > 0})
    return logs


def _apply_kfac_velpic(model, layers, rho, inputs):
    """K-FAC edit of the hidden layers in ``layers``, then the VeLPIC transfer on the head."""
    head = head_name(model)
    hidden = [n for n in layers if n != head]
    logs = _per_layer(_kfac)(model, hidden, rho, inputs) if hidden else []
    return logs + [_velpic_transfer(model, False, inputs)]


REPAIRS: dict[str, Repair] = {r.name: r for r in [
    Repair("kfac", "K-FAC curvature edit: keep the top pairs by λ_i μ_j up to mass ρ", _per_layer(_kfac)),
    Repair("svd", "control: SVD truncation removing the same fraction of components as K-FAC at ρ",
           _per_layer(_svd_count)),
    Repair("svd_norm", "control: SVD truncation with the same ‖ΔW‖_F as K-FAC at ρ", _per_layer(_svd_norm)),
    Repair("random", "control: random removal of as many K-FAC pairs as K-FAC removes at ρ (seeded)",
           _per_layer(_random)),
    Repair("kfac_reestimate", "K-FAC edit layer by layer, later layers' factors re-estimated after each edit",
           _apply_kfac_reestimated),
    Repair("a_only", "control: input-PCA truncation, keep A's top eigenvectors up to mass ρ of Σμ", _per_layer(_a_only)),
    Repair("g_only", "control: output-side truncation, keep G's top eigenvectors up to mass ρ of Σλ",
           _per_layer(_g_only)),
    Repair("velpic", "VeLPIC transfer on the head, bias zeroed (the paper's method)", _apply_velpic(False),
           uses_rho=False, needs_factors=False),
    Repair("velpic_bias", "VeLPIC transfer on the head, trained bias kept", _apply_velpic(True),
           uses_rho=False, needs_factors=False),
    Repair("kfac_velpic", "K-FAC edit of the hidden layers, then the VeLPIC transfer on the head",
           _apply_kfac_velpic),
]}


def get_repair(name: str) -> Repair:
    try:
        return REPAIRS[name]
    except KeyError:
        raise ValueError(f"unknown repair {name!r}; known repairs: {', '.join(REPAIRS)}") from None


def edit_model(model: nn.Module, layers: Iterable[str] | str, rho: float | None,
               factors: dict[str, LayerFactors] | None, *, method: str = "kfac", bias: str = "keep", seed: int = 0,
               inputs: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               batch_size: int = 1024, count_dead_units: bool = True, fisher: str = "true", samples: int = 1,
               gram_dtype: torch.dtype = torch.float64,
               factor_rows: np.ndarray | None = None) -> tuple[nn.Module, list[dict]]:
    """Return an edited copy of ``model`` and one log dict per edited layer.

    ``layers``: module names, or one layer-set string (``"fc1+fc4"``, ``"hidden"``, ``"all"``).
    ``method`` names a ``REPAIRS`` entry. With ``inputs`` (training inputs), each edited hidden
    layer's log also counts dead units before/after and units revived or killed by the edit
    (``count_dead_units=False`` skips the two extra passes). ``labels`` (the corrupted training
    labels) are needed by the VeLPIC transfer and the empirical Fisher only; ``fisher``,
    ``samples``, ``gram_dtype`` and ``factor_rows`` (rows of ``inputs``, default all) say how
    ``kfac_reestimate`` re-estimates factors.
    """
    repair = get_repair(method)
    names = expand_layer_set(model, layers) if isinstance(layers, str) else resolve_layers(model, layers)
    if repair.uses_rho:
        rho = check_rho(rho)
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}; choose one of {', '.join(BIAS_MODES)}")
    edited = copy.deepcopy(model)
    ctx = RepairInputs(factors=factors, bias=bias, seed=seed, train_x=inputs, train_labels=labels,
                       batch_size=batch_size, fisher=fisher, samples=samples, gram_dtype=gram_dtype,
                       factor_rows=factor_rows)
    logs = repair.apply(edited, names, rho, ctx)
    if inputs is not None and count_dead_units:
        hidden = [log["layer"] for log in logs if log["layer"] != head_name(model)]
        if hidden:
            before = unit_max_preactivation(model, inputs, hidden, batch_size)
            after = unit_max_preactivation(edited, inputs, hidden, batch_size)
            for log in logs:
                if log["layer"] in before:
                    log.update(dead_unit_counts(before[log["layer"]], after[log["layer"]]))
    return edited, logs


# --------------------------------------------------------------------------------------------
# evaluation (clean labels are used here only, for scoring)

TEST_SPLIT_SEED = 2345  # the 2025 paper's train_test_split(random_state=2345) (SPEC §10)
TEST_SELECT_FRACTION = 0.2

METRICS = ("test_acc", "test_acc_select", "test_acc_heldout", "train_acc_corrupted", "train_acc_true",
           "changed_acc_corrupted", "changed_acc_true", "unchanged_acc")


def split_test_set(num_test: int, seed: int = TEST_SPLIT_SEED,
               select_fraction: float = TEST_SELECT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split of the test set: (select 20 %, held-out 80 %) row indices, each sorted.

    As the 2025 paper: ``train_test_split(range(n), test_size=0.2, random_state=2345)``.
    """
    from sklearn.model_selection import train_test_split

    heldout, select = train_test_split(np.arange(num_test), test_size=select_fraction, random_state=seed)
    return np.sort(select), np.sort(heldout)


@dataclass
class RepairData:
    """Training inputs with true and corrupted labels, the test set, and the fixed test split."""

    train_x: torch.Tensor
    train_true: torch.Tensor
    train_corrupted: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    select_idx: np.ndarray = None
    heldout_idx: np.ndarray = None

    def __post_init__(self):
        self.train_true = torch.as_tensor(self.train_true, dtype=torch.long)
        self.train_corrupted = torch.as_tensor(self.train_corrupted, dtype=torch.long)
        self.test_y = torch.as_tensor(self.test_y, dtype=torch.long)
        n = len(self.train_x)
        if self.train_true.shape != (n,) or self.train_corrupted.shape != (n,):
            raise ValueError(f"label counts ({len(self.train_true)} true, {len(self.train_corrupted)} corrupted) "
                             f"do not match the {n} training inputs")
        if self.test_y.shape != (len(self.test_x),):
            raise ValueError(f"{len(self.test_y)} test labels for {len(self.test_x)} test inputs")
        if self.select_idx is None or self.heldout_idx is None:
            self.select_idx, self.heldout_idx = split_test_set(len(self.test_x))

    @property
    def changed(self) -> torch.Tensor:
        """Training examples whose label differs from the original (not the corruption draw mask)."""
        return self.train_corrupted != self.train_true


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
            watch: Iterable[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """argmax of the logits in eval mode (first index on ties), on the CPU, and for each layer in
    ``watch`` the largest output of each unit over ``x`` (to count dead units)."""
    modules = dict(model.named_modules())
    best: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(module, args, output):
            m = output.detach().reshape(-1, output.shape[-1]).amax(0).cpu()
            best[name] = m if name not in best else torch.maximum(best[name], m)
        return hook

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in watch]
    try:
        out = [model(x[s:s + batch_size].to(device=param.device, dtype=param.dtype)).argmax(1).cpu()
               for s in range(0, len(x), batch_size)]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return torch.cat(out), best


def _acc(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred == target).double().mean()) if len(target) else float("nan")


def evaluate_repair(model: nn.Module, data: RepairData, batch_size: int = 1024,
                    watch: Iterable[str] = ()) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Accuracy fractions of ``model`` (see ``METRICS``), and the unit activity of ``watch`` layers
    on the training inputs (``predict``).

    ``changed_acc_corrupted``: memorization left (agreement with the corrupted label on examples
    whose label was changed); ``changed_acc_true``: recovery of the true label there;
    ``unchanged_acc``: accuracy on the examples whose label is correct.
    """
    train_pred, activity = predict(model, data.train_x, batch_size, watch)
    test_pred, _ = predict(model, data.test_x, batch_size)
    changed = data.changed
    return {
        "test_acc": _acc(test_pred, data.test_y),
        "test_acc_select": _acc(test_pred[data.select_idx], data.test_y[data.select_idx]),
        "test_acc_heldout": _acc(test_pred[data.heldout_idx], data.test_y[data.heldout_idx]),
        "train_acc_corrupted": _acc(train_pred, data.train_corrupted),
        "train_acc_true": _acc(train_pred, data.train_true),
        "changed_acc_corrupted": _acc(train_pred[changed], data.train_corrupted[changed]),
        "changed_acc_true": _acc(train_pred[changed], data.train_true[changed]),
        "unchanged_acc": _acc(train_pred[~changed], data.train_true[~changed]),
    }, activity


# --------------------------------------------------------------------------------------------
# the sweep: every repair of one checkpoint in one table

# CURVATURE.md §5.4 in our module names (the CNN's fcs[0..2] are "fcs.0".."fcs.2", its head "fc3").
# "hidden" = every nn.Linear but the head, "all" = every nn.Linear.
DEFAULT_LAYER_SETS = {
    "mlp": ["fc1", "fc2", "fc3", "fc4", "output", "fc1+fc4", "fc3+fc4", "fc4+output", "hidden", "all"],
    "cnn": ["fcs.0", "fcs.1", "fcs.2", "fc3", "fcs.0+fcs.2", "fcs.1+fcs.2", "all"],
}
DEFAULT_RHOS = (1.0, 0.99, 0.98, 0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.60, 0.50, 0.40, 0.30)
DEFAULT_METHODS = ("kfac", "svd", "random")
REFERENCES = ("none", "velpic", "velpic_bias")
# the configuration fixed a priori (the ViT's "first and last MLP blocks at ρ = 0.75", [P] §5)
A_PRIORI_LAYER_SET = {"mlp": "fc1+fc4", "cnn": "fcs.0+fcs.2"}
A_PRIORI_RHO = 0.75


def default_layer_sets(model: nn.Module) -> list[str]:
    """CURVATURE.md §5.4's sets for the MLP and CNN; each nn.Linear alone plus hidden and all otherwise."""
    arch = getattr(model, "arch", None)
    if arch in DEFAULT_LAYER_SETS:
        return list(DEFAULT_LAYER_SETS[arch])
    return list(linear_layers(model)) + ["hidden", "all"]


def layers_in_sets(model: nn.Module, layer_sets: Iterable[str]) -> list[str]:
    """Every nn.Linear that some layer set names, in the model's order."""
    named = {n for text in layer_sets for n in expand_layer_set(model, text)}
    return [n for n in linear_layers(model) if n in named]


def expand_layer_set(model: nn.Module, text: str) -> list[str]:
    """``"fc1+fc4"`` → its layers; ``"hidden"``: every nn.Linear but the head; ``"all"``: every nn.Linear."""
    text = str(text).strip()
    if text == "all":
        return resolve_layers(model, list(linear_layers(model)))
    if text == "hidden":
        head = head_name(model)
        return resolve_layers(model, [n for n in linear_layers(model) if n != head])
    return resolve_layers(model, parse_layer_set(text))


def _summarise(logs: list[dict]) -> dict:
    """One row's view of the per-layer logs of an edit."""
    row = {}
    kept = [log for log in logs if "pairs_kept" in log]
    if kept:
        row["pairs_kept"] = sum(log["pairs_kept"] for log in kept)
        row["pairs_total"] = sum(log["pairs_total"] for log in kept)
        row["fraction_kept"] = row["pairs_kept"] / row["pairs_total"]
    reached = [log["rho_reached"] for log in logs if "rho_reached" in log]
    row["rho_reached"] = float(np.mean(reached)) if reached else float("nan")
    norm = math.sqrt(sum(log["weight_norm"] ** 2 for log in logs))
    row["rel_change"] = math.sqrt(sum(log["delta_norm"] ** 2 for log in logs)) / norm if norm > 0 else 0.0
    for key in ("dead_before", "dead_after", "revived", "killed"):
        values = [log[key] for log in logs if key in log]
        row[key] = sum(values) if values else None
    return row


def sweep_factors(model: nn.Module, data: RepairData, layers: Iterable[str], *, fisher: str = "true",
                  samples: int = 1, seed: int = 0, factor_rows: np.ndarray | None = None,
                  device: torch.device | str | None = None,
                  gram_dtype: torch.dtype = torch.float64) -> dict[str, LayerFactors]:
    """The factors ``repair_sweep`` uses: from the training rows ``factor_rows`` (default all),
    with their corrupted labels for the empirical Fisher (inputs and labels stay aligned)."""
    factor_x, factor_y = data.train_x, data.train_corrupted
    if factor_rows is not None:
        picked = torch.as_tensor(np.asarray(factor_rows), dtype=torch.long)
        factor_x, factor_y = factor_x[picked], factor_y[picked]
    return collect_factors(model, factor_x, list(layers), fisher=fisher, labels=factor_y, samples=samples,
                           seed=seed, batch_size=512, device=device, gram_dtype=gram_dtype)


def repair_sweep(model: nn.Module, data: RepairData, *, layer_sets: Iterable[str] | None = None,
                 rhos: Iterable[float] = DEFAULT_RHOS, methods: Iterable[str] = DEFAULT_METHODS,
                 references: Iterable[str] = REFERENCES, factors: dict[str, LayerFactors] | None = None,
                 fisher: str = "true", samples: int = 1, bias: str = "keep", seed: int = 0,
                 factor_rows: np.ndarray | None = None, batch_size: int = 1024,
                 device: torch.device | str | None = None, gram_dtype: torch.dtype = torch.float64,
                 progress: Callable[[str], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Evaluate every repair of ``model``: the references (unedited, VeLPIC transfer) and each
    method × layer set × ρ. Returns (rows, layer_rows): one row per repaired model and one per
    edited layer. Factors are computed once, from the training rows ``factor_rows`` (default:
    all) with the ``fisher`` labels, unless given.
    """
    layer_sets = list(default_layer_sets(model) if layer_sets is None else layer_sets)
    if not layer_sets:
        raise ValueError("no layer sets to sweep")
    expanded = {text: expand_layer_set(model, text) for text in layer_sets}
    rhos = [check_rho(r) for r in rhos]
    methods = [get_repair(m).name for m in methods]
    references = list(references)
    for r in references:
        if r not in REFERENCES:
            raise ValueError(f"unknown reference {r!r}; choose from {', '.join(REFERENCES)}")
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}; choose one of {', '.join(BIAS_MODES)}")
    if (methods and not rhos):
        raise ValueError("no rho values to sweep")
    say = progress or (lambda message: None)
    head = head_name(model)
    hidden = [n for n in linear_layers(model) if n != head]
    has_head_bias = dict(model.named_modules())[head].bias is not None

    needed = layers_in_sets(model, layer_sets)
    if factors is None and any(get_repair(m).needs_factors for m in methods):
        rows_used = len(data.train_x) if factor_rows is None else len(factor_rows)
        say(f"K-FAC factors ({fisher} Fisher) of {', '.join(needed)} from {rows_used} training inputs")
        factors = sweep_factors(model, data, needed, fisher=fisher, samples=samples, seed=seed,
                                factor_rows=factor_rows, device=device, gram_dtype=gram_dtype)

    rows, layer_rows = [], []
    base_metrics, base_activity = evaluate_repair(model, data, batch_size, watch=hidden)

    def record(repair, layer_set, layers, rho, logs, edited):
        watch = [n for n in layers if n in hidden]
        metrics, activity = (base_metrics, base_activity) if edited is model else \
            evaluate_repair(edited, data, batch_size, watch=watch)
        for log in logs:
            if log["layer"] in activity:
                log.update(dead_unit_counts(base_activity[log["layer"]], activity[log["layer"]]))
        key = {"repair": repair, "layer_set": layer_set, "layers": "+".join(layers),
               "rho": float("nan") if rho is None else rho}
        curvature = repair in REPAIRS and REPAIRS[repair].needs_factors
        rows.append({**key, "fisher": fisher if curvature else "", "bias": bias if curvature else "",
                     **_summarise(logs), **metrics})
        for log in logs:
            layer_rows.append({**key, **{k: v for k, v in log.items() if k != "method"}, "method": log["method"]})
        say(f"{repair:<12} {layer_set or '-':<14} rho={'-' if rho is None else f'{rho:.2f}'}  "
            f"test={metrics['test_acc']:.4f}  memorized={metrics['changed_acc_corrupted']:.4f}  "
            f"recovered={metrics['changed_acc_true']:.4f}")

    for ref in references:
        if ref == "none":
            record("none", "", [], None, [], model)
        elif ref == "velpic_bias" and not has_head_bias:
            continue
        else:
            edited, logs = edit_model(model, [head], None, None, method=ref, inputs=data.train_x,
                                      labels=data.train_corrupted, batch_size=batch_size, count_dead_units=False)
            record(ref, head, [head], None, logs, edited)
    for method in methods:
        for text, layers in expanded.items():
            if method == "kfac_velpic" and head in layers:
                continue  # the transfer replaces the head: sets with the head are the same as without
            for rho in rhos:
                edited, logs = edit_model(model, layers, rho, factors, method=method, bias=bias, seed=seed,
                                          inputs=data.train_x, labels=data.train_corrupted,
                                          batch_size=batch_size, count_dead_units=False, fisher=fisher,
                                          samples=samples, gram_dtype=gram_dtype, factor_rows=factor_rows)
                record(method, text, layers, rho, logs, edited)
    return rows, layer_rows
