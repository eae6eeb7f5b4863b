"""Per-layer edits of one ``nn.Linear`` from its K-FAC factors: the K-FAC edit and its controls.

K-FAC edit (CURVATURE.md §1, §5): coefficients C = U_Gᵀ W U_A, pair (i, j) has curvature
λ_i μ_j; keep the highest-curvature pairs, the smallest prefix (by λ_i μ_j, descending) whose
mass is ≥ ρ · (Σλ)(Σμ), found without sorting all pairs (``kfac_select``), and rebuild
W ← U_G (C ⊙ M) U_Aᵀ. ρ = 1 keeps every pair (no edit), as the authors' code treats ρ ≈ 1;
the prefix rule alone would drop zero-curvature pairs.

Controls, each matched to the K-FAC edit at the same ρ on the same layer: ``svd_edit_layer``
(same fraction of components removed, or the same ‖ΔW‖_F), ``random_edit_layer`` (as many K-FAC
pairs, chosen at random), ``factor_edit_layer`` (one factor truncated at mass ρ). Each edit
writes the layer in place and returns a log dict (``edit_log``).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import nn

from latentgen.repair.factors import Eigenbasis, LayerFactors
from latentgen.repair.layers import check_rho


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
    return mask_from(kfac_select(lam, mu, rho)[0], (len(lam), len(mu)))


def mask_from(indices: torch.Tensor, shape) -> torch.Tensor:
    """Boolean mask of ``shape`` with the flat ``indices`` set."""
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


def edit_log(name, method, W, W_new, mask=None, **extra) -> dict:
    """The log of one layer edit W → W_new: norms, relative change and, with the kept ``mask``,
    the pairs kept; ``extra`` is added as is."""
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


def basis_and_weight(layer: nn.Linear, factors: LayerFactors, homogeneous: bool) -> tuple[Eigenbasis, torch.Tensor]:
    """The factors' eigenbasis and the layer's (augmented) float64 weight, checked to match."""
    basis = factors.eigenbasis(homogeneous)
    W = _augmented(layer, homogeneous)
    if basis.U_G.shape[0] != W.shape[0] or basis.U_A.shape[0] != W.shape[1]:
        raise ValueError(f"factors of {factors.name!r} ({basis.U_G.shape[0]}×{basis.U_A.shape[0]}) do not "
                         f"match the layer's weight {W.shape[0]}×{W.shape[1]}")
    return basis, W


def _kfac_plan(layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool):
    """Basis, weights, coefficients C = U_Gᵀ W U_A, the kept mask and the reached mass (nothing written)."""
    basis, W = basis_and_weight(layer, factors, homogeneous)
    C = factors.cached(f"C{int(homogeneous)}", W, lambda: basis.U_G.T @ W @ basis.U_A)
    kept, reached = kfac_select(basis.lam, basis.mu, rho)
    return basis, W, C, mask_from(kept, W.shape), reached


def rebuild(basis: Eigenbasis, C: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """U_G (C ⊙ M) U_Aᵀ: the kept components of W."""
    return basis.U_G @ (C * mask) @ basis.U_A.T


def kfac_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False) -> dict:
    """W ← U_G (C ⊙ M) U_Aᵀ in place, keeping the top pairs by λ_i μ_j up to mass ρ."""
    basis, W, C, mask, reached = _kfac_plan(layer, factors, rho, homogeneous)
    W_new = rebuild(basis, C, mask)
    _write_back(layer, W_new, homogeneous)
    return edit_log(name, "kfac", W, W_new, mask, rho=rho, rho_reached=reached)


def random_edit_layer(name: str, layer: nn.Linear, factors: LayerFactors, rho: float, homogeneous: bool = False,
                      seed: int = 0) -> dict:
    """Keep as many K-FAC pairs as the K-FAC edit at ρ, chosen uniformly at random.

    The random order depends only on (seed, layer name), so the kept sets are nested across ρ.
    """
    basis, W, C, kfac_mask, _ = _kfac_plan(layer, factors, rho, homogeneous)
    k = int(kfac_mask.sum())
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode()))
    mask = mask_from(torch.randperm(W.numel(), generator=generator)[:k], W.shape)
    W_new = rebuild(basis, C, mask)
    _write_back(layer, W_new, homogeneous)
    mass = torch.outer(basis.lam, basis.mu)
    total = float(mass.sum())
    return edit_log(name, "random", W, W_new, mask, rho=rho,
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
    basis, W = basis_and_weight(layer, factors, homogeneous)
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
    return edit_log(name, f"{side.lower()}_only", W, W_new, rho=rho, vectors_kept=k,
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
        target = float(torch.linalg.norm(rebuild(basis, C, kfac_mask) - Wa))
        tail = torch.sqrt(torch.cumsum(S.flip(0) ** 2, 0))  # norm removed by dropping the last m
        removed = 0 if target <= 0 else min(r_max, int(torch.searchsorted(tail, torch.tensor([target], dtype=tail.dtype))) + 1)
    else:
        raise ValueError(f"unknown SVD match {match!r}; use 'count' or 'norm'")
    keep = r_max - removed
    W_new = (U[:, :keep] * S[:keep]) @ Vh[:keep]
    _write_back(layer, W_new, False)
    return edit_log(name, "svd" if match == "count" else "svd_norm", W, W_new, rho=rho,
                     pairs_total=r_max, pairs_kept=keep, fraction_kept=keep / r_max,
                     kfac_fraction_kept=float(kfac_mask.sum()) / kfac_mask.numel())
