"""The rules every registry entry follows (``latentgen.registry`` checks its tables with them at
import; the tests check broken copies), and the grammar of a layer set, written once here.

Imports nothing of latentgen: the registry imports it.
"""

from __future__ import annotations

from typing import Mapping

# a layer set: "fc1+fc4" (nn.Linear module names joined by +), or one of these words, which the model
# expands (latentgen.repair.layers.expand_layer_set): every nn.Linear but the head, every nn.Linear
LAYER_SET_WORDS = ("hidden", "all")


class RegistryError(ValueError):
    """An inconsistent registry entry (raised at import, naming the entry)."""


def layer_set_names(text: str) -> list[str]:
    """``"fc1+fc4"`` → ``["fc1", "fc4"]``; an empty string is an empty set."""
    text = str(text)
    return [part.strip() for part in text.split("+") if part.strip()] if text.strip() else []


def check_registry(datasets: Mapping, architectures: Mapping, probe_families: Mapping, repair_methods: Mapping) -> None:
    """Raise RegistryError naming the first inconsistent entry. Runs at import on the real tables;
    the tests call it on broken copies. Imports no implementation."""
    for table, what in ((datasets, "dataset"), (architectures, "architecture"),
                        (probe_families, "probe family"), (repair_methods, "repair method")):
        for key, entry in table.items():
            if key != entry.name:
                raise RegistryError(f"{what} entry {key!r} is named {entry.name!r}")
    for name, d in datasets.items():
        where = f"dataset {name!r}"
        if d.num_classes < 2 or d.in_channels < 1 or d.image_size < 1 or d.train_size < 1 or d.test_size < 1:
            raise RegistryError(f"{where}: classes, channels, image size and split sizes must be positive")
        if len(d.mean) != d.in_channels or len(d.std) != d.in_channels:
            raise RegistryError(f"{where}: mean and std need one value per channel ({d.in_channels})")
        if not 0 < d.target_acc <= 1 or d.batch_size < 1:
            raise RegistryError(f"{where}: target_acc must be in (0, 1] and batch_size >= 1")
    for name, a in architectures.items():
        where = f"architecture {name!r}"
        for dataset in a.datasets:
            if dataset not in datasets:
                raise RegistryError(f"{where} claims dataset {dataset!r}, which is not registered "
                                    f"(datasets: {', '.join(datasets)})")
        for dataset in [*a.model_options, *a.train_by_dataset]:
            if dataset not in a.datasets:
                raise RegistryError(f"{where} has settings for dataset {dataset!r}, which it does not support")
        if a.head not in a.linear_layers:
            raise RegistryError(f"{where}: head {a.head!r} is not one of its linear layers {list(a.linear_layers)}")
        if a.last_hidden not in a.probe_layers:
            raise RegistryError(f"{where}: last hidden layer {a.last_hidden!r} is not one of its probe layers")
        if len(set(a.probe_layers)) != len(a.probe_layers):
            raise RegistryError(f"{where}: probe layers repeat")
        sets = list(a.repair_layer_sets or []) + ([a.a_priori_layer_set] if a.a_priori_layer_set else [])
        for text in sets:
            for layer in [] if text in LAYER_SET_WORDS else layer_set_names(text):
                if layer not in a.linear_layers:
                    raise RegistryError(f"{where}: layer set {text!r} names layer {layer!r}, which it does not "
                                        f"have (linear layers: {', '.join(a.linear_layers)})")
        if ":" not in a.builder:
            raise RegistryError(f"{where}: builder {a.builder!r} is not an import path 'module:attribute'")
    for table, what in ((probe_families, "probe family"), (repair_methods, "repair method")):
        for name, entry in table.items():
            if ":" not in entry.impl:
                raise RegistryError(f"{what} {name!r}: impl {entry.impl!r} is not an import path 'module:attribute'")
            fit_many = getattr(entry, "fit_many", "")
            if fit_many and ":" not in fit_many:
                raise RegistryError(f"{what} {name!r}: fit_many {fit_many!r} is not an import path 'module:attribute'")
            if fit_many and entry.needs_checkpoint:
                raise RegistryError(f"{what} {name!r}: fit_many is for layer families, not checkpoint families")
