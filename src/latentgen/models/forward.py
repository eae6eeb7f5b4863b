"""Forward passes: hooks on named modules, batched passes over a data set, predictions.

Training's test accuracy, the activation dumps, the probe command's transfer accuracy and the
repair all run their batched passes through here, so the batching, the eval-mode handling and
the move of each batch to the model's device and dtype are written once.

- ``predict(model, x, batch_size=1024, device=None)``: argmax of the logits, a CPU LongTensor;
  ``predict_and_max_outputs`` also records each watched layer's largest output per unit.
- ``accuracy(model, x, y, ...)``: the fraction of rows whose argmax equals ``y``.
- ``extract_activations(model, x, layers)``: one forward pass with hooks on the probe layers;
  ``iter_activations`` does it batch by batch, ``layer_sizes`` reads the widths.
- ``layer_inputs(model, x, name)`` / ``head_inputs(model, x)``: a layer's input for every row.
- ``FeatureBatches.of(model, x, batch_size, layers)``: ``model.forward_features`` of every batch of
  ``x``, computed once, where none of ``layers`` runs in it; ``predict*`` and ``layer_inputs``
  given them run only ``forward_head`` (a repair sweep scores dozens of models that differ in
  their linear layers only).

The batched functions put the model in ``eval()`` mode and restore its mode afterwards, except
``extract_activations`` / ``iter_activations``: there the caller decides (the authors' ResNet
extraction keeps BatchNorm per sample). None of them moves the model.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# module names


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """All ``nn.Linear`` modules of ``model`` by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def head_name(model: nn.Module) -> str:
    """The pre-softmax ``nn.Linear``: ``model.head`` (our model zoo; ``latentgen_head`` for an external
    architecture, latentgen.models.external), else the last ``nn.Linear``."""
    head = getattr(model, "latentgen_head", None) or getattr(model, "head", None)
    if isinstance(head, str):
        return head
    linears = list(linear_layers(model))
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    return linears[-1]


