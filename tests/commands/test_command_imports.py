"""Every command's module and parser (``latentgen.options``) are light: the workflow builds the parsers at Snakefile parse
time (once per cluster job too) to check the config, so neither importing a command nor its
``add_arguments`` may import torch, numpy, pandas or the probes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from latentgen.options import COMMANDS

HEAVY = ("torch", "numpy", "pandas", "scipy", "sklearn", "h5py", "matplotlib", "latentgen.probing.subspaces", "latentgen.repair")

CHECK = """
import importlib, sys
from latentgen.options import COMMANDS, command_parser
command_parser({name!r}).format_help()
importlib.import_module("latentgen.commands." + COMMANDS[{name!r}])
heavy = [m for m in {heavy!r} if m in sys.modules]
print(",".join(heavy))
"""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_module_and_parser_import_nothing_heavy(name):
    done = subprocess.run([sys.executable, "-c", CHECK.format(name=name, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"latentgen {name}: building its parser imported {done.stdout.strip()}"


@pytest.mark.parametrize("module", ["latentgen.paper.claims", "latentgen.paper.tables"])
def test_library_modules_behind_light_commands_import_nothing_heavy(module):
    """The claims and tables modules name their inputs at Snakefile parse time: pandas and the
    rest are imported inside the functions that read data."""
    code = f"import sys, {module}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing {module} imported {done.stdout.strip()}"


def test_probe_family_option_follows_the_registry():
    from latentgen import registry
    from latentgen.options import command_parser

    parser = command_parser("probe")
    args = parser.parse_args(["--activations", "a.h5", "--out", "o.csv", "--families", "velpic,masc", "transfer"])
    assert args.families == [["velpic", "masc"], ["transfer"]]
    from latentgen.commands.probe import DEFAULT_FAMILIES, chosen_families

    assert DEFAULT_FAMILIES == tuple(n for n, f in registry.PROBE_FAMILIES.items() if f.default)
    assert chosen_families(parser.parse_args(["--activations", "a", "--out", "o"])) == list(DEFAULT_FAMILIES)
    no_transfer = chosen_families(parser.parse_args(["--activations", "a", "--out", "o", "--no-transfer"]))
    assert no_transfer == [n for n in DEFAULT_FAMILIES if not registry.PROBE_FAMILIES[n].needs_checkpoint]


def test_corrupt_default_seed_is_the_authors():
    from latentgen import registry
    from latentgen.options import command_parser
    from latentgen.data.labels import DEFAULT_SEED

    parsed = command_parser("corrupt").parse_args(["--dataset", "digits", "--corruption", "0.2", "--out", "x.npz"])
    assert parsed.seed == DEFAULT_SEED == registry.LABEL_SEED == 42
