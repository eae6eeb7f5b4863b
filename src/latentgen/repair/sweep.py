"""The sweep: every repair of one checkpoint in one table.

The references (the unedited model, the VeLPIC transfer) and each method × layer set × ρ, all
scored by ``evaluate_repair``; the K-FAC factors are computed once, before the sweep, and so are
the training and test inputs' features where every layer the sweep edits or watches runs in the
model's ``forward_head`` (``FeatureBatches``: each edit then runs the head alone, with the same
numbers as a whole forward pass).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from latentgen.models.forward import FeatureBatches, head_name, linear_layers
from latentgen.registry import DEFAULT_REPAIRS, DEFAULT_RHOS, REPAIR_METHODS, REPAIR_REFERENCES, fisher_kind
from latentgen.repair.evaluation import RepairData, dead_unit_counts, evaluate_repair
from latentgen.repair.factors import LayerFactors, collect_factors
from latentgen.repair.layers import check_bias, check_rho, default_layer_sets, expand_layer_set, layers_in_sets
from latentgen.repair.methods import edit_model, get_repair


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


def sweep_factors(model: nn.Module, data: RepairData, layers: Iterable[str], *, fisher: str = "exact",
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
                 rhos: Iterable[float] = DEFAULT_RHOS, methods: Iterable[str] = DEFAULT_REPAIRS,
                 references: Iterable[str] = REPAIR_REFERENCES, factors: dict[str, LayerFactors] | None = None,
                 fisher: str = "exact", samples: int = 1, bias: str = "keep", seed: int = 0,
                 factor_rows: np.ndarray | None = None, batch_size: int = 1024,
                 device: torch.device | str | None = None, gram_dtype: torch.dtype = torch.float64,
                 cache_features: bool = True,
                 progress: Callable[[str], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Evaluate every repair of ``model``: the references (unedited, VeLPIC transfer) and each
    method × layer set × ρ. Returns (rows, layer_rows): one row per repaired model and one per
    edited layer. Factors are computed once, from the training rows ``factor_rows`` (default:
    all) with the ``fisher`` labels, unless given. The rows' ``fisher`` is its canonical name.
    ``cache_features=False`` scores every model with whole forward passes (the same rows; the
    benchmark's reference).
    """
    layer_sets = list(default_layer_sets(model) if layer_sets is None else layer_sets)
    if not layer_sets:
        raise ValueError("no layer sets to sweep")
    expanded = {text: expand_layer_set(model, text) for text in layer_sets}
    rhos = [check_rho(r) for r in rhos]
    methods = [get_repair(m).name for m in methods]
    references = list(references)
    for r in references:
        if r not in REPAIR_REFERENCES:
            raise ValueError(f"unknown reference {r!r}; choose from {', '.join(REPAIR_REFERENCES)}")
    check_bias(bias)
    fisher = fisher_kind(fisher)
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
    in_head = sorted({*needed, *hidden, head})
    features = (None, None)
    if cache_features:  # else (and where the features cannot stand in for the inputs): whole passes
        features = (FeatureBatches.of(model, data.train_x, batch_size, in_head),
                    FeatureBatches.of(model, data.test_x, batch_size, in_head))
        if any(f is None for f in features):
            features = (None, None)
    base_metrics, base_activity = evaluate_repair(model, data, batch_size, watch=hidden, features=features)

    def record(repair, layer_set, layers, rho, logs, edited):
        watch = [n for n in layers if n in hidden]
        metrics, activity = (base_metrics, base_activity) if edited is model else \
            evaluate_repair(edited, data, batch_size, watch=watch, features=features)
        for log in logs:
            if log["layer"] in activity:
                log.update(dead_unit_counts(base_activity[log["layer"]], activity[log["layer"]]))
        key = {"repair": repair, "layer_set": layer_set, "layers": "+".join(layers),
               "rho": float("nan") if rho is None else rho}
        curvature = repair in REPAIR_METHODS and REPAIR_METHODS[repair].needs_factors
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
                                      labels=data.train_corrupted, batch_size=batch_size, count_dead_units=False,
                                      train_features=features[0])
            record(ref, head, [head], None, logs, edited)
    for method in methods:
        for text, layers in expanded.items():
            if method == "kfac_velpic" and head in layers:
                continue  # the transfer replaces the head: sets with the head are the same as without
            for rho in rhos:
                edited, logs = edit_model(model, layers, rho, factors, method=method, bias=bias, seed=seed,
                                          inputs=data.train_x, labels=data.train_corrupted,
                                          batch_size=batch_size, count_dead_units=False, fisher=fisher,
                                          samples=samples, gram_dtype=gram_dtype, factor_rows=factor_rows,
                                          train_features=features[0])
                record(method, text, layers, rho, logs, edited)
    return rows, layer_rows
