"""Which layers a repair edits: layer names, layer sets (``"fc1+fc4"``, ``"hidden"``, ``"all"``), rho.

Layer sets are checked against the model itself (any ``nn.Module``, not only the model zoo's),
so an error names what the module really is ("a ReLU, not an nn.Linear"). The sets swept by
default come from the registry (``registry.repair_layer_sets``).
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from latentgen import registry
from latentgen.registry_check import LAYER_SET_WORDS, layer_set_names
from latentgen.argtypes import check_fraction
from latentgen.models.forward import head_name, linear_layers

BIAS_MODES = ("keep", "homogeneous")


def resolve_layers(model: nn.Module, layers: Iterable[str] | str) -> list[str]:
    """Check that ``layers`` is a non-empty list of distinct ``nn.Linear`` module names of ``model``."""
    if isinstance(layers, str):
        layers = layer_set_names(layers)
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


def expand_layer_set(model: nn.Module, text: str) -> list[str]:
    """``"fc1+fc4"`` → its layers; ``"hidden"``: every nn.Linear but the head; ``"all"``: every nn.Linear."""
    text = str(text).strip()
    hidden, every = LAYER_SET_WORDS  # the grammar's words, in their registry order
    if text == every:
        return resolve_layers(model, list(linear_layers(model)))
    if text == hidden:
        head = head_name(model)
        return resolve_layers(model, [n for n in linear_layers(model) if n != head])
    return resolve_layers(model, layer_set_names(text))


def default_layer_sets(model: nn.Module) -> list[str]:
    """The registry's sets for a model of the zoo (CURVATURE.md §5.4's for the MLP and CNN); for
    any other model each nn.Linear alone plus hidden and all."""
    arch = getattr(model, "arch", None)
    if isinstance(arch, str) and registry.find_architecture(arch) is not None:
        return registry.repair_layer_sets(arch)
    linears = list(linear_layers(model))
    return linears + (["hidden", "all"] if len(linears) > 1 else [])  # a lone head: no hidden set


def layers_in_sets(model: nn.Module, layer_sets: Iterable[str]) -> list[str]:
    """Every nn.Linear that some layer set names, in the model's order."""
    named = {n for text in layer_sets for n in expand_layer_set(model, text)}
    return [n for n in linear_layers(model) if n in named]


def check_rho(rho) -> float:
    """``rho`` as a float in (0, 1]; a ValueError naming it otherwise."""
    return check_fraction(rho, "rho")


def check_bias(bias: str) -> str:
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}; choose one of {', '.join(BIAS_MODES)}")
    return bias
