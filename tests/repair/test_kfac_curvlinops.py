"""Our K-FAC factors (``collect_factors``) against an independent implementation: curvlinops'
``KFACLinearOperator`` (``curvlinops-for-pytorch``, the ``test`` extra; written against 3.0.1).

Conventions matched (curvlinops 3.0.1, ``CrossEntropyLoss``, ``kfac_approx="expand"``, 2-d inputs):

- **A.** curvlinops' input covariance is Σₙ aₙaₙᵀ / N for either loss reduction, and so is ours
  (``LayerFactors.A``): no scale factor. Weight-only A (our default, biases kept out of A) is
  curvlinops' ``separate_weight_and_bias=True``; our homogeneous variant
  ``LayerFactors.A_homogeneous()`` = E[ā āᵀ] with ā = [a; 1] is curvlinops'
  ``separate_weight_and_bias=False`` (ones appended last, as ours).
- **G.** Ours is Σₙ gₙgₙᵀ / N with gₙ the gradient of the per-example loss w.r.t. the layer output.
  curvlinops with ``reduction="sum"`` accumulates Σₙ gₙgₙᵀ (no 1/N): G_ours = G_curvlinops / N.
  With ``reduction="mean"`` it backpropagates the batch-mean loss (gₙ/B) and multiplies by
  B²/N per batch, which is Σₙ gₙgₙᵀ / N again: scale factor 1, also for unequal batches
  (40 + 24 here, against our own batches of 24).
- **Fisher kinds.** Our exact true Fisher (``"exact"``, formerly ``"true"``) backpropagates the
  stick-breaking Cholesky factor of diag(p) − ppᵀ; curvlinops' ``fisher_type="type-2"``
  backpropagates the symmetric square root diag(√p) − √p pᵀ of the cross-entropy Hessian
  w.r.t. the logits, which is the same matrix: two different factorisations of one Fisher.
  Our ``"empirical"`` backpropagates e_y − p and curvlinops' ``"empirical"`` p − e_y (the sign
  cancels in g gᵀ), with the same labels.
- **Bias.** Neither keeps a separate bias factor we could compare beyond G: curvlinops' bias
  block (``separate_weight_and_bias=True``) is the gradient covariance alone, the same G.

What curvlinops cannot express, and is therefore not compared entry by entry:

- **The sampled Fisher** (ours: ``torch.multinomial`` on the CPU with our seeded generator, in
  chunks of 16 draws per example; curvlinops' ``"mc"``: ``probs.multinomial`` per batch with its
  own generator). The draws differ, so the factors agree only in expectation. The one check here
  is statistical, and labelled so: with many draws our sampled G approaches curvlinops' type-2 G.
- Everything our LayerFactors carries beyond A, G: ``a_mean`` appears only as the last column of
  curvlinops' homogeneous A (compared through ``A_homogeneous()``), ``num_rows`` is N.
- Sequence models (our "average over positions") and curvlinops' KFAC-reduce / ``Conv2d`` paths:
  this MLP has 2-d inputs only, where expand and reduce coincide.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

curvlinops = pytest.importorskip(
    "curvlinops", reason="curvlinops-for-pytorch is not installed (pip install -e '.[test]')")
from curvlinops import KFACLinearOperator  # noqa: E402

from latentgen.repair import collect_factors  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RTOL = 1e-8
N, CLASSES = 64, 5
LAYERS = ["fc1", "fc2", "out"]
CURVLINOPS_BATCHES = (40, 24)  # unequal on purpose: the mean reduction rescales per batch
OUR_BATCH = 24


def _model(seed=0) -> nn.Sequential:
    """12 → 16 → 10 → 5 with ReLUs, float64."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(12, 16), relu1=nn.ReLU(),
        fc2=nn.Linear(16, 10), relu2=nn.ReLU(),
        out=nn.Linear(10, CLASSES),
    )).double()


def _data(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 12, dtype=torch.float64, generator=gen)
    y = torch.randint(0, CLASSES, (N,), generator=gen)
    return x, y


def _ours(model, x, fisher, labels=None, **kw):
    """``collect_factors`` with our exact Fisher under its current name ("exact", formerly "true")."""
    if fisher != "exact":
        return collect_factors(model, x, LAYERS, fisher=fisher, labels=labels, batch_size=OUR_BATCH, **kw)
    try:
        return collect_factors(model, x, LAYERS, fisher="exact", batch_size=OUR_BATCH, **kw)
    except ValueError as exc:  # before the rename: "unknown Fisher kind 'exact'"
        if "exact" not in str(exc):
            raise
        return collect_factors(model, x, LAYERS, fisher="true", batch_size=OUR_BATCH, **kw)


def _theirs(model, x, y, fisher_type, *, reduction="sum", homogeneous=False, with_bias=True):
    """curvlinops' raw (input, gradient) covariances per layer name."""
    params = [p for name, p in model.named_parameters() if with_bias or name.endswith("weight")]
    batches, start = [], 0
    for size in CURVLINOPS_BATCHES:
        batches.append((x[start:start + size], y[start:start + size]))
        start += size
    assert start == N
    op = KFACLinearOperator(model, nn.CrossEntropyLoss(reduction=reduction), params, batches,
                            fisher_type=fisher_type, separate_weight_and_bias=not homogeneous,
                            check_deterministic=False)
    op.compute_kronecker_factors()
    state = op.state_dict()
    assert state["num_data"] == N
    return state["input_covariances"], state["gradient_covariances"]


