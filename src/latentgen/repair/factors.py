"""K-FAC factors of ``nn.Linear`` layers from training inputs, and their eigenbases.

For a layer with input a and output s: A = E[a aᵀ] over the input rows, G = E[g gᵀ] of the
gradient g of the per-example loss w.r.t. s (before any ReLU). The labels in g
(``registry.FISHER_KINDS``): ``exact`` (default; the old spelling ``true`` is accepted) is the
exact true Fisher over the K classes, the expectation over y ~ p of the per-example gradient
outer product. Its logit-side matrix is Σ_y p_y (e_y − p)(e_y − p)ᵀ = diag(p) − ppᵀ; we
backpropagate the K−1 columns of its stick-breaking Cholesky factor (``fisher_factor``), which
gives the same G as the K vectors √p_y (e_y − p), in one batched backward pass. ``empirical``
uses the given (corrupted) labels; ``sampled`` draws y ~ p (seeded), as the paper's text.

Everything is accumulated in float64 from per-example (sum-reduced) gradients: the gradient
w.r.t. each layer output is taken with ``torch.autograd.grad`` from explicit per-example logit
vectors, so no batch-mean 1/B factor enters. The model runs in eval mode; no damping anywhere.
Eigenbases G = U_G diag(λ) U_Gᵀ, A = U_A diag(μ) U_Aᵀ are descending, tiny negatives clamped to 0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from latentgen.registry import fisher_kind
from latentgen.repair.layers import resolve_layers


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


class Gram:
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
    if fisher == "exact":
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


def collect_factors(model: nn.Module, inputs: torch.Tensor, layers: Iterable[str], *, fisher: str = "exact",
                    labels: torch.Tensor | None = None, samples: int = 1, seed: int = 0, batch_size: int = 512,
                    device: torch.device | str | None = None,
                    gram_dtype: torch.dtype = torch.float64) -> dict[str, LayerFactors]:
    """K-FAC factors A, G of each layer in ``layers`` from ``inputs`` (training inputs only).

    ``fisher``: ``exact`` (or its old spelling ``true``: the expectation over the model's
    predictive distribution, K−1 backward vectors per example, ``fisher_factor``), ``empirical``
    (``labels``, e.g. the corrupted training labels) or ``sampled`` (``samples`` labels per
    example drawn from the model's prediction with ``seed``). Gradients are per example (sum reduction): each example's
    vector is backpropagated on its own row, so no 1/B factor enters. Sums are kept in float64;
    ``gram_dtype=torch.float32`` forms the products in float32 (faster, ~1e-6 relative). On the CPU
    rows are gathered into blocks (at most ``GRAM_BUFFER_BYTES`` for all layers together) so that
    BLAS is called rarely.
    The model is put in eval mode for the pass and restored afterwards; its weights are untouched.
    """
    fisher = fisher_kind(fisher)
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
    grams_a = {n: Gram(modules[n].in_features, device, gram_dtype, block_rows) for n in names}
    grams_g = {n: Gram(modules[n].out_features, device, gram_dtype, block_rows) for n in names}
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
