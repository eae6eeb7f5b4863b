"""The registry (latentgen.registry): one torch-free table of names and facts, consistent with
the implementations it names, and refusing inconsistent entries by name."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from latentgen import registry
from latentgen.registry_check import RegistryError, check_registry


def _with(table, name, **changes):
    return {**table, name: dataclasses.replace(table[name], **changes)}


def test_import_is_torch_free_and_fast():
    code = ("import sys, time; t = time.perf_counter(); import latentgen.registry, latentgen.workflow.config, latentgen.paper.figures; "
            "print(time.perf_counter() - t, sorted(m for m in ('torch', 'numpy', 'pandas', 'matplotlib') "
            "if m in sys.modules))")
    seconds, heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.0  # milliseconds in practice; generous for a loaded machine


REAL_TABLES = dict(datasets=registry.DATASETS, architectures=registry.ARCHITECTURES,
                   probe_families=registry.PROBE_FAMILIES, repair_methods=registry.REPAIR_METHODS)


@pytest.mark.parametrize("broken,words", [
    (dict(architectures=_with(registry.ARCHITECTURES, "mlp", datasets=("digits", "svhn"))),
     "architecture 'mlp' claims dataset 'svhn', which is not registered"),
    (dict(architectures=_with(registry.ARCHITECTURES, "cnn", repair_layer_sets=("fcs.0", "fcs.0+fcs.9"))),
     "architecture 'cnn': layer set 'fcs.0+fcs.9' names layer 'fcs.9', which it does not have"),
    (dict(architectures=_with(registry.ARCHITECTURES, "mlp", a_priori_layer_set="fc1+fc7")),
     "layer set 'fc1+fc7' names layer 'fc7'"),
    (dict(architectures=_with(registry.ARCHITECTURES, "alexnet", head="fc9")),
     "architecture 'alexnet': head 'fc9' is not one of its linear layers"),
    (dict(architectures=_with(registry.ARCHITECTURES, "resnet18", last_hidden="fc")),
     "architecture 'resnet18': last hidden layer 'fc' is not one of its probe layers"),
    (dict(architectures=_with(registry.ARCHITECTURES, "mlp", model_options={"tiny_imagenet": {}})),
     "architecture 'mlp' has settings for dataset 'tiny_imagenet', which it does not support"),
    (dict(architectures=_with(registry.ARCHITECTURES, "mlp", builder="latentgen.models.architectures.build_mlp")),
     "architecture 'mlp': builder"),
    (dict(datasets=_with(registry.DATASETS, "cifar10", mean=(0.5,))), "dataset 'cifar10': mean and std"),
    (dict(datasets=_with(registry.DATASETS, "mnist", target_acc=99.9)), "dataset 'mnist': target_acc"),
    (dict(datasets={**registry.DATASETS, "mnist2": registry.DATASETS["mnist"]}),
     "dataset entry 'mnist2' is named 'mnist'"),
    (dict(probe_families=_with(registry.PROBE_FAMILIES, "masc", impl="masc_rows")), "probe family 'masc': impl"),
    (dict(repair_methods=_with(registry.REPAIR_METHODS, "kfac", impl="kfac")), "repair method 'kfac': impl"),
    (dict(probe_families=_with(registry.PROBE_FAMILIES, "logistic", fit_many="fit_logistic_together")),
     "probe family 'logistic': fit_many"),
    (dict(probe_families=_with(registry.PROBE_FAMILIES, "transfer", fit_many="m:f")),
     "probe family 'transfer': fit_many is for layer families"),
])
def test_an_inconsistent_entry_is_refused_naming_it(broken, words):
    with pytest.raises(RegistryError) as err:
        check_registry(**{**REAL_TABLES, **broken})
    assert words in str(err.value)


def test_an_inconsistent_entry_fails_at_import(tmp_path):
    """The check runs when the module is imported: a broken copy of registry.py raises naming the entry."""
    source = open(registry.__file__).read()
    broken = source.replace('"resnet18", "ResNet-18", "latentgen.models.architectures:build_resnet18", ("digits", "cifar10")',
                            '"resnet18", "ResNet-18", "latentgen.models.architectures:build_resnet18", ("digits", "cifar10", "svhn")')
    assert broken != source
    (tmp_path / "broken_registry.py").write_text(broken)
    result = subprocess.run([sys.executable, "-c", "import broken_registry"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "RegistryError: architecture 'resnet18' claims dataset 'svhn'" in result.stderr


PAIRS = [(arch, dataset) for arch, spec in registry.ARCHITECTURES.items() for dataset in spec.datasets]


@pytest.mark.parametrize("arch,dataset", PAIRS, ids=[f"{a}-{d}" for a, d in PAIRS])
def test_the_built_models_have_the_layers_the_registry_states(arch, dataset):
    from torch import nn

    from latentgen.models.architectures import build_model

    spec = registry.ARCHITECTURES[arch]
    model = build_model(arch, dataset, seed=0)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    assert tuple(linear) == spec.linear_layers
    assert tuple(model.probe_layers) == spec.probe_layers
    assert (model.head, model.last_hidden) == (spec.head, spec.last_hidden)
    assert set(model.probe_points) == set(spec.probe_layers) - {"input"}  # every probe layer has a hook point
    assert isinstance(model.get_submodule(spec.head), nn.Linear)
    head_in = model.get_submodule(spec.head).in_features
    from latentgen.models.forward import layer_sizes

    assert layer_sizes(model, [spec.last_hidden])[spec.last_hidden] == head_in  # the transfer's input feeds the head
    data = registry.DATASETS[dataset]
    assert model.get_submodule(spec.head).out_features == data.num_classes


def test_every_implementation_path_loads():
    from latentgen.data.raw_files import DatasetFiles

    for spec in registry.ARCHITECTURES.values():
        assert callable(registry.load(spec.builder))
    for data in registry.DATASETS.values():
        assert isinstance(registry.load(data.files), DatasetFiles)
    for family in registry.PROBE_FAMILIES.values():
        assert callable(registry.load(family.impl)), family.name
        assert not family.fit_many or callable(registry.load(family.fit_many)), family.name
    for method in registry.REPAIR_METHODS.values():
        assert callable(registry.load(method.impl)), method.name
    with pytest.raises(RegistryError, match="must look like"):
        registry.load("latentgen.models.architectures")


def test_training_defaults_are_the_authors(monkeypatch):
    """SPEC §4 and D2, read through the registry."""
    assert registry.train_defaults("mlp", "mnist") == dict(optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=32,
                                                           target_acc=1.0)
    assert registry.train_defaults("cnn", "fashion_mnist") == dict(optimizer="adam", lr=2e-4, batch_size=128,
                                                                   target_acc=0.991)
    assert registry.train_defaults("cnn", "cifar10")["batch_size"] == 32
    assert registry.train_defaults("cnn", "cifar10", "paper")["batch_size"] == 128  # D2: swapped
    assert registry.train_defaults("cnn", "mnist", "paper")["batch_size"] == 32
    assert registry.train_defaults("mlp", "cifar10", "paper")["batch_size"] == 32  # D2 is the CNN's only
    assert registry.train_defaults("alexnet", "tiny_imagenet") == dict(optimizer="adam", lr=1e-4, batch_size=500,
                                                                       target_acc=0.999, grid_step=10)
    assert registry.train_defaults("resnet18", "cifar10")["target_acc"] == 1.0
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        registry.train_defaults("vgg", "mnist")
    with pytest.raises(ValueError, match="did you mean 'cifar10'"):
        registry.train_defaults("mlp", "cifar-10")


def test_layer_sets_expand_against_the_registry():
    assert registry.expand_layer_set("mlp", "hidden") == ["fc1", "fc2", "fc3", "fc4"]
    assert registry.expand_layer_set("cnn", "all") == ["fcs.0", "fcs.1", "fcs.2", "fc3"]
    assert registry.expand_layer_set("mlp", "fc1+fc4") == ["fc1", "fc4"]
    assert registry.repair_layer_sets("resnet18") == ["fc", "hidden", "all"]
    with pytest.raises(ValueError, match="mlp has no nn.Linear layer 'fc9'"):
        registry.expand_layer_set("mlp", "fc1+fc9")
    with pytest.raises(ValueError, match="empty layer name"):
        registry.expand_layer_set("mlp", "fc1+")


def test_fisher_kinds_and_the_old_spelling():
    assert registry.fisher_kind("exact") == registry.fisher_kind("true") == registry.fisher_kind(True) == "exact"
    with pytest.raises(ValueError, match="unknown Fisher kind"):
        registry.fisher_kind("exakt")


def test_grid_rule():
    assert registry.checkpoint_grid(30) == [0, 1, *range(2, 21, 2), 25, 30]
    assert registry.checkpoint_grid(12, dense_until=4, dense_step=2, step=3) == [0, 1, 2, 4, 7, 10]
