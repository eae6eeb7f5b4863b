"""Conda environments of the workflow: they parse, pin exact versions, take torch from pip,
and agree with pyproject.toml's requirements and with the versions installed here."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

CONDA_TO_PYPI = {"pyyaml": "PyYAML"}  # conda-forge names that differ from PyPI's


def _envs(repo_root):
    return sorted((repo_root / "envs").glob("*.yaml"))


def _pins(env: dict) -> dict[str, str]:
    """name -> exact version, over conda and pip dependencies (python and pip excluded)."""
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                name, _, version = item.partition("==")
                pins[name.strip().lower()] = version.strip()
            continue
        name, _, version = dep.partition("==")
        if name.strip() in ("python", "pip"):
            continue
        pins[name.strip().lower()] = version.strip()
    return pins


def test_every_env_parses_and_pins_exact_versions(repo_root):
    envs = _envs(repo_root)
    assert {p.stem for p in envs} >= {"data", "train", "probe", "plot"}
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert env["name"].startswith("latentgen-"), path
        assert "conda-forge" in env["channels"], path
        python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
        assert python and re.fullmatch(r"python==3\.\d+\.\d+", python[0]), path
        for dep in env["dependencies"]:
            items = dep["pip"] if isinstance(dep, dict) else [dep]
            for item in items:
                if item == "pip":
                    continue
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9a-z.+]*", item), f"{path.name}: {item!r} is not an exact pin"
        conda_names = {d.partition("==")[0] for d in env["dependencies"] if isinstance(d, str)}
        assert not conda_names & {"pytorch", "torch", "torchvision"}, f"{path.name}: torch must come through pip"
        pip = [d for d in env["dependencies"] if isinstance(d, dict)]
        if pip:
            assert "pip" in env["dependencies"], f"{path.name}: a pip section needs pip itself"


def test_pins_satisfy_pyproject_and_match_the_installed_versions(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    python_spec = project["requires-python"]
    for path in _envs(repo_root):
        env = yaml.safe_load(path.read_text())
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
        assert Requirement(f"python{python_spec}").specifier.contains(python.partition("==")[2]), path.name
        for name, version in _pins(env).items():
            pypi = CONDA_TO_PYPI.get(name, name)
            assert pypi.lower() in requirements, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert requirements[pypi.lower()].specifier.contains(version), \
                f"{path.name}: {name}=={version} is outside pyproject's {requirements[pypi.lower()]}"
            installed = metadata.version(pypi)
            assert Version(installed).base_version == Version(version).base_version, \
                f"{path.name}: pins {name}=={version} but {installed} is installed and tested"


def test_every_rule_names_an_existing_env(repo_root):
    rule_files = sorted((repo_root / "workflow" / "rules").glob("*.smk"))
    seen = set()
    for path in rule_files:
        text = path.read_text()
        n_rules = len(re.findall(r"^[ \t]*(?:rule|checkpoint)(?:[ \t]+\w+)?[ \t]*:", text, flags=re.M))
        envs = re.findall(r"conda:\s*\n\s*\"([^\"]+)\"", text)
        assert len(envs) == n_rules, f"{path.name}: {n_rules} rules but {len(envs)} conda directives"
        for env in envs:
            target = (path.parent / env).resolve()
            assert target.is_file(), f"{path.name}: conda env {env} does not exist"
            seen.add(target.name)
    assert seen == {p.name for p in _envs(repo_root)}, "an env file no rule uses"


def test_envs_cover_what_each_step_imports(repo_root):
    need = {"data": {"torch", "torchvision", "numpy", "scikit-learn"},
            "train": {"torch", "numpy", "h5py"},
            "probe": {"torch", "numpy", "scipy", "scikit-learn", "h5py", "pandas"},
            "plot": {"pandas", "matplotlib"}}
    for stem, names in need.items():
        pins = _pins(yaml.safe_load((repo_root / "envs" / f"{stem}.yaml").read_text()))
        assert names <= set(pins), f"envs/{stem}.yaml lacks {sorted(names - set(pins))}"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib needs Python 3.11")
def test_python_pin_is_the_tested_minor(repo_root):
    for path in _envs(repo_root):
        env = yaml.safe_load(path.read_text())
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
        assert python.partition("==")[2].startswith("3.11."), path.name


def test_every_rule_has_log_benchmark_conda_and_threads(repo_root):
    for path in sorted((repo_root / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        n_rules = len(re.findall(r"^[ \t]*(?:rule|checkpoint)(?:[ \t]+\w+)?[ \t]*:", text, flags=re.M))
        for directive in ("log", "benchmark", "conda", "threads"):
            found = len(re.findall(rf"^[ \t]+{directive}:", text, flags=re.M))
            assert found == n_rules, f"{path.name}: {n_rules} rules but {found} {directive}: directives"


def test_pyproject_declares_every_package_the_library_imports(repo_root):
    """A package imported by ``src/latentgen`` but reaching the install only through another
    dependency (jsonschema through snakemake, Pillow through torchvision) breaks an install
    without that other package; found on a GPU machine whose image had torch but no snakemake."""
    import ast
    import tomllib

    imported = set()
    for path in (repo_root / "src" / "latentgen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    imported -= set(sys.stdlib_module_names) | {"latentgen"}
    assert {"torch", "numpy", "h5py"} <= imported  # the scan sees imports at all
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower() for r in project["dependencies"]}
    # an optional extra's package (timm: `.[models]`) is imported only where it is used, and named then
    optional = {Requirement(r).name.lower() for r in project["optional-dependencies"]["models"]}
    providers = metadata.packages_distributions()
    for module in sorted(imported):
        if module in optional:
            continue
        dists = {d.lower() for d in providers.get(module, [])}
        assert dists, f"src/latentgen imports {module}, which no installed distribution provides"
        assert dists & declared, f"src/latentgen imports {module} ({', '.join(sorted(dists))}), not in pyproject's dependencies"


# (distribution, first version with it, module, attribute, a pattern of its use in src/latentgen)
NEEDED_APIS = [
    ("numpy", "2.0", "numpy", "unique_counts", r"np\.unique_counts\("),
    ("scikit-learn", "1.6", "sklearn.utils.validation", "validate_data",
     r"from sklearn\.utils\.validation import .*validate_data"),
    ("scikit-learn", "1.6", "sklearn.utils.validation", "validate_data", r"ensure_all_finite="),
]
PREVIOUS_RELEASE = {"numpy": "1.26.4", "scikit-learn": "1.5.2"}  # the last release without the API


@pytest.mark.parametrize("dist,first,module,attribute,pattern", NEEDED_APIS)
def test_lower_bounds_admit_no_release_without_the_apis_the_code_uses(repo_root, dist, first, module, attribute,
                                                                      pattern):
    import importlib
    import tomllib

    source = "\n".join(p.read_text() for p in (repo_root / "src" / "latentgen").rglob("*.py"))
    assert re.search(pattern, source), f"the code no longer uses {pattern}: drop or lower the bound"
    assert hasattr(importlib.import_module(module), attribute)
    requirement = next(Requirement(r) for r in tomllib.loads((repo_root / "pyproject.toml").read_text())["project"][
        "dependencies"] if Requirement(r).name.lower() == dist)
    assert not requirement.specifier.contains(PREVIOUS_RELEASE[dist]), f"{requirement} admits {PREVIOUS_RELEASE[dist]}"
    assert requirement.specifier.contains(first), f"{requirement} excludes {first}, the first release with the API"
