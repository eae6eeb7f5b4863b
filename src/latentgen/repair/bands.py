"""The band diagnostic of Merullo et al. §4 (CURVATURE.md §1.5): which curvature band of a layer's
K-FAC components acts more on the memorized (label-changed) training examples."""

from __future__ import annotations

import torch
from torch import nn

from latentgen.models.forward import layer_inputs
from latentgen.repair.edits import basis_and_weight, mask_from, rebuild
from latentgen.repair.factors import LayerFactors

BANDS = ((0.0, 0.10), (0.10, 0.25), (0.25, 0.50), (0.50, 1.0))  # fractions of the pairs, by curvature rank


def band_weights(layer: nn.Linear, factors: LayerFactors, bands=BANDS) -> list[torch.Tensor]:
    """W split into bands of K-FAC components: the pairs ranked by λ_i μ_j (descending, stable),
    band [lo, hi) holding ranks lo·pq … hi·pq; each band's U_G (C ⊙ M_band) U_Aᵀ. The bands of a
    partition of [0, 1] add up to W."""
    basis, W = basis_and_weight(layer, factors, False)
    C = factors.cached("C0", W, lambda: basis.U_G.T @ W @ basis.U_A)
    order = torch.argsort(torch.outer(basis.lam, basis.mu).flatten(), descending=True, stable=True)
    total = order.numel()
    out = []
    for lo, hi in bands:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"a band must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi})")
        picked = order[int(round(lo * total)):int(round(hi * total))]
        out.append(rebuild(basis, C, mask_from(picked, W.shape)))
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