def _rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(ours - theirs) / torch.linalg.matrix_norm(theirs))


G_SCALE = {"sum": 1.0 / N, "mean": 1.0}  # G_ours = scale · G_curvlinops


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("ours_kind, their_kind", [("exact", "type-2"), ("empirical", "empirical")])
def test_weight_factors_match_curvlinops(ours_kind, their_kind, reduction):
    """Weight-only A (biases out of A, our default) and G, every layer, to 1e-8 relative."""
    model = _model()
    x, y = _data()
    ours = _ours(model, x, ours_kind, labels=y)
    A_theirs, G_theirs = _theirs(model, x, y, their_kind, reduction=reduction)
    for name in LAYERS:
        f = ours[name]
        assert f.num_rows == N
        assert f.A.shape == A_theirs[name].shape and f.G.shape == G_theirs[name].shape
        assert _rel(f.A, A_theirs[name]) < RTOL, name
        assert _rel(f.G, G_SCALE[reduction] * G_theirs[name]) < RTOL, name


@pytest.mark.parametrize("ours_kind, their_kind", [("exact", "type-2"), ("empirical", "empirical")])
def test_weight_only_params_give_the_same_factors(ours_kind, their_kind):
    """curvlinops given the weights alone (no biases at all) computes the same A and G."""
    model = _model()
    x, y = _data()
    ours = _ours(model, x, ours_kind, labels=y)
    A_theirs, G_theirs = _theirs(model, x, y, their_kind, with_bias=False)
    for name in LAYERS:
        assert _rel(ours[name].A, A_theirs[name]) < RTOL, name
        assert _rel(ours[name].G, G_theirs[name] / N) < RTOL, name


@pytest.mark.parametrize("ours_kind, their_kind", [("exact", "type-2"), ("empirical", "empirical")])
def test_homogeneous_factors_match_curvlinops(ours_kind, their_kind):
    """Our homogeneous-bias A (ā = [a; 1]) is curvlinops' joint [W b] input covariance; its
    weight block is the weight-only A and its last column E[a] is our ``a_mean``."""
    model = _model()
    x, y = _data()
    ours = _ours(model, x, ours_kind, labels=y)
    A_theirs, G_theirs = _theirs(model, x, y, their_kind, homogeneous=True)
    for name in LAYERS:
        f = ours[name]
        q = f.A.shape[0]
        assert A_theirs[name].shape == (q + 1, q + 1)
        assert _rel(f.A_homogeneous(), A_theirs[name]) < RTOL, name
        assert _rel(f.A, A_theirs[name][:q, :q]) < RTOL, name
        assert float((f.a_mean - A_theirs[name][:q, q]).norm() / A_theirs[name][:q, q].norm()) < RTOL, name
        assert _rel(f.G, G_theirs[name] / N) < RTOL, name


def test_the_comparison_can_fail():
    """Mutations the comparison must catch, each by far more than the tolerance: a perturbed
    weight (fc2 changes its own G, the next layer's A and every G below it), the wrong
    normalisation (sum vs mean), other labels for the empirical Fisher, and exact vs empirical."""
    model = _model()
    x, y = _data()
    ours = _ours(model, x, "exact")
    perturbed = _model()
    with torch.no_grad():
        perturbed.fc2.weight.add_(1e-3 * torch.randn(perturbed.fc2.weight.shape, dtype=torch.float64,
                                                      generator=torch.Generator().manual_seed(7)))
    A_p, G_p = _theirs(perturbed, x, y, "type-2")
    assert _rel(ours["out"].A, A_p["out"]) > 1e4 * RTOL  # fc2's output feeds out
    assert _rel(ours["fc2"].G, G_p["fc2"] / N) > 1e4 * RTOL
    assert _rel(ours["fc1"].G, G_p["fc1"] / N) > 1e4 * RTOL
    assert _rel(ours["fc1"].A, A_p["fc1"]) < RTOL  # upstream of the perturbation: unchanged

    A_t, G_t = _theirs(model, x, y, "type-2")
    assert _rel(ours["fc2"].G, G_t["fc2"]) > 0.5  # forgot the 1/N of the sum reduction
    _, G_e = _theirs(model, x, y, "empirical")
    assert _rel(ours["fc2"].G, G_e["fc2"] / N) > 1e4 * RTOL  # exact ≠ empirical Fisher
    shifted = (y + 1) % CLASSES
    emp = _ours(model, x, "empirical", labels=shifted)
    assert _rel(emp["fc2"].G, G_e["fc2"] / N) > 1e4 * RTOL  # other labels


def test_sampled_fisher_approaches_type2_statistically():
    """Not an exact comparison: our sampled Fisher draws its labels with its own sampler, which
    curvlinops' "mc" cannot reproduce draw by draw. With S draws per example both are unbiased
    for the exact Fisher, so our sampled G must approach curvlinops' type-2 G, with an error of
    order 1/√(N·S) (0.7–1.3% here; tolerance 5%). A is label-free and matches exactly."""
    model = _model()
    x, y = _data()
    samples = 512
    ours = collect_factors(model, x, LAYERS, fisher="sampled", samples=samples, seed=3, batch_size=N)
    A_t, G_t = _theirs(model, x, y, "type-2")
    for name in LAYERS:
        assert _rel(ours[name].A, A_t[name]) < RTOL, name
        assert _rel(ours[name].G, G_t[name] / N) < 0.05, name
