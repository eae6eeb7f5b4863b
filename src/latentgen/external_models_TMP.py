"""The builder of external architectures (``arch: torchvision:NAME`` / ``timm:NAME`` /
``FILE.py:factory`` in the workflow; their registry entries: ``latentgen.workflow.external_config``).

:func:`build` makes the network with ``latentgen.model_sources.build_model`` (random init, the
dataset's class count) and gives it what the model zoo's networks carry (``latentgen.models``):
``probe_layers`` (the configured ``layers:``, module names as ``named_modules()`` names them, then
``HEAD:input``, the head's input: VeLPIC's transfer layer), ``probe_points`` (each layer: its
module's output, ``NAME:input`` the module's input; ``latentgen.forward``), the head and
``last_hidden``. The head is recorded as ``latentgen_head`` (a timm model's ``head`` is a module
of its own; ``latentgen.forward.head_name`` reads either).
"""

from __future__ import annotations

from torch import nn

INPUT_SUFFIX = ":input"


def check_layer_names(model: nn.Module, layers, what: str = "layers") -> None:
    """Every name a module of ``model`` (``NAME:input`` too, and ``input``); a one-line ValueError
    listing the closest names otherwise."""
    import difflib

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
    from latentgen.model_sources import build_model

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
