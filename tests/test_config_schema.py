"""Workflow configuration: the JSON schema, the shipped configs, and bad configs refused
before any job runs, with a message that names the key."""

from __future__ import annotations

import ast
import copy
import subprocess
import sys

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
    from latentgen.curvature import REPAIRS

    methods = schema["properties"]["repair"]["properties"]["methods"]["items"]["enum"]
    assert set(methods) == {name for name, repair in REPAIRS.items() if repair.uses_rho}


def test_supported_pairs_in_the_workflow_match_the_model_registry(repo_root):
    from latentgen.models import ARCHITECTURES

    tree = ast.parse((repo_root / "workflow" / "rules" / "common.smk").read_text())
    table = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SUPPORTED_DATASETS")
    assert {a: set(d) for a, d in table.items()} == {a: set(s.datasets) for a, s in ARCHITECTURES.items()}


def _edited(demo, edit):
    cfg = copy.deepcopy(demo)
    edit(cfg)
    return cfg


# refused by the JSON schema: (name, edit, key named in the error path)
SCHEMA_CASES = [
    ("unknown_dataset", lambda c: c["models"]["mlp_digits"].update(dataset="imagenet21k"), "dataset"),
    ("unknown_arch", lambda c: c["models"]["cnn_digits"].update(arch="vgg16"), "arch"),
    ("corruption_above_1", lambda c: c.update(corruptions=[0.0, 1.5]), "corruptions"),
    ("corruption_negative", lambda c: c.update(corruptions=[-0.2, 0.4]), "corruptions"),
    ("empty_runs", lambda c: c.update(runs=[]), "runs"),
    ("grid_zero_step", lambda c: c.update(grid={"dense_until": 4, "dense_step": 0, "step": 8}), "grid"),
    ("grid_unknown_key", lambda c: c.update(grid={"dense_until": 4, "every": 3}), "grid"),
    ("grid_not_a_number", lambda c: c["models"]["mlp_digits"].update(grid={"step": "often"}), "grid"),
]

# refused by the workflow's own checks (workflow/rules/common.smk), and one schema case end to end
WORKFLOW_CASES = [
    ("corruption_above_1", lambda c: c.update(corruptions=[0.0, 1.5]), "corruptions"),
    ("figure_model_missing", lambda c: c["figures"]["groups"].update(main=["mlp_digits", "alexnet_tiny"]),
     "figures.groups.main[1]"),
    ("figure_group_empty", lambda c: c["figures"].update(groups={"main": ["mlp_digits"]}, build=["fig5"]),
     "figures.build"),
    ("figure_rows_absent", lambda c: (c.update(corruptions=[0.0, 1.0]), c["figures"].update(build=["fig1"])),
     "figures.build"),
    ("unsupported_pair", lambda c: c["models"]["mlp_digits"].update(arch="alexnet", dataset="mnist"),
     "models.mlp_digits.dataset"),
    ("duplicate_pair", lambda c: c["models"].update(mlp_again={"arch": "mlp", "dataset": "digits"}),
     "models.mlp_again"),
]


@pytest.mark.parametrize("name,edit,key", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_refuses_bad_values_naming_the_key(schema, demo, name, edit, key):
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(_edited(demo, edit)))
    assert errors, f"{name}: accepted"
    assert any(key in [str(p) for p in e.absolute_path] for e in errors), [list(e.absolute_path) for e in errors]


@pytest.mark.slow  # six Snakemake start-ups
def test_bad_configs_are_refused_before_any_job_runs(tmp_path, demo, repo_root):
    procs = []
    for name, edit, expect in WORKFLOW_CASES:
        cfg = _edited(demo, edit)
        work = tmp_path / name
        work.mkdir()
        cfg["outdir"] = str(work / "results")
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        # a real run (not -n): nothing may start
        cmd = [*SNAKEMAKE, "-s", str(repo_root / "Snakefile"), "-d", str(work), "--configfile",
               str(work / "config.yaml"), "--cores", "1"]
        procs.append((name, expect, work, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                           text=True)))
    for name, expect, work, proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, f"{name}: accepted\n{output}"
        assert expect in output, f"{name}: message does not name {expect!r}:\n{output}"
        assert not (work / "results").exists(), f"{name}: a job ran"
