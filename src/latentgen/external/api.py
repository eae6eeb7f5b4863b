"""Probe and repair your own network: any ``torch.nn.Module``, your images, your labels.

:func:`probe` fits the probe families (MASC and VeLPIC by default; any of
``latentgen.registry.PROBE_FAMILIES`` that needs no latentgen checkpoint) on the activations of
the layers you name and returns the workflow's tidy rows (``latentgen.probing.checkpoint.ProbeRow``: split
``test`` against the test labels, ``train_corrupted`` against the labels the model was trained
on, ``train_true`` against the true labels if you have them). :func:`transfer` returns a copy of
the model whose head predicts exactly as VeLPIC fit on the head's input (the VeLPIC weight
transfer); the model you pass is not touched.

Layers are named as ``model.named_modules()`` names them: the module's output, flattened per
image (``"layer4"``, ``"fc"``, ``"blocks.3"``); ``"NAME:input"`` is the input of module NAME
(``"fc:input"``: what the head sees); ``"input"`` the images themselves. Activations are computed
on ``device`` (the model is moved there; its weights are never changed) and held in host memory
(``latentgen.probing.checkpoint_activations``: within a memory budget, a layer that cannot fit is an
error naming it), in ``eval()`` mode without gradients.

Data: a tensor of images (N×C×H×W, already transformed as the model expects) with its labels
given separately, or anything iterable in batches of ``(images, labels)`` (a ``DataLoader``, a
``Dataset`` of pairs); it is read once, in order, into memory.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from latentgen.probing.checkpoint_activations import HeldActivations

INPUT = "input"
INPUT_SUFFIX = ":input"


def as_tensors(data, labels=None, what: str = "train") -> tuple[torch.Tensor, np.ndarray | None]:
    """``(images, labels)`` from a tensor (+ ``labels``) or an iterable of ``(images, labels)``."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
        y = None if labels is None else np.asarray(labels)
        return x, y
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)
    xs, ys = [], []
    for item in data:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"the {what} data must yield (images, labels) pairs")
        xs.append(torch.as_tensor(item[0]))
        ys.append(np.asarray(item[1]).reshape(-1))
    if not xs:
        raise ValueError(f"the {what} data is empty")
    y = np.concatenate(ys) if labels is None else np.asarray(labels)
    return torch.cat(xs), y


def check_labels(y, n: int, classes: int, what: str, images: str = "images") -> np.ndarray:
    """``y`` as int64 if it is ``n`` integer labels in 0..classes-1; else a ValueError naming ``what``."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{what}: {len(y) if y.ndim == 1 else y.shape} labels for {n} {images}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got {y.dtype}")
    bad = y[(y < 0) | (y >= classes)]
    if len(bad):
        raise ValueError(f"{what}: label {int(bad[0])} is outside the classes 0..{classes - 1}")
    return y.astype(np.int64)


def tappable_layers(model: nn.Module) -> list[str]:
    """Every name :func:`probe` accepts as a layer (besides ``NAME:input``)."""
    return [INPUT, *(name for name, _ in model.named_modules() if name)]


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        import difflib

        close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"{type(model).__name__} has no module {name!r}{hint} (latentgen.external.api.tappable_layers "
                         "lists them)")
    return modules[name]


class TappedActivations(HeldActivations):
    """The activations of named layers of any model on a train and a test set, held in memory;
    read like an activations file (``latentgen.probing.activations.ActivationFile``)."""

    def __init__(self, model: nn.Module, layers: Sequence[str], train_x, test_x, labels: dict, meta: dict, *,
                 batch_size: int = 256, memory_budget: int | None = None):
        self.model, self.batch_size = model, int(batch_size)
        for name in layers:
            if name != INPUT:
                _module(model, name.removesuffix(INPUT_SUFFIX))
        widths = {name: int(a.shape[1]) for name, a in self.tap(train_x[:2], layers).items()}
        super().__init__({"train": train_x, "test": test_x}, labels, meta, widths, memory_budget)

    @torch.no_grad()
    def tap(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{layer: activations of the rows x}`` (float32, flattened), one forward pass in eval mode."""
        captured: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name):
            def hook(module, args, output=None):
                value = args[0] if output is None else output
                captured[name] = value.detach().flatten(1).to(torch.float32, copy=True)
            return hook

        for name in layers:
            if name == INPUT:
                continue
            module = _module(self.model, name.removesuffix(INPUT_SUFFIX))
            if name.endswith(INPUT_SUFFIX):
                handles.append(module.register_forward_pre_hook(keep(name)))
            else:
                handles.append(module.register_forward_hook(keep(name)))
        param = next(self.model.parameters())
        was_training = self.model.training
        try:
            self.model.eval()
            self.model(x.to(param.device, dtype=param.dtype if x.is_floating_point() else x.dtype))
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        return {name: (x.flatten(1).float() if name == INPUT else captured[name]) for name in layers}

    def blocks(self, x, group: list[str]):
        for start in range(0, len(x), self.batch_size):
            yield start, {n: a.cpu().numpy() for n, a in self.tap(x[start:start + self.batch_size], group).items()}