# --------------------------------------------------------------------------------------------
# batched passes


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` inside the block; the previous mode is restored on the way out."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def to_model(x: torch.Tensor, model: nn.Module, device: torch.device | str | None = None) -> torch.Tensor:
    """``x`` on ``device`` (default: where the model's parameters are), floats in the model's dtype."""
    param = next(model.parameters())
    dtype = param.dtype if x.is_floating_point() else x.dtype
    return x.to(device=param.device if device is None else device, dtype=dtype, non_blocking=True)


FEATURE_CACHE_BYTES = 2 << 30  # FeatureBatches.of keeps at most this much (else: full passes)


@dataclass(frozen=True, eq=False)  # compared by identity: its fields are tensors
class FeatureBatches:
    """``model.forward_features`` of ``x``, ``batch_size`` rows at a time (eval mode, no gradient),
    on the model's device. A model that differs from the one they were computed with only in the
    modules ``forward_head`` runs is evaluated from them bit for bit as from ``x``: the same
    batches go through the same operations (a model's ``forward`` is ``forward_head(forward_features(x))``,
    timm's convention and the model zoo's)."""

    x: torch.Tensor  # the inputs they were computed from (the object itself)
    batch_size: int
    batches: tuple[torch.Tensor, ...]

    @classmethod
    @torch.no_grad()
    def of(cls, model: nn.Module, x: torch.Tensor, batch_size: int, layers: Iterable[str],
           max_bytes: int = FEATURE_CACHE_BYTES) -> "FeatureBatches | None":
        """The features of ``x``, or None where they cannot stand in for ``x``: ``model`` has no
        ``forward_features`` / ``forward_head``, one of the modules ``layers`` runs inside
        ``forward_features``, the head of the features is not the model's output on the first
        batch bit for bit, or they would take more than ``max_bytes``."""
        if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
            return None
        if len(x) == 0:
            return cls(x, batch_size, ())
        modules = dict(model.named_modules())
        ran = []
        handles = [modules[n].register_forward_pre_hook(lambda m, args, n=n: ran.append(n)) for n in layers]
        try:
            with eval_mode(model):
                first = to_model(x[:batch_size], model)
                features = model.forward_features(first)
                if ran or not isinstance(features, torch.Tensor):
                    return None
                if features.element_size() * features[0].numel() * len(x) > max_bytes:
                    return None
                if not torch.equal(model.forward_head(features), model(first)):
                    return None
                batches = [features] + [model.forward_features(to_model(x[s:s + batch_size], model))
                                        for s in range(batch_size, len(x), batch_size)]
        finally:
            for h in handles:
                h.remove()
        return cls(x, batch_size, tuple(batches))

    def check(self, x: torch.Tensor, batch_size: int) -> None:
        if x is not self.x or batch_size != self.batch_size:
            raise ValueError("these features were computed from other inputs or another batch size")


@torch.no_grad()
def predict_and_max_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, watch: Iterable[str] = (),
                            device: torch.device | str | None = None,
                            features: FeatureBatches | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``predict``'s argmax, and for each module named in ``watch`` the largest output of each unit
    over ``x`` (float, on the CPU; the repair counts dead ReLU units with it; a module that never
    runs, like AlexNet's unused ``classifier``, has none). With ``features`` (of ``x``), only
    ``model.forward_head`` runs."""
    modules = dict(model.named_modules())
    best: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(module, args, output):
            m = output.detach().reshape(-1, output.shape[-1]).amax(0).cpu()
            best[name] = m if name not in best else torch.maximum(best[name], m)
        return hook

    if features is not None:
        features.check(x, batch_size)
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in watch]
    try:
        with eval_mode(model):
            if features is None:
                out = [model(to_model(x[s:s + batch_size], model, device)).argmax(1).cpu()
                       for s in range(0, len(x), batch_size)]
            else:
                out = [model.forward_head(f).argmax(1).cpu() for f in features.batches]
    finally:
        for h in handles:
            h.remove()
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.long)), best


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
            device: torch.device | str | None = None, features: FeatureBatches | None = None) -> torch.Tensor:
    """Predicted classes of the rows of ``x``: argmax of the logits (the first index on ties), as
    a ``torch.LongTensor`` of shape (N,) on the CPU (``.numpy()`` for an array).

    Runs in ``eval()`` mode (the previous mode is restored) without gradients, ``batch_size`` rows
    at a time; ``device`` is where the batches go (default: where the model's parameters are; the
    model itself is not moved). An empty ``x`` gives an empty tensor. With ``features``
    (``FeatureBatches`` of ``x``) only ``model.forward_head`` runs.
    """
    return predict_and_max_outputs(model, x, batch_size, device=device, features=features)[0]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             device: torch.device | str | None = None) -> float:
    """Fraction of rows of ``x`` whose predicted class is ``y`` (NaN for no rows), in ``eval()``
    mode. The count stays on ``device`` (default: the model's) until the end: one sync per call."""
    param = next(model.parameters())
    device = param.device if device is None else torch.device(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = to_model(x[start:start + batch_size], model, device)
            correct += (model(xb).argmax(1) == y[start:start + batch_size].to(device)).sum()
    return int(correct.item()) / len(x) if len(x) else float("nan")


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor, name: str, batch_size: int = 1024,
                 features: FeatureBatches | None = None) -> torch.Tensor:
    """The input of module ``name`` for every row of ``x`` (eval mode), float32 on the CPU (with
    ``features`` of ``x``: from ``model.forward_head`` alone)."""
    layer = dict(model.named_modules())[name]
    chunks = []
    if features is not None:
        features.check(x, batch_size)
    handle = layer.register_forward_pre_hook(lambda m, args: chunks.append(args[0].detach().float().cpu()))
    try:
        with eval_mode(model):
            if features is None:
                for start in range(0, len(x), batch_size):
                    model(to_model(x[start:start + batch_size], model))
            else:
                for batch in features.batches:
                    model.forward_head(batch)
    finally:
        handle.remove()
    if len(x) and not chunks:
        raise ValueError(f"{name} did not run in {'forward_head' if features is not None else 'forward'}")
    return torch.cat(chunks)


def head_inputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
                features: FeatureBatches | None = None) -> np.ndarray:
    """The head's input (the last hidden layer after its ReLU) for every row of ``x``, float32."""
    return layer_inputs(model, x, head_name(model), batch_size, features).numpy()


# --------------------------------------------------------------------------------------------
# probe-layer activations (the model zoo's ``probe_layers`` / ``probe_points``)


def check_layers(model: nn.Module, layers) -> list[str]:
    """``layers`` (default: every probe layer of ``model``) as a list, refusing unknown names."""
    layers = list(model.probe_layers if layers is None else layers)
    unknown = [name for name in layers if name not in model.probe_layers]
    if unknown:
        raise ValueError(f"unknown probe layer(s) {', '.join(map(repr, unknown))} for {type(model).__name__}; "
                         f"probe layers: {', '.join(model.probe_layers)}")
    return layers


def extract_activations(model: nn.Module, x: torch.Tensor, layers=None, return_logits: bool = False):
    """Forward ``x`` once and return {layer: (N, d) float32 tensor} for ``layers`` (default all).

    ``input`` is the flattened input. The caller decides ``train()``/``eval()`` and ``no_grad``.
    Each captured activation is copied, because later inplace ops (ResNet's shared ``relu``) may
    reuse a hooked output's storage.
    """
    layers = check_layers(model, layers)
    wanted: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in layers:
        if name != "input":
            module_name, call = model.probe_points[name]
            wanted[module_name].append((call, name))
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []

    def make_hook(module_name):
        calls = [0]

        def hook(module, args, output=None):  # a pre-hook (NAME:input) has no output: the input
            output = args[0] if output is None else output
            for call, name in wanted[module_name]:
                if call == calls[0]:
                    captured[name] = output.detach().flatten(1).to(torch.float32, copy=True)
            calls[0] += 1

        return hook

    try:
        for module_name in wanted:
            if module_name.endswith(":input"):  # the module's input (external architectures' HEAD:input)
                module = modules[module_name.removesuffix(":input")]
                handles.append(module.register_forward_pre_hook(make_hook(module_name)))
            else:
                handles.append(modules[module_name].register_forward_hook(make_hook(module_name)))
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    out = {name: x.detach().flatten(1).float() if name == "input" else captured[name] for name in layers}
    return (out, logits) if return_logits else out


@torch.no_grad()
def iter_activations(model: nn.Module, x: torch.Tensor, layers=None, batch_size: int = 500,
                     device: torch.device | str | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(start, extract_activations(model, batch, layers))`` for each batch of ``x``, without
    gradients; the caller decides ``train()``/``eval()``. An empty ``x`` still yields one empty
    batch, so a caller learns each layer's width. ``device``: as ``to_model``."""
    layers = check_layers(model, layers)
    for start in range(0, max(len(x), 1), batch_size):
        yield start, extract_activations(model, to_model(x[start:start + batch_size], model, device), layers)


def layer_sizes(model: nn.Module, layers=None) -> dict[str, int]:
    """Width d of each probe layer, from one forward pass of a zero image (in eval mode)."""
    layers = check_layers(model, layers)
    param = next(model.parameters())
    x = torch.zeros((2, *model.input_shape), dtype=param.dtype, device=param.device)
    with eval_mode(model), torch.no_grad():
        acts = extract_activations(model, x, layers)
    return {name: acts[name].shape[1] for name in layers}
