"""Workflow configuration: the JSON schema, the shipped configs, and bad configs refused
before any job runs, with a message that names the key."""

from __future__ import annotations

import ast
import copy
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def schema(repo_root):
    return yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def demo(repo_root):
    return yaml.safe_load((repo_root / "profiles" / "demo" / "demo.yaml").read_text())


def test_schema_is_valid_2020_12_and_the_shipped_configs_pass(schema, repo_root, demo):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load((repo_root / "config.yaml").read_text()))
    validator.validate(demo)


def test_schema_names_match_the_registries(schema):
    from latentgen.datasets import DATASETS
    from latentgen.models import ARCHITECTURES

    model = schema["$defs"]["model"]["properties"]
    assert set(model["arch"]["enum"]) == set(ARCHITECTURES)
    assert set(model["dataset"]["enum"]) == set(DATASETS)


def test_supported_pairs_in_the_workflow_match_the_model_registry(repo_root):
    from latentgen.models import ARCHITECTURES

    tree = ast.parse((repo_root / "workflow" / "rules" / "common.smk").read_text())
    table = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SUPPORTED_DATASETS")
    assert {a: set(d) for a, d in table.items()} == {a: set(s.datasets) for a, s in ARCHITECTURES.items()}


def _bad_configs(demo):
    """(name, config, text the error must contain)."""
    cases = []

    def case(name, edit, expect):
        cfg = copy.deepcopy(demo)
        edit(cfg)
        cases.append((name, cfg, expect))

    case("unknown_dataset", lambda c: c["models"]["mlp_digits"].update(dataset="imagenet21k"), "dataset")
    case("unknown_arch", lambda c: c["models"]["cnn_digits"].update(arch="vgg16"), "arch")
    case("corruption_above_1", lambda c: c.update(corruptions=[0.0, 1.5]), "corruptions")
    case("corruption_negative", lambda c: c.update(corruptions=[-0.2, 0.4]), "corruptions")
    case("empty_runs", lambda c: c.update(runs=[]), "runs")
    case("grid_zero_step", lambda c: c.update(grid={"dense_until": 4, "dense_step": 0, "step": 8}), "grid")
    case("grid_unknown_key", lambda c: c.update(grid={"dense_until": 4, "every": 3}), "grid")
    case("grid_not_a_number", lambda c: c["models"]["mlp_digits"].update(grid={"step": "often"}), "grid")
    case("figure_model_missing", lambda c: c["figures"]["groups"].update(main=["mlp_digits", "alexnet_tiny"]),
         "figures.groups.main[1]")
    case("figure_group_empty", lambda c: c["figures"].update(groups={"main": ["mlp_digits"]}, build=["fig5"]),
         "figures.build")
    case("figure_rows_absent", lambda c: (c.update(corruptions=[0.0, 1.0]), c["figures"].update(build=["fig1"])),
         "figures.build")
    case("unsupported_pair", lambda c: c["models"]["mlp_digits"].update(arch="alexnet", dataset="mnist"),
         "models.mlp_digits.dataset")
    case("duplicate_pair", lambda c: c["models"].update(mlp_again={"arch": "mlp", "dataset": "digits"}),
         "models.mlp_again")
    return cases


@pytest.mark.slow  # thirteen Snakemake start-ups
def test_bad_configs_are_refused_before_any_job_runs(tmp_path, demo, repo_root):
    procs = []
    for name, cfg, expect in _bad_configs(demo):
        work = tmp_path / name
        work.mkdir()
        cfg["outdir"] = str(work / "results")
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        # a real run (not -n): nothing may start
        cmd = [*SNAKEMAKE, "-s", str(repo_root / "Snakefile"), "-d", str(work), "--configfile",
               str(work / "config.yaml"), "--cores", "1"]
        procs.append((name, expect, work, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                           text=True, env={**os.environ, "LATENTGEN_DEBUG": ""})))
    for name, expect, work, proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, f"{name}: accepted\n{output}"
        assert expect in output, f"{name}: message does not name {expect!r}:\n{output}"
        assert not (work / "results").exists(), f"{name}: a job ran"
