"""K-FAC curvature edit (latentgen.repair) against brute-force references written here."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentgen import registry
from latentgen.models import forward
from latentgen import repair as cv
from latentgen.repair import factors as repair_factors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net(nn.Module):
    """5 → 7 → 7 (square) → 3 with ReLUs: a non-square, a square and an output layer."""

    head = "out"

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 7)
        self.out = nn.Linear(7, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.out(self.relu(self.fc2(self.relu(self.fc1(x)))))


LAYERS = ["fc1", "fc2", "out"]


def _net_and_inputs(n=24, seed=0):
    model = Net(seed).double()
    x = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1)) * 1.5
    return model, x


def _per_class_gradients(model, x, layers):
    """Per example: layer inputs a_n and, for every class y, ∂CE(z_n, y)/∂(layer output) — one at a time."""
    modules = dict(model.named_modules())
    inputs, grads, probs = [], [], []
    for i in range(len(x)):
        seen = {}
        hooks = [modules[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0], o))) for n in layers]
        z = model(x[i:i + 1])
        for h in hooks:
            h.remove()
        probs.append(torch.softmax(z, 1)[0].detach())
        inputs.append({n: seen[n][0][0].detach() for n in layers})
        per_y = []
        for y in range(z.shape[1]):
            loss = F.cross_entropy(z, torch.tensor([y]), reduction="sum")
            gs = torch.autograd.grad(loss, [seen[n][1] for n in layers], retain_graph=True)
            per_y.append({n: g[0].detach() for n, g in zip(layers, gs)})
        grads.append(per_y)
    return inputs, grads, torch.stack(probs)


def _brute_factors(model, x, layers, weights):
    """A = mean a aᵀ; G = mean_n Σ_y weights[n, y] g_ny g_nyᵀ (weights: p for the true Fisher, one-hot for labels)."""
    inputs, grads, _ = _per_class_gradients(model, x, layers)
    out = {}
    for n in layers:
        A = sum(torch.outer(a[n], a[n]) for a in inputs) / len(x)
        G = sum(weights[i, y] * torch.outer(grads[i][y][n], grads[i][y][n])
                for i in range(len(x)) for y in range(weights.shape[1])) / len(x)
        out[n] = (A, G)
    return out


# --------------------------------------------------------------------------------------------
# factors


def test_true_fisher_factors_match_per_example_loop():
    model, x = _net_and_inputs()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    ref = _brute_factors(model, x, LAYERS, p)
    got = cv.collect_factors(model, x, LAYERS, fisher="exact", batch_size=7)  # partial last batch
    for n in LAYERS:
        A, G = ref[n]
        assert got[n].A.shape == A.shape and got[n].G.shape == G.shape
        torch.testing.assert_close(got[n].A, A, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(got[n].G, G, rtol=1e-10, atol=1e-15)
        assert got[n].num_rows == len(x) and got[n].fisher == "exact"
    # on the square layer, input and output factors are different matrices: a swap cannot pass
    assert not torch.allclose(ref["fc2"][0], ref["fc2"][1], rtol=0.1)
    # the output layer's G has the constant direction 1/√K in its null space
    ones = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    assert float(ones @ got["out"].G @ ones) < 1e-15


def test_true_is_the_old_spelling_of_the_exact_fisher():
    model, x = _net_and_inputs()
    exact = cv.collect_factors(model, x, ["fc2"], fisher="exact")
    for old in ("true", True):  # True: YAML's reading of `fisher: true`
        again = cv.collect_factors(model, x, ["fc2"], fisher=old)
        assert again["fc2"].fisher == "exact"
        torch.testing.assert_close(again["fc2"].G, exact["fc2"].G, rtol=0, atol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_gram_blocks_across_batches_sum_to_the_full_product(dtype, tol):
    x = torch.randn(53, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gram = cv.Gram(6, torch.device("cpu"), dtype, block_rows=5)    # blocks straddle the batches
    for part in torch.split(x, [3, 11, 0, 20, 19]):
        gram.add(part)
    full = x.T @ x
    torch.testing.assert_close(gram.value(), full, rtol=tol, atol=tol * float(full.abs().max()))
    assert gram.value().dtype == torch.float64
    torch.testing.assert_close(gram.value(), gram.value().T, rtol=0, atol=0)  # symmetric, flushing twice is harmless


def test_factor_blocks_do_not_change_the_factors(monkeypatch):
    model, x = _net_and_inputs(n=40)
    whole = cv.collect_factors(model, x, LAYERS, batch_size=9)
    monkeypatch.setattr(repair_factors, "GRAM_MAX_BLOCK_ROWS", 4)  # G blocks of 4 rows: many flushes inside each batch
    blocked = cv.collect_factors(model, x, LAYERS, batch_size=9)
    for n in LAYERS:
        torch.testing.assert_close(blocked[n].A, whole[n].A, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(blocked[n].G, whole[n].G, rtol=1e-12, atol=1e-15)


def test_empirical_fisher_uses_the_labels_given():
    model, x = _net_and_inputs()
    labels = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(5))
    ref = _brute_factors(model, x, LAYERS, F.one_hot(labels, 3).double())
    got = cv.collect_factors(model, x, LAYERS, fisher="empirical", labels=labels, batch_size=10)
    for n in LAYERS:
        torch.testing.assert_close(got[n].G, ref[n][1], rtol=1e-10, atol=1e-15)
    other = cv.collect_factors(model, x, LAYERS, fisher="empirical", labels=(labels + 1) % 3)
    assert not torch.allclose(other["fc2"].G, got["fc2"].G, rtol=1e-3)
    torch.testing.assert_close(other["fc2"].A, got["fc2"].A)  # A never depends on labels


def test_true_fisher_is_the_expectation_of_the_sampled_fisher():
    model, x = _net_and_inputs(n=12)
    samples = 3000
    exact = cv.collect_factors(model, x, LAYERS, fisher="exact")
    sampled = cv.collect_factors(model, x, LAYERS, fisher="sampled", samples=samples, seed=3)
    # standard error of every entry of the Monte-Carlo mean, from the per-class gradients
    _, grads, p = _per_class_gradients(model, x, LAYERS)
    for n in LAYERS:
        outer = torch.stack([torch.stack([torch.outer(grads[i][y][n], grads[i][y][n]) for y in range(3)])
                             for i in range(len(x))])                       # N×K×p×p
        mean = torch.einsum("ny,nyab->nab", p, outer)
        var = torch.einsum("ny,nyab->nab", p, outer ** 2) - mean ** 2
        se = var.clamp_min(0).sum(0).sqrt() / (len(x) * math.sqrt(samples))
        torch.testing.assert_close(mean.mean(0), exact[n].G, rtol=1e-10, atol=1e-15)
        err = (sampled[n].G - exact[n].G).abs()
        assert bool((err <= 5 * se + 1e-14).all()), f"{n}: max error/SE {float((err / (se + 1e-30)).max()):.1f}"
        assert float(torch.linalg.norm(err)) < 0.05 * float(torch.linalg.norm(exact[n].G))
    again = cv.collect_factors(model, x, ["fc2"], fisher="sampled", samples=5, seed=3)
    same = cv.collect_factors(model, x, ["fc2"], fisher="sampled", samples=5, seed=3)
    other = cv.collect_factors(model, x, ["fc2"], fisher="sampled", samples=5, seed=4)
    torch.testing.assert_close(again["fc2"].G, same["fc2"].G, rtol=0, atol=0)
    assert not torch.allclose(again["fc2"].G, other["fc2"].G)


def test_factor_collection_restores_mode_and_leaves_weights():
    model, x = _net_and_inputs()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cv.collect_factors(model, x, ["fc2"])
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


# --------------------------------------------------------------------------------------------
# selection


def _brute_prefix(lam, mu, rho):
    pairs = sorted(((float(lam[i]) * float(mu[j]), i, j) for i in range(len(lam)) for j in range(len(mu))),
                   key=lambda t: -t[0])
    total = float(sum(lam)) * float(sum(mu))  # M_tot = (Σλ)(Σμ)
    kept, mass = set(), 0.0
    for value, i, j in pairs:
        if mass >= rho * total:
            break
        kept.add((i, j))
        mass += value
    return kept, total


@pytest.mark.parametrize("rho", [0.999, 0.95, 0.9, 0.75, 0.5, 0.3, 0.05])
def test_selection_keeps_the_smallest_prefix_reaching_rho(rho):
    gen = torch.Generator().manual_seed(11)
    lam = torch.rand(9, generator=gen, dtype=torch.float64).pow(4).sort(descending=True).values
    mu = torch.rand(13, generator=gen, dtype=torch.float64).pow(3).sort(descending=True).values
    mask = cv.kfac_keep_mask(lam, mu, rho)
    kept, total = _brute_prefix(lam, mu, rho)
    assert {tuple(ij) for ij in torch.nonzero(mask).tolist()} == kept
    masses = torch.outer(lam, mu)
    assert float(masses[mask].sum()) >= rho * total * (1 - 1e-12)
    # minimal: dropping the smallest kept pair falls short of ρ
    assert float(masses[mask].sum() - masses[mask].min()) < rho * total


@pytest.mark.parametrize("rho", [0.99, 0.8, 0.5, 0.31])
def test_selection_with_ties_and_zeros_keeps_the_stable_sorted_prefix(rho):
    lam = torch.tensor([4.0, 2.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    mu = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    kept, _ = _brute_prefix(lam, mu, rho)  # Python's sort is stable: ties in flat-index order
    mask = cv.kfac_keep_mask(lam, mu, rho)
    assert {tuple(ij) for ij in torch.nonzero(mask).tolist()} == kept


def test_selection_at_scale_matches_a_full_sort():
    gen = torch.Generator().manual_seed(3)
    lam = torch.rand(300, generator=gen, dtype=torch.float64).pow(6).sort(descending=True).values
    mu = torch.cat([torch.rand(190, generator=gen, dtype=torch.float64).pow(3), torch.zeros(10, dtype=torch.float64)])
    mu = mu.sort(descending=True).values
    values = torch.outer(lam, mu).reshape(-1)
    order = torch.sort(values, descending=True, stable=True).indices
    cumulative = torch.cumsum(values[order], 0)
    total = float(lam.sum()) * float(mu.sum())
    for rho in (0.999, 0.9, 0.6, 0.2):
        k = int((cumulative < rho * total).sum()) + 1
        kept, reached = cv.kfac_select(lam, mu, rho)
        assert torch.equal(kept, order[:k])  # the same pairs, best first
        assert reached == pytest.approx(float(cumulative[k - 1]) / total, rel=1e-12)


def test_rho_one_keeps_every_pair_even_with_zero_curvature():
    lam = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    mu = torch.tensor([3.0, 0.0], dtype=torch.float64)
    assert bool(cv.kfac_keep_mask(lam, mu, 1.0).all())
    assert int(cv.kfac_keep_mask(lam, mu, 0.9999).sum()) == 2  # the positive-mass pairs only


# --------------------------------------------------------------------------------------------
# the edit


def _brute_edit(W, A, G, rho):
    """Σ over the kept pairs of (u_iᵀ W v_j) u_i v_jᵀ, with eigenvectors from numpy."""
    lam, U = np.linalg.eigh(G.numpy())
    mu, V = np.linalg.eigh(A.numpy())
    lam, U = np.clip(lam[::-1], 0, None), U[:, ::-1]
    mu, V = np.clip(mu[::-1], 0, None), V[:, ::-1]
    kept, _ = _brute_prefix(lam, mu, rho)
    out = np.zeros(W.shape)
    for i, j in kept:
        out += (U[:, i] @ W.numpy() @ V[:, j]) * np.outer(U[:, i], V[:, j])
    return torch.from_numpy(out)


@pytest.mark.parametrize("layer", ["fc1", "fc2"])
def test_edit_equals_brute_force_projection_and_detects_an_orientation_swap(layer):
    model, x = _net_and_inputs()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    A, G = _brute_factors(model, x, [layer], p)[layer]
    factors = cv.collect_factors(model, x, [layer])
    W = dict(model.named_modules())[layer].weight.detach().clone()
    for rho in (0.95, 0.7):
        edited, logs = cv.edit_model(model, [layer], rho, factors)
        got = dict(edited.named_modules())[layer].weight.detach()
        torch.testing.assert_close(got, _brute_edit(W, A, G, rho), rtol=1e-9, atol=1e-11)
        assert logs[0]["pairs_kept"] < W.numel()
    if layer == "fc2":  # square: an edit with A and G swapped runs, and gives another matrix
        swapped = _brute_edit(W, G, A, 0.7)
        edited, _ = cv.edit_model(model, [layer], 0.7, factors)
        assert not torch.allclose(dict(edited.named_modules())[layer].weight.detach(), swapped, atol=1e-3)


@pytest.mark.parametrize("side", ["A", "G"])
def test_one_factor_controls_project_onto_the_top_eigenvectors(side):
    model, x = _net_and_inputs()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    A, G = _brute_factors(model, x, ["fc2"], p)["fc2"]   # fc2 is square: a side swap would not be caught by shapes
    factors = cv.collect_factors(model, x, ["fc2"])
    W = model.fc2.weight.detach().clone()
    values, vectors = np.linalg.eigh((A if side == "A" else G).numpy())
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    method = f"{side.lower()}_only"
    for rho in (0.9, 0.5):
        k = next(i + 1 for i in range(len(values)) if values[:i + 1].sum() >= rho * values.sum())
        P = torch.from_numpy(vectors[:, :k] @ vectors[:, :k].T)
        expected = W @ P if side == "A" else P @ W
        edited, logs = cv.edit_model(model, ["fc2"], rho, factors, method=method)
        torch.testing.assert_close(edited.fc2.weight.detach(), expected, rtol=1e-9, atol=1e-11)
        assert logs[0]["vectors_kept"] == k < 7 and logs[0]["pairs_kept"] == 7 * k
        assert torch.equal(edited.fc2.bias, model.fc2.bias)
    other = W @ P if side == "G" else P @ W
    assert not torch.allclose(expected, other, atol=1e-3)
    edited, logs = cv.edit_model(model, ["fc2"], 1.0, factors, method=method)
    torch.testing.assert_close(edited.fc2.weight, W, rtol=0, atol=1e-12)
    assert logs[0]["fraction_kept"] == 1.0


def test_reestimated_edit_recomputes_later_factors_on_the_edited_model():
    model, x = _net_and_inputs(n=30)
    factors = cv.collect_factors(model, x, LAYERS)
    rho = 0.8
    edited, logs = cv.edit_model(model, ["fc2", "fc1"], rho, factors, method="kfac_reestimate", inputs=x,
                                 count_dead_units=False)
    # by hand: fc1 (first in forward order) with the given factors, then fc2 with factors of the edited model
    by_hand, _ = cv.edit_model(model, ["fc1"], rho, factors)
    fresh = cv.collect_factors(by_hand, x, ["fc2"])
    by_hand, _ = cv.edit_model(by_hand, ["fc2"], rho, fresh)
    for name in ("fc1", "fc2"):
        torch.testing.assert_close(edited.get_submodule(name).weight, by_hand.get_submodule(name).weight,
                                   rtol=0, atol=1e-13)
    assert [(log["layer"], log["reestimated"]) for log in logs] == [("fc1", False), ("fc2", True)]
    one_shot, _ = cv.edit_model(model, ["fc1", "fc2"], rho, factors)
    torch.testing.assert_close(edited.fc1.weight, one_shot.fc1.weight, rtol=0, atol=0)
    assert not torch.allclose(edited.fc2.weight, one_shot.fc2.weight, atol=1e-6)  # fc2's factors did change
    same, _ = cv.edit_model(model, ["fc1", "fc2"], 1.0, factors, method="kfac_reestimate", inputs=x)
    torch.testing.assert_close(same.fc2.weight, model.fc2.weight, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs the training inputs"):
        cv.edit_model(model, ["fc1", "fc2"], rho, factors, method="kfac_reestimate")


def test_band_diagnostic_matches_a_per_pair_sum_and_partitions_the_weights():
    model, x = _net_and_inputs(n=30)
    factors = cv.collect_factors(model, x, ["fc2"])
    bands = cv.band_weights(model.fc2, factors["fc2"])
    W = model.fc2.weight.detach()
    torch.testing.assert_close(sum(bands), W, rtol=0, atol=1e-12)
    # by hand: rank the 49 pairs by λ_i μ_j (numpy eigh, descending), band (lo, hi] as the ranks it covers
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    A, G = _brute_factors(model, x, ["fc2"], p)["fc2"]
    lam, U = np.linalg.eigh(G.numpy())
    mu, V = np.linalg.eigh(A.numpy())
    lam, U, mu, V = np.clip(lam[::-1], 0, None), U[:, ::-1], np.clip(mu[::-1], 0, None), V[:, ::-1]
    ranked = sorted(((i, j) for i in range(7) for j in range(7)), key=lambda ij: -lam[ij[0]] * mu[ij[1]])
    changed = torch.arange(30) % 3 == 0
    a = torch.relu(model.fc1(x)).detach()
    rows = cv.band_activation_ratios(model, "fc2", factors["fc2"], x, changed)
    assert [(r["band_lo"], r["band_hi"]) for r in rows] == list(cv.BANDS)
    for (lo, hi), band, row in zip(cv.BANDS, bands, rows):
        expected = sum((U[:, i] @ W.numpy() @ V[:, j]) * np.outer(U[:, i], V[:, j])
                       for i, j in ranked[round(lo * 49):round(hi * 49)])
        torch.testing.assert_close(band, torch.from_numpy(expected), rtol=1e-8, atol=1e-10)
        norms = torch.linalg.norm(a @ band.T, dim=1)
        assert row["ratio"] == pytest.approx(float(norms[changed].mean() / norms[~changed].mean()), rel=1e-6)
    with pytest.raises(ValueError, match="both changed and unchanged"):
        cv.band_activation_ratios(model, "fc2", factors["fc2"], x, torch.zeros(30, dtype=torch.bool))
    with pytest.raises(ValueError, match="do not match"):
        cv.band_weights(model.fc1, factors["fc2"])


def test_rho_one_rebuilds_square_and_non_square_layers():
    model, x = _net_and_inputs()
    model = model.float()
    factors = cv.collect_factors(model, x.float(), LAYERS)
    edited, logs = cv.edit_model(model, LAYERS, 1.0, factors)
    for name, module in edited.named_modules():
        if isinstance(module, nn.Linear):
            original = dict(model.named_modules())[name]
            torch.testing.assert_close(module.weight, original.weight, rtol=1e-6, atol=1e-6)
            assert torch.equal(module.bias, original.bias)
    assert [log["fraction_kept"] for log in logs] == [1.0, 1.0, 1.0]
    # the round trip through both eigenbases, in float64
    W = dict(model.named_modules())["fc2"].weight.detach().double()
    basis = factors["fc2"].eigenbasis()
    rebuilt = cv.rebuild(basis, basis.U_G.T @ W @ basis.U_A, torch.ones_like(W, dtype=torch.bool))
    torch.testing.assert_close(rebuilt, W, rtol=0, atol=1e-12)


def test_eigenvector_sign_flips_do_not_change_the_edit():
    model, x = _net_and_inputs()
    factors = cv.collect_factors(model, x, ["fc1", "fc2"])
    flipped = {}
    gen = torch.Generator().manual_seed(2)
    for n, f in factors.items():
        basis = f.eigenbasis()
        s_g = torch.where(torch.rand(len(basis.lam), generator=gen) < 0.5, -1.0, 1.0).double()
        s_a = torch.where(torch.rand(len(basis.mu), generator=gen) < 0.5, -1.0, 1.0).double()
        assert (s_g < 0).any() and (s_a < 0).any()
        copy = cv.LayerFactors(n, f.A, f.G, f.a_mean, f.num_rows, f.fisher)
        copy._eigen[False] = cv.Eigenbasis(basis.lam, basis.U_G * s_g, basis.mu, basis.U_A * s_a)
        flipped[n] = copy
    for rho in (0.9, 0.6):
        a, _ = cv.edit_model(model, ["fc1", "fc2"], rho, factors)
        b, _ = cv.edit_model(model, ["fc1", "fc2"], rho, flipped)
        for n in ("fc1", "fc2"):
            torch.testing.assert_close(getattr(a, n).weight, getattr(b, n).weight, rtol=0, atol=1e-12)


def test_homogeneous_bias_variant():
    model, x = _net_and_inputs()
    factors = cv.collect_factors(model, x, ["fc2"])
    same, _ = cv.edit_model(model, ["fc2"], 1.0, factors, bias="homogeneous")
    torch.testing.assert_close(same.fc2.weight, model.fc2.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(same.fc2.bias, model.fc2.bias, rtol=0, atol=1e-12)
    kept, _ = cv.edit_model(model, ["fc2"], 0.8, factors)
    homog, logs = cv.edit_model(model, ["fc2"], 0.8, factors, bias="homogeneous")
    assert torch.equal(kept.fc2.bias, model.fc2.bias)
    assert not torch.allclose(homog.fc2.bias, model.fc2.bias)
    # the homogeneous edit is the K-FAC edit of [W b] with Ā = E[[a;1][a;1]ᵀ]
    a = torch.relu(model.fc1(x)).detach()
    a_bar = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    W_bar = torch.cat([model.fc2.weight, model.fc2.bias[:, None]], 1).detach()
    ref = _brute_edit(W_bar, a_bar.T @ a_bar / len(a), factors["fc2"].G, 0.8)
    torch.testing.assert_close(torch.cat([homog.fc2.weight, homog.fc2.bias[:, None]], 1).detach(), ref,
                               rtol=1e-9, atol=1e-11)
    assert logs[0]["pairs_total"] == 7 * 8


# --------------------------------------------------------------------------------------------
# controls


def test_svd_controls_match_the_kfac_edit():
    model, x = _net_and_inputs()
    factors = cv.collect_factors(model, x, ["fc1", "fc2"])
    for rho in (0.9, 0.6):
        _, k_logs = cv.edit_model(model, ["fc1", "fc2"], rho, factors)
        svd_model, s_logs = cv.edit_model(model, ["fc1", "fc2"], rho, factors, method="svd")
        norm_model, n_logs = cv.edit_model(model, ["fc1", "fc2"], rho, factors, method="svd_norm")
        for kl, sl, nl in zip(k_logs, s_logs, n_logs):
            W = getattr(model, kl["layer"]).weight.detach()
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            r_max = len(S)
            removed = round((1 - kl["fraction_kept"]) * r_max)
            assert sl["pairs_kept"] == r_max - removed
            keep = r_max - removed
            torch.testing.assert_close(getattr(svd_model, kl["layer"]).weight.detach(),
                                       (U[:, :keep] * S[:keep]) @ Vh[:keep], rtol=1e-9, atol=1e-11)
            # same ‖ΔW‖: the fewest bottom components whose removal reaches the K-FAC change
            m = r_max - nl["pairs_kept"]
            assert nl["delta_norm"] >= kl["delta_norm"] - 1e-12
            assert m == 0 or float(S[r_max - m + 1:].pow(2).sum().sqrt()) < kl["delta_norm"]
            assert torch.equal(getattr(norm_model, kl["layer"]).bias, getattr(model, kl["layer"]).bias)


def test_random_control_removes_as_many_pairs_and_is_seeded():
    model, x = _net_and_inputs()
    factors = cv.collect_factors(model, x, ["fc2"])
    _, k_logs = cv.edit_model(model, ["fc2"], 0.8, factors)
    a, r_logs = cv.edit_model(model, ["fc2"], 0.8, factors, method="random", seed=1)
    b, _ = cv.edit_model(model, ["fc2"], 0.8, factors, method="random", seed=1)
    c, _ = cv.edit_model(model, ["fc2"], 0.8, factors, method="random", seed=2)
    assert r_logs[0]["pairs_kept"] == k_logs[0]["pairs_kept"]
    assert torch.equal(a.fc2.weight, b.fc2.weight)
    assert not torch.equal(a.fc2.weight, c.fc2.weight)
    # the kept pairs carry less curvature mass than the top-mass selection
    assert r_logs[0]["rho_reached"] < k_logs[0]["rho_reached"]


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_name_the_problem():
    model, x = _net_and_inputs()
    factors = cv.collect_factors(model, x, ["fc2"])
    with pytest.raises(ValueError, match="'relu'.*not an nn.Linear"):
        cv.edit_model(model, ["relu"], 0.9, factors)
    with pytest.raises(ValueError, match="'fc9'.*not a module"):
        cv.collect_factors(model, x, ["fc9"])
    with pytest.raises(ValueError, match="empty layer set"):
        cv.edit_model(model, [], 0.9, factors)
    with pytest.raises(ValueError, match="empty layer set"):
        cv.edit_model(model, "", 0.9, factors)
    for rho in (0.0, -0.1, 1.01, float("nan"), "high"):
        with pytest.raises(ValueError, match="rho"):
            cv.edit_model(model, ["fc2"], rho, factors)
    with pytest.raises(ValueError, match="no K-FAC factors for layer 'fc1'"):
        cv.edit_model(model, ["fc1"], 0.9, factors)
    with pytest.raises(ValueError, match="unknown repair"):
        cv.edit_model(model, ["fc2"], 0.9, factors, method="prune")
    with pytest.raises(ValueError, match="unknown Fisher kind"):
        cv.collect_factors(model, x, ["fc2"], fisher="fisher")
    with pytest.raises(ValueError, match="needs labels"):
        cv.collect_factors(model, x, ["fc2"], fisher="empirical")
    with pytest.raises(ValueError, match="names a layer twice"):
        cv.edit_model(model, ["fc2", "fc2"], 0.9, factors)


# --------------------------------------------------------------------------------------------
# a memorized model: the zoo's digits MLP on 60 %-corrupted labels


@functools.lru_cache(maxsize=1)
def memorized_digits():
    """The zoo's digits MLP (64-128-256-256-10) trained full-batch (Adam 1e-2, 150 steps, seeded)
    on digits with 60 %-corrupted labels; returns (model in eval mode, RepairData, corrupted labels)."""
    from latentgen.data.datasets import load_dataset
    from latentgen.data.labels import corrupt_labels
    from latentgen.models.architectures import build_model

    ds = load_dataset("digits")
    corrupted = corrupt_labels(ds.train_y.numpy(), 0.6, ds.num_classes, seed=42)
    y = torch.from_numpy(corrupted)
    model = build_model("mlp", "digits", seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(ds.train_x), y).backward()
        optimizer.step()
    model.eval()
    data = cv.RepairData(ds.train_x, ds.train_y, y, ds.test_x, ds.test_y)
    return model, data, corrupted


def test_edits_of_a_memorized_digits_model():
    model, data, _ = memorized_digits()
    base, _ = cv.evaluate_repair(model, data)
    assert base["changed_acc_corrupted"] > 0.95  # precondition: the labels are memorized
    everything = list(forward.linear_layers(model))
    factors = cv.collect_factors(model, data.train_x, everything)
    # ρ = 1 changes nothing, for the edit and both controls
    for method in ("kfac", "svd", "random"):
        edited, _ = cv.edit_model(model, everything, 1.0, factors, method=method)
        assert cv.evaluate_repair(edited, data)[0] == base
    # as ρ falls, fewer pairs are kept and the weights move further away (the kept sets are nested)
    previous = None
    for rho in registry.DEFAULT_RHOS:
        _, logs = cv.edit_model(model, everything, rho, factors, inputs=data.train_x)
        current = {log["layer"]: log for log in logs}
        for name, log in current.items():
            assert log["rho_reached"] >= rho
            if rho < 1:
                assert log["rel_change"] > 0 and log["fraction_kept"] < 1
            if previous is not None:
                assert log["pairs_kept"] <= previous[name]["pairs_kept"]
                assert log["delta_norm"] >= previous[name]["delta_norm"] - 1e-9
            if name != "output":
                assert log["dead_after"] - log["dead_before"] == log["killed"] - log["revived"]
        previous = current
    first = cv.edit_model(model, everything, 0.99, factors)[1]
    assert all(p["pairs_kept"] < f["pairs_kept"] for p, f in zip(previous.values(), first))


def test_velpic_transfer_is_a_registered_repair():
    pytest.importorskip("latentgen.probing.velpic_transfer")
    from latentgen.probing.masc_velpic import VeLPIC

    model, data, corrupted = memorized_digits()
    edited, logs = cv.edit_model(model, ["output"], None, None, method="velpic", inputs=data.train_x, labels=corrupted)
    assert logs[0]["layer"] == "output" and float(edited.output.bias.detach().abs().max()) == 0.0
    # the transferred network predicts what VeLPIC predicts on the last hidden layer (SPEC §8.5)
    probe = VeLPIC().fit(forward.head_inputs(model, data.train_x), corrupted, classes=np.arange(10))
    expected = probe.predict(forward.head_inputs(model, data.test_x))
    assert np.array_equal(forward.predict(edited, data.test_x).numpy(), expected)
    factors = cv.collect_factors(model, data.train_x, ["fc1", "fc4"])
    combined, _ = cv.edit_model(model, ["fc1", "fc4"], 1.0, factors, method="kfac_velpic", inputs=data.train_x,
                                labels=corrupted)
    assert cv.evaluate_repair(combined, data)[0] == cv.evaluate_repair(edited, data)[0]


def test_the_velpic_transfer_is_refit_only_when_the_head_inputs_change(monkeypatch):
    from latentgen.probing.masc_velpic import VeLPIC
    from latentgen.repair import methods

    model, data, corrupted = memorized_digits()
    fits = []
    fit = VeLPIC.fit
    monkeypatch.setattr(VeLPIC, "fit", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k))
    monkeypatch.setattr(methods, "_VELPIC_FITS", {})
    factors = cv.collect_factors(model, data.train_x, ["fc1"])

    def sweep(rho):
        edited, _ = cv.edit_model(model, ["fc1", "output"], rho, factors, method="kfac_velpic", inputs=data.train_x,
                                  labels=corrupted)
        return edited.output.weight.detach().clone()

    first, again, other = sweep(0.9), sweep(0.9), sweep(0.5)
    assert len(fits) == 2  # 0.9's head inputs twice: one fit; 0.5 edits fc1 otherwise: a fit of its own
    assert torch.equal(first, again) and not torch.equal(first, other)
    methods._VELPIC_FITS.clear()
    assert torch.equal(sweep(0.9), first) and len(fits) == 3  # the fit kept is the fit made anew


def test_fisher_factor_is_the_multinomial_covariance_even_when_nearly_one_hot():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5], [40.0, 0.0, -3.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                           [-800.0, 0.0, -900.0, -700.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)
    L = cv.fisher_factor(p)
    assert L.shape == (4, 4, 3) and not L.isnan().any()
    # reference without cancellation: diagonal p_i Σ_{k≠i} p_k, off-diagonal −p_i p_j
    rest = torch.stack([torch.cat([p[:, :i], p[:, i + 1:]], 1).sum(1)
                        for i in range(4)], 1)
    ref = -p[:, :, None] * p[:, None, :]
    ref[:, range(4), range(4)] = p * rest
    got = L @ L.transpose(1, 2)
    assert torch.allclose(got, ref, rtol=1e-12, atol=0)


def test_cnn_fully_connected_stack():
    from latentgen.data.datasets import load_dataset
    from latentgen.models.architectures import build_model

    model = build_model("cnn", "digits", seed=0).eval()
    x = load_dataset("digits").train_x[:200]
    sets = registry.repair_layer_sets("cnn")
    assert cv.expand_layer_set(model, "all") == ["fcs.0", "fcs.1", "fcs.2", "fc3"]
    assert cv.expand_layer_set(model, "fcs.0+fcs.2") == ["fcs.0", "fcs.2"]
    assert all(cv.expand_layer_set(model, s) for s in sets)
    factors = cv.collect_factors(model, x, ["fcs.0", "fcs.1", "fcs.2", "fc3"])
    assert factors["fcs.0"].A.shape == (model.flat_features, model.flat_features)  # input: the flattened conv features
    assert factors["fc3"].G.shape == (10, 10)
    same, _ = cv.edit_model(model, "all", 1.0, factors)
    assert torch.equal(forward.predict(same, x), forward.predict(model, x))
    edited, logs = cv.edit_model(model, "all", 0.8, factors, bias="homogeneous")  # fc3 has no bias: W only
    width = model.fcs[0].out_features
    assert [log["pairs_total"] for log in logs] == [width * (model.flat_features + 1), width * (width + 1),
                                                    width * (width + 1), 10 * width]
    assert edited.fc3.bias is None


def test_a_sweep_from_the_features_equals_one_of_whole_forward_passes(monkeypatch):
    """The sweep computes the CNN's conv features once and runs only the linear layers per edit:
    every row and layer row is what whole forward passes give."""
    import pandas as pd

    from latentgen.data.datasets import load_dataset
    from latentgen.data.labels import corrupt_labels
    from latentgen.models.architectures import build_model
    from latentgen.repair import sweep as sweep_module

    ds = load_dataset("digits")
    model = build_model("cnn", "digits", seed=0).eval()
    corrupted = torch.from_numpy(corrupt_labels(ds.train_y.numpy(), 0.6, 10, seed=42))
    data = cv.RepairData(ds.train_x, ds.train_y, corrupted, ds.test_x, ds.test_y)
    kwargs = dict(layer_sets=["fcs.2", "fcs.0+fcs.2"], rhos=[1.0, 0.8], methods=["kfac", "kfac_velpic"],
                  batch_size=500)  # 1,438 training rows: batches of 500, 500 and 438
    calls = []
    features_of = forward.FeatureBatches.of
    monkeypatch.setattr(forward.FeatureBatches, "of",
                        lambda *a, **k: calls.append(1) or features_of(*a, **k))
    cached = sweep_module.repair_sweep(model, data, **kwargs)
    assert len(calls) == 2  # the training and the test inputs' features, once each
    whole = sweep_module.repair_sweep(model, data, cache_features=False, **kwargs)
    assert len(calls) == 2  # whole passes: no features asked for
    for ours, reference in zip(cached, whole):
        pd.testing.assert_frame_equal(pd.DataFrame(ours), pd.DataFrame(reference), check_exact=True)
    assert len(pd.DataFrame(cached[0]).test_acc.unique()) > 1  # the edits change the scores
