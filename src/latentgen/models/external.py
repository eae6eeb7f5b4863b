"""The builder of external architectures (``arch: torchvision:NAME`` / ``timm:NAME`` /
``FILE.py:factory`` in the workflow; their registry entries: ``latentgen.workflow.external_config``).

:func:`build` makes the network with :func:`build_model` (random init, the
dataset's class count) and gives it what the model zoo's networks carry (``latentgen.models.architectures``):
``probe_layers`` (the configured ``layers:``, module names as ``named_modules()`` names them, then
``HEAD:input``, the head's input: VeLPIC's transfer layer), ``probe_points`` (each layer: its
module's output, ``NAME:input`` the module's input; ``latentgen.models.forward``), the head and
``last_hidden``. The head is recorded as ``latentgen_head`` (a timm model's ``head`` is a module
of its own; ``latentgen.models.forward.head_name`` reads either).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

INPUT_SUFFIX = ":input"


def check_layer_names(model: nn.Module, layers, what: str = "layers") -> None:
    """Every name a module of ``model`` (``NAME:input`` too, and ``input``); a one-line ValueError
    listing the closest names otherwise."""

    modules = [n for n, _ in model.named_modules() if n]
    for name in layers:
        base = name.removesuffix(INPUT_SUFFIX)
        if name != "input" and base not in modules:
            close = difflib.get_close_matches(base, modules, n=5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ValueError(f"{what}: {type(model).__name__} has no module {base!r}{hint}")


def find_head(model: nn.Module, head: str | None) -> str:
    """``head`` checked to be an ``nn.Linear`` of ``model``, or (None) its last ``nn.Linear``."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if head is None:
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the head; name one with head:")
        return linears[-1]
    check_layer_names(model, [head], "head")
    if head not in linears:
        raise ValueError(f"head: {head!r} is a {type(model.get_submodule(head)).__name__}, not an nn.Linear "
                         f"(nn.Linear layers: {', '.join(linears) or 'none'})")
    return head


def build(ds, *, source: str, layers, head: str | None = None, **options) -> nn.Module:
    """``source``'s network for dataset ``ds`` (a registry Dataset) with the probe layers ``layers``."""
    if options:
        raise TypeError(f"unexpected model option(s) {', '.join(sorted(options))} for {source}")
    model = build_model(source, ds.num_classes).train()
    check_layer_names(model, layers)
    head = find_head(model, head)
    last_hidden = f"{head}{INPUT_SUFFIX}"
    probe_layers = list(dict.fromkeys([*layers, last_hidden]))
    model.probe_layers = probe_layers
    model.probe_points = {name: (name, 0) for name in probe_layers if name != "input"}
    model.latentgen_head = head
    model.last_hidden = last_hidden
    return model


def build_model(spec: str, num_classes: int, weights: str | os.PathLike | None = None) -> nn.Module:
    """The network ``spec`` names (module docstring) with ``num_classes`` outputs, in eval mode."""
    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"--model {spec!r}: expected torchvision:NAME, timm:NAME or path/to/file.py:factory")
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():

            close = difflib.get_close_matches(name, torchvision.models.list_models(), n=3)
            raise ValueError(f"torchvision has no model {name!r}" + (f"; closest: {', '.join(close)}" if close else ""))
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    elif kind == "timm":
        try:
            import timm
        except ModuleNotFoundError:
            raise ValueError("timm models need timm: pip install -e \".[models]\"") from None
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    elif kind.endswith(".py"):
        path = Path(kind)
        if not path.is_file():
            raise FileNotFoundError(f"--model {spec!r}: {path} not found")
        module_spec = importlib.util.spec_from_file_location(f"latentgen_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        factory = getattr(module, name, None)
        if not callable(factory):
            raise ValueError(f"--model {spec!r}: {path} has no function {name!r}")
        model = factory(num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {spec!r}: {name}() returned a {type(model).__name__}, not a torch.nn.Module")
    else:
        raise ValueError(f"--model {spec!r}: unknown kind {kind!r}; expected torchvision:, timm: or FILE.py:")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """``model`` with the state dict at ``path`` (``torch.load(weights_only=True)``: a plain state dict
    only, nothing executed); a file that is not one is refused naming what it holds."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code, or not a torch file
        raise ValueError(f"{path}: not a plain state dict torch can load without running code "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    model.load_state_dict(state)
    return model
