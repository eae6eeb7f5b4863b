"""The repair methods the registry names (``registry.REPAIR_METHODS``) and ``edit_model``.

Each implementation here is ``apply(model, layers, rho, inputs: RepairInputs) -> per-layer logs``
and edits ``model`` in place; the registry refers to it by import path
(``"latentgen.repair.methods:kfac"``). ``get_repair(name)`` is the registry entry with its
implementation loaded; ``edit_model`` applies any method to a copy of a model.

``kfac``, the controls ``svd`` (same fraction of components removed), ``svd_norm`` (same
‖ΔW‖_F), ``random`` (same number of K-FAC pairs, chosen at random), ``a_only`` / ``g_only``
(one factor truncated at mass ρ), ``kfac_reestimate`` (layer by layer, later factors
re-estimated after each edit), the VeLPIC transfer ``velpic`` / ``velpic_bias`` and the
combination ``kfac_velpic``.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from latentgen import registry
from latentgen.models.forward import FeatureBatches, head_inputs, head_name, linear_layers
from latentgen.repair.edits import edit_log, factor_edit_layer, kfac_edit_layer, random_edit_layer, svd_edit_layer
from latentgen.repair.evaluation import dead_unit_counts, unit_max_preactivation
from latentgen.repair.factors import LayerFactors, collect_factors
from latentgen.repair.layers import check_bias, check_rho, expand_layer_set, resolve_layers


@dataclass
class RepairInputs:
    """What a repair may use: factors and the training inputs with their (corrupted) labels."""

    factors: dict[str, LayerFactors] | None = None
    bias: str = "keep"                     # "keep" or "homogeneous" (curvature edits)
    seed: int = 0                          # random control
    train_x: torch.Tensor | None = None    # training inputs (VeLPIC transfer, dead units)
    train_labels: torch.Tensor | None = None  # the labels the repairer has: the corrupted ones
    batch_size: int = 1024
    fisher: str = "exact"                  # how factors are re-estimated (kfac_reestimate) ...
    samples: int = 1
    gram_dtype: torch.dtype = torch.float64
    factor_rows: np.ndarray | None = None  # ... and from which training rows (default all)
    train_features: FeatureBatches | None = None  # train_x's features (an edit leaves them as they are)

    def factor_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs and labels to (re-)estimate factors from."""
        if self.factor_rows is None:
            return self.train_x, self.train_labels
        picked = torch.as_tensor(np.asarray(self.factor_rows), dtype=torch.long)
        return self.train_x[picked], None if self.train_labels is None else torch.as_tensor(self.train_labels)[picked]


@dataclass(frozen=True)
class Repair:
    """A registry entry with its implementation loaded: ``apply(model, layers, rho, inputs)``."""

    method: registry.RepairMethod
    apply: Callable[[nn.Module, list[str], float | None, RepairInputs], list[dict]]

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def summary(self) -> str:
        return self.method.summary

    @property
    def uses_rho(self) -> bool:
        return self.method.uses_rho

    @property
    def needs_factors(self) -> bool:
        return self.method.needs_factors


def get_repair(name: str) -> Repair:
    """The repair ``name`` of the registry, its implementation imported (a ValueError naming the
    known ones for an unknown name)."""
    method = registry.get_repair_method(name)
    return Repair(method, registry.load(method.impl))


# --------------------------------------------------------------------------------------------
# per-layer edits


def per_layer(edit: Callable) -> Callable:
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


def _kfac_layer(name, layer, factors, rho, homogeneous, ctx):
    return kfac_edit_layer(name, layer, factors, rho, homogeneous)


def _svd_count_layer(name, layer, factors, rho, homogeneous, ctx):
    return svd_edit_layer(name, layer, factors, rho, homogeneous, match="count")


def _svd_norm_layer(name, layer, factors, rho, homogeneous, ctx):
    return svd_edit_layer(name, layer, factors, rho, homogeneous, match="norm")


def _random_layer(name, layer, factors, rho, homogeneous, ctx):
    return random_edit_layer(name, layer, factors, rho, homogeneous, seed=ctx.seed)


def _a_only_layer(name, layer, factors, rho, homogeneous, ctx):
    return factor_edit_layer(name, layer, factors, rho, homogeneous, side="A")


def _g_only_layer(name, layer, factors, rho, homogeneous, ctx):
    return factor_edit_layer(name, layer, factors, rho, homogeneous, side="G")


kfac = per_layer(_kfac_layer)
svd = per_layer(_svd_count_layer)
svd_norm = per_layer(_svd_norm_layer)
random = per_layer(_random_layer)
a_only = per_layer(_a_only_layer)
g_only = per_layer(_g_only_layer)


def kfac_reestimate(model, layers, rho, ctx):
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
        (log,) = kfac(model, [name], rho, replace(ctx, factors=factors))
        logs.append({**log, "method": "kfac_reestimate", "reestimated": k > 0})
    return logs


# --------------------------------------------------------------------------------------------
# the VeLPIC transfer (SPEC §8.5) as a repair