def _prepare(model, layers, train, test, labels, true_labels, test_labels, num_classes, device, name, dataset,
             head=None, batch_size=256, memory_budget=None) -> TappedActivations:
    from latentgen.devices import resolve_device

    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("name at least one layer to probe")
    train_x, train_y = as_tensors(train, labels, "train")
    test_x, test_y = as_tensors(test, test_labels, "test")
    if train_y is None or test_y is None:
        raise ValueError("labels are needed for the training and the test images (labels=..., test_labels=...)")
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max(), -1 if true_labels is None else np.max(true_labels))) + 1
    corrupted = check_labels(train_y, len(train_x), num_classes, "labels")
    true = corrupted if true_labels is None else check_labels(true_labels, len(train_x), num_classes, "true_labels")
    test_y = check_labels(test_y, len(test_x), num_classes, "test labels")
    missing = np.setdiff1d(np.unique(corrupted), np.unique(test_y))
    if len(missing):
        raise ValueError(f"class {int(missing[0])} has training images but none in the test split")
    model = model.to(resolve_device(device))
    # the measured fraction of noisy labels; unknown (NaN) without the true ones
    noise = float("nan") if true_labels is None else float(np.mean(corrupted != true))
    meta = {"model": name or type(model).__name__, "dataset": dataset, "corruption": noise,
            "run": 0, "epoch": 0, "num_classes": int(num_classes), "layers": layers, "head": head,
            "last_hidden": f"{head}{INPUT_SUFFIX}" if head else None, "checkpoint": "(in memory)",
            "checkpoint_meta": {"arch": name or type(model).__name__, "dataset": dataset, "epoch": 0}}
    labels = {"train_corrupted": corrupted, "train_true": true, "test_true": test_y}
    return TappedActivations(model, layers, train_x, test_x, labels, meta, batch_size=batch_size,
                             memory_budget=memory_budget)


def probe(model: nn.Module, layers: Sequence[str] | str, train, test, labels=None, *, true_labels=None,
          test_labels=None, families: Iterable[str] = ("masc", "velpic"), fit_labels=("corrupted",),
          num_classes: int | None = None, device="auto", name: str | None = None, dataset: str = "custom",
          batch_size: int = 256, memory_budget: int | None = None, variance: float = 0.99, sign: str = "all",
          seed: int = 0) -> list:
    """Tidy probe rows of ``model`` at ``layers`` (module docstring).

    ``labels``: the training labels the model was trained on (noisy or shuffled: the probes are
    fit on them; default the labels ``train`` yields); ``true_labels``: the clean ones, if known
    (scored as ``train_true``; ``fit_labels=("corrupted", "true")`` also fits on them);
    ``test_labels``: default those ``test`` yields. Rows name the model ``name`` (default its class
    name), the dataset ``dataset`` and the corruption as the measured fraction of labels that
    differ from ``true_labels`` (NaN without them; ``train_true`` rows then score ``labels`` again).
    """
    from latentgen import registry
    from latentgen.probing.checkpoint import probe_checkpoint

    families = [families] if isinstance(families, str) else list(families)
    for family in families:
        if registry.get_probe_family(family).needs_checkpoint:
            raise ValueError(f"family {family!r} edits a latentgen checkpoint; use latentgen.external.api.transfer")
    fit_labels = [fit_labels] if isinstance(fit_labels, str) else list(fit_labels)
    if "true" in fit_labels and true_labels is None:
        raise ValueError("fit_labels 'true' needs true_labels")
    acts = _prepare(model, layers, train, test, labels, true_labels, test_labels, num_classes, device, name, dataset,
                    batch_size=batch_size, memory_budget=memory_budget)
    with acts:
        return probe_checkpoint(acts, families=families, fit_labels=fit_labels, variance=variance, sign=sign,
                                batch_size=batch_size, device=device, seed=seed)


def transfer(model: nn.Module, *, head: str, train, labels=None, layer: str | None = None, device="auto",
             batch_size: int = 256, sign: str = "all", keep_bias: bool = False) -> nn.Module:
    """A copy of ``model`` whose ``head`` (an ``nn.Linear``) has VeLPIC's class vectors, fit on the
    head's input over ``train`` with ``labels`` (default: those ``train`` yields): it predicts
    exactly as VeLPIC does on that layer. ``layer``: a module whose output you expect to be the
    head's input, checked on the first images to be exactly that. The model passed is not changed."""
    from latentgen.devices import resolve_device
    from latentgen.probing.masc_velpic import VeLPIC
    from latentgen.probing.velpic_transfer import transfer_velpic

    head_module = _module(model, head)
    if not isinstance(head_module, nn.Linear):
        raise ValueError(f"head {head!r} is a {type(head_module).__name__}: the transfer replaces the weights of an "
                         "nn.Linear whose outputs are the classes")
    train_x, train_y = as_tensors(train, labels, "train")
    if train_y is None:
        raise ValueError("labels are needed for the training images")
    y = check_labels(train_y, len(train_x), head_module.out_features, "labels")
    model = model.to(resolve_device(device))
    tapped = f"{head}{INPUT_SUFFIX}"
    layers = [tapped, *([layer] if layer else [])]
    acts = TappedActivations(model, layers, train_x, train_x[:0], {}, {"checkpoint": "(in memory)"},
                             batch_size=batch_size)
    with acts:
        if layer is not None:
            first = acts.tap(train_x[:8], layers)
            if first[layer].shape != first[tapped].shape or not torch.equal(first[layer], first[tapped]):
                raise ValueError(f"the output of {layer!r} is not the input of head {head!r} (it passes through "
                                 "something in between); probe that layer, or transfer from the head's input")
        velpic = VeLPIC(sign=sign, device=device).fit(acts.array("train", tapped), y,
                                                      classes=np.arange(head_module.out_features))
    return transfer_velpic(model, head, velpic, keep_bias=keep_bias)
