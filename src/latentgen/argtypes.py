"""Argument types of the commands: each parses one value and checks its range.

The commands' parsers use them as argparse ``type=``, and the workflow's config check
(``latentgen.workflow.config``) runs the same parsers on the config's argument sections, so a range is
written once, here, and a bad value (``lr: -1``, ``variance: 1.5``) is refused before any job.
Torch-free: the Snakefile imports the parsers at parse time.
"""

from __future__ import annotations

import argparse
import json


def boolean(text) -> bool:
    """true/false, yes/no, on/off, 1/0."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _number(kind, check, description):
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    parse.__name__ = description.replace(" ", "_")
    parse.description = description
    return parse


integer = _number(int, lambda v: True, "an integer")
positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
real = _number(float, lambda v: True, "a number")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
fraction = _number(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
unit_interval = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_unit_interval = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def check_fraction(value, name: str) -> float:
    """``value`` as a float in (0, 1] for the library's own callers (MASC's variance, the repair's
    rho); a ValueError naming ``name`` otherwise. The commands refuse the same range through
    :data:`fraction`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < number <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return number


def json_object(text) -> dict:
    """A JSON object (e.g. --model-options '{"pool_stride": 1}')."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_BYTE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text) -> int:
    """A positive number of bytes: ``1000000``, ``512M``, ``8G``, ``1.5T`` (binary units; a trailing
    ``B`` / ``iB`` is accepted)."""
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _BYTE_UNITS else ""
    try:
        value = float(raw[:len(raw) - len(unit)]) * _BYTE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in bytes such as 8G or 512M, got {text!r}") from None
    if not value >= 1 or value != value:
        raise argparse.ArgumentTypeError(f"expected a positive size in bytes, got {text!r}")
    return int(value)


def architecture_name(text: str) -> str:
    """A known architecture's name (built in, or external: ``latentgen.registry.get_architecture``)."""
    from latentgen import registry

    return _registry_name(registry.get_architecture, text)


def dataset_name(text: str) -> str:
    """A known dataset's name (built in, or an image folder: ``latentgen.registry.get_dataset``)."""
    from latentgen import registry

    return _registry_name(registry.get_dataset, text)


def _registry_name(get, text: str) -> str:
    try:
        return get(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