# VeLPIC fits by their exact inputs: a sweep transfers onto the same head inputs again and again
# (every rho of a layer set that leaves the hidden layers as they are; 8 of a demo sweep's 23)
_VELPIC_FITS: dict = {}
_VELPIC_FITS_KEPT = 4


def _digest(feats, labels, n_classes: int) -> tuple:
    feats = np.ascontiguousarray(feats)
    return (feats.shape, str(feats.dtype), n_classes, hashlib.sha256(feats.tobytes()).hexdigest(),
            hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest())


def _velpic_transfer(model: nn.Module, keep_bias: bool, inputs: RepairInputs) -> dict:
    """Replace the head by the VeLPIC class vectors of its input (the last hidden layer)."""
    # imported here: scikit-learn is slow to import and only the transfer needs it
    from latentgen.probing.masc_velpic import VeLPIC
    from latentgen.probing.velpic_transfer import transfer_velpic

    if inputs.train_x is None or inputs.train_labels is None:
        raise ValueError("the VeLPIC transfer needs the training inputs and their (corrupted) labels")
    head = head_name(model)
    layer = dict(model.named_modules())[head]
    feats = head_inputs(model, inputs.train_x, inputs.batch_size, inputs.train_features)
    labels = torch.as_tensor(inputs.train_labels).numpy()
    key = _digest(feats, labels, layer.out_features)
    velpic = _VELPIC_FITS.pop(key, None)  # re-inserted below: the most recently used last
    if velpic is None:
        velpic = VeLPIC().fit(feats, labels, classes=np.arange(layer.out_features))
    _VELPIC_FITS[key] = velpic
    while len(_VELPIC_FITS) > _VELPIC_FITS_KEPT:
        del _VELPIC_FITS[next(iter(_VELPIC_FITS))]  # the least recently used
    W = layer.weight.detach().to("cpu", torch.float64, copy=True)
    transfer_velpic(model, head, velpic, keep_bias=keep_bias, in_place=True)  # model: the edit's copy
    W_new = layer.weight.detach().to("cpu", torch.float64, copy=True)
    return edit_log(head, "velpic_bias" if keep_bias else "velpic", W, W_new, keep_bias=keep_bias)


def _velpic_repair(keep_bias):
    def apply(model, layers, rho, inputs):
        head = head_name(model)
        if list(layers) != [head]:
            raise ValueError(f"the VeLPIC transfer edits the head {head!r} only, got {'+'.join(layers)}")
        return [_velpic_transfer(model, keep_bias, inputs)]
    return apply


velpic = _velpic_repair(False)
velpic_bias = _velpic_repair(True)


def kfac_velpic(model, layers, rho, inputs):
    """K-FAC edit of the hidden layers in ``layers``, then the VeLPIC transfer on the head."""
    head = head_name(model)
    hidden = [n for n in layers if n != head]
    logs = kfac(model, hidden, rho, inputs) if hidden else []
    return logs + [_velpic_transfer(model, False, inputs)]


# --------------------------------------------------------------------------------------------
# one edit of a copy


def edit_model(model: nn.Module, layers: Iterable[str] | str, rho: float | None,
               factors: dict[str, LayerFactors] | None, *, method: str = "kfac", bias: str = "keep", seed: int = 0,
               inputs: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               batch_size: int = 1024, count_dead_units: bool = True, fisher: str = "exact", samples: int = 1,
               gram_dtype: torch.dtype = torch.float64, factor_rows: np.ndarray | None = None,
               train_features: FeatureBatches | None = None) -> tuple[nn.Module, list[dict]]:
    """Return an edited copy of ``model`` and one log dict per edited layer.

    ``layers``: module names, or one layer-set string (``"fc1+fc4"``, ``"hidden"``, ``"all"``).
    ``method`` names a ``registry.REPAIR_METHODS`` entry. With ``inputs`` (training inputs), each
    edited hidden layer's log also counts dead units before/after and units revived or killed by
    the edit (``count_dead_units=False`` skips the two extra passes). ``labels`` (the corrupted
    training labels) are needed by the VeLPIC transfer and the empirical Fisher only; ``fisher``,
    ``samples``, ``gram_dtype`` and ``factor_rows`` (rows of ``inputs``, default all) say how
    ``kfac_reestimate`` re-estimates factors. ``train_features``: ``inputs``' ``FeatureBatches``,
    valid for the edited copy where every edited layer runs in its ``forward_head``.
    """
    repair = get_repair(method)
    names = expand_layer_set(model, layers) if isinstance(layers, str) else resolve_layers(model, layers)
    if repair.uses_rho:
        rho = check_rho(rho)
    check_bias(bias)
    edited = copy.deepcopy(model)
    ctx = RepairInputs(factors=factors, bias=bias, seed=seed, train_x=inputs, train_labels=labels,
                       batch_size=batch_size, fisher=fisher, samples=samples, gram_dtype=gram_dtype,
                       factor_rows=factor_rows, train_features=train_features)
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
