"""Architectures and datasets a workflow configuration defines (not built into the registry).

A model entry of the configuration may name an external architecture (``arch:
torchvision:resnet18``, ``timm:NAME``, ``path/to/file.py:factory``) and a dataset folder
(``dataset: imagefolder:PATH``); ``latentgen.workflow.external_config`` turns such entries into ordinary
:class:`latentgen.registry.Architecture` / :class:`latentgen.registry.Dataset` entries. This
module holds them for the process and hands them to the jobs:

- :func:`register` adds an entry to this process's table (the library, the tests);
- the workflow puts every entry of its configuration, as JSON, into the environment variable
  :data:`ENV_VAR` (``common.smk``), which every job inherits (the prefork server passes each
  job's environment on; a cluster job re-parses the Snakefile, which sets it again);
- :func:`lookup` is what ``registry.get_architecture`` / ``registry.get_dataset`` call for a
  name that is not built in: this process's table first, then the environment.

Torch-free (the registry imports it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

ENV_VAR = "LATENTGEN_EXTERNAL"
KINDS = ("architecture", "dataset")
# the builder of every external architecture (latentgen.models.external)
BUILDER = "latentgen.models.external:build"
# the prefix of an external dataset's ``files`` and ``source``: an image folder
IMAGEFOLDER = "imagefolder:"

_TABLE: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_ENV_CACHE: dict[str, dict[str, dict[str, Any]]] = {}


def _kind(entry) -> str:
    from latentgen import registry

    if isinstance(entry, registry.Architecture):
        return "architecture"
    if isinstance(entry, registry.Dataset):
        return "dataset"
    raise TypeError(f"not a registry entry: {type(entry).__name__}")


def register(entry) -> None:
    """Make ``entry`` (an Architecture or Dataset) known to this process under its name; a
    built-in name is refused."""
    from latentgen import registry

    kind = _kind(entry)
    builtin = registry.ARCHITECTURES if kind == "architecture" else registry.DATASETS
    if entry.name in builtin:
        raise ValueError(f"{kind} {entry.name!r} is built in; an external {kind} needs another name")
    _TABLE[kind][entry.name] = entry


def unregister_all() -> None:
    """Forget the entries :func:`register` added (tests)."""
    for table in _TABLE.values():
        table.clear()


def to_dict(entry) -> dict:
    """``entry`` as JSON-ready data (tuples as lists, mappings as dicts)."""
    return {f.name: _plain(getattr(entry, f.name)) for f in dataclasses.fields(entry)}


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def from_dict(kind: str, data: dict):
    """The registry entry ``to_dict`` wrote."""
    from latentgen import registry

    cls = registry.Architecture if kind == "architecture" else registry.Dataset
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            values[f.name] = tuple(v) if isinstance(v, list) and "tuple" in str(f.type) else v
    return cls(**values)


def environment(entries) -> str:
    """The value of :data:`ENV_VAR` that makes ``entries`` known to the jobs."""
    out: dict[str, dict] = {kind: {} for kind in KINDS}
    for entry in entries:
        out[_kind(entry)][entry.name] = to_dict(entry)
    return json.dumps(out, sort_keys=True)


def export(value: str) -> None:
    """Hand the entries of :func:`environment`'s ``value`` to every job this process starts."""
    os.environ[ENV_VAR] = value


def _from_environment() -> dict[str, dict[str, Any]]:
    text = os.environ.get(ENV_VAR, "")
    if not text:
        return {kind: {} for kind in KINDS}
    if text not in _ENV_CACHE:
        try:
            data = json.loads(text)
            _ENV_CACHE[text] = {kind: {name: from_dict(kind, d) for name, d in (data.get(kind) or {}).items()}
                                for kind in KINDS}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"environment variable {ENV_VAR} is not latentgen's JSON of external entries: "
                             f"{exc}") from None
    return _ENV_CACHE[text]


def lookup(kind: str, name: str):
    """The external ``kind`` entry ``name`` (this process's, else the environment's), or None."""
    return _TABLE[kind].get(name) or _from_environment()[kind].get(name)


def names(kind: str) -> list[str]:
    """Every external ``kind`` name known here."""
    return list(dict.fromkeys([*_TABLE[kind], *_from_environment()[kind]]))


def is_external_arch(text: str) -> bool:
    """``torchvision:NAME``, ``timm:NAME`` or ``FILE.py:factory``."""
    kind, sep, name = str(text).partition(":")
    return bool(sep and name) and (kind in ("torchvision", "timm") or kind.endswith(".py"))


def is_external_dataset(text: str) -> bool:
    return str(text).startswith(IMAGEFOLDER)
