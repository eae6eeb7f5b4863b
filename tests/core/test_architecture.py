"""The package's house rules, read from its source: packages by stage, nothing imports upward,
no module reaches into another package's private names, no module over 500 lines, and
``src/latentgen`` never imports Snakemake."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "latentgen"

# the floors of the house, bottom up (docs/architecture.md draws them); a module may import its
# own floor and the floors below it
FLOORS = [
    {"__init__", "registry", "registry_check", "config_entries", "contracts", "argtypes", "_io", "devices",
     "provenance"},  # foundation
    {"data"},
    {"models"},
    {"training"},
    {"probing"},
    {"repair"},
    {"paper"},
    {"external"},
    {"options"},
    {"workflow"},
    {"commands", "bench", "__main__", "prefork"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}
MAX_LINES = 500


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(("latentgen", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        yield name, path


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """(imported module, imported name) for every import of latentgen in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "latentgen":
            for alias in node.names:
                if node.module == "latentgen" and alias.name not in ("__version__",):
                    yield f"latentgen.{alias.name}", ""
                else:
                    yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("latentgen", "snakemake"):
                    yield alias.name, ""


def test_every_package_is_on_a_floor():
    tops = {_top(name) for name, _ in _modules()}
    assert tops <= set(FLOOR), f"not on a floor of FLOORS: {sorted(tops - set(FLOOR))}"


def test_nothing_imports_upward_or_into_another_packages_private_names():
    problems = []
    for name, path in _modules():
        for target, imported in _imports(path):
            if target.split(".")[0] == "snakemake":
                problems.append(f"{name} imports snakemake")
                continue
            if FLOOR[_top(target)] > FLOOR[_top(name)]:
                problems.append(f"{name} (floor {FLOOR[_top(name)]}) imports {target} (floor {FLOOR[_top(target)]})")
            if imported.startswith("_") and not imported.startswith("__") and _top(target) != _top(name):
                problems.append(f"{name} imports the private {target}.{imported}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_is_over_the_line_limit(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (limit {MAX_LINES}): split it by concern"


def test_the_check_sees_an_upward_import(tmp_path):
    # the rule above must be able to fail: a probing module importing the workflow is caught
    module = tmp_path / "bad.py"
    module.write_text("from latentgen.workflow.plan import JobPlan\n")
    targets = list(_imports(module))
    assert targets == [("latentgen.workflow.plan", "JobPlan")]
    assert FLOOR[_top(targets[0][0])] > FLOOR["probing"]
