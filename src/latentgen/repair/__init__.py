"""Repair a memorized model without retraining: the K-FAC curvature edit (Merullo et al. 2025),
its controls and the VeLPIC transfer (``../shared/CURVATURE.md`` §1, §5).

For each edited ``nn.Linear`` with weight W (out×in): K-FAC factors A (layer inputs) and G
(output gradients) from the **training inputs only** (``factors``), their eigenbases, and the
edit keeping the highest-curvature Kronecker pairs up to a mass ρ (``edits``). The methods the
registry names (``registry.REPAIR_METHODS``) are implemented in ``methods``; ``edit_model``
applies one to a copy of a model, ``evaluation`` scores it, ``sweep`` runs every method × layer
set × ρ of one checkpoint, ``run.repair_checkpoint`` does that from files to files (the
``latentgen repair`` command) and ``bands`` is the paper's §4 diagnostic.

Modules: ``layers`` (layer sets, ρ), ``factors``, ``edits``, ``methods``, ``evaluation``,
``sweep``, ``bands``, ``run``. The names below are the public API; the batched forward passes
they use are ``latentgen.models.forward``'s.
"""

from latentgen.repair.bands import BANDS, band_activation_ratios, band_weights
from latentgen.repair.edits import (edit_log, factor_edit_layer, factor_prefix, kfac_edit_layer, kfac_keep_mask,
                                    kfac_select, mask_from, random_edit_layer, rebuild, svd_edit_layer)
from latentgen.repair.evaluation import (METRICS, TEST_SELECT_FRACTION, TEST_SPLIT_SEED, RepairData,
                                         dead_unit_counts, evaluate_repair, split_test_set, unit_max_preactivation)
from latentgen.repair.factors import Eigenbasis, Gram, LayerFactors, collect_factors, fisher_factor, sorted_eigh
from latentgen.repair.layers import (BIAS_MODES, check_bias, check_rho, default_layer_sets, expand_layer_set,
                                     layers_in_sets, resolve_layers)
from latentgen.repair.methods import Repair, RepairInputs, edit_model, get_repair, per_layer
from latentgen.repair.run import load_repair_inputs, repair_checkpoint
from latentgen.repair.sweep import repair_sweep, sweep_factors

__all__ = [
    "BANDS", "BIAS_MODES", "METRICS", "TEST_SELECT_FRACTION", "TEST_SPLIT_SEED", "Eigenbasis", "Gram",
    "LayerFactors", "Repair", "RepairData", "RepairInputs",
    "band_activation_ratios", "band_weights", "check_bias", "check_rho", "collect_factors", "dead_unit_counts",
    "default_layer_sets", "edit_log", "edit_model", "evaluate_repair", "expand_layer_set", "factor_edit_layer",
    "factor_prefix", "fisher_factor", "get_repair", "kfac_edit_layer", "kfac_keep_mask", "kfac_select",
    "layers_in_sets", "load_repair_inputs", "mask_from", "per_layer", "random_edit_layer",
    "rebuild", "repair_checkpoint", "repair_sweep", "resolve_layers", "sorted_eigh", "split_test_set",
    "svd_edit_layer", "sweep_factors", "unit_max_preactivation",
]
