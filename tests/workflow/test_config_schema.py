"""Workflow configuration: the JSON schema, the shipped configs, and bad configs refused
before any job runs, with a message that names the key."""

from __future__ import annotations

import copy
import subprocess
import sys

import jsonschema
import pytest
import yaml

from latentgen import registry
from latentgen.workflow.config import ConfigError, check_config

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
    for path in (repo_root / "config.yaml", repo_root / "profiles" / "demo" / "demo.yaml"):
        check_config(yaml.safe_load(path.read_text()), schema)  # the whole check, not only the schema


def test_schema_states_no_registry_names(schema):
    """Names live in the registry only: the schema enumerates no architecture, dataset, figure,
    device or repair method (it used to, and its copies drifted)."""
    from latentgen.paper.figures import FIGURES

    names = {*registry.ARCHITECTURES, *registry.DATASETS, *FIGURES, *registry.REPAIR_METHODS,
             *registry.DEVICE_CHOICES} - {"auto"}
    text = yaml.safe_dump(schema)
    enums = [value for node in _walk(schema) for key, value in node.items() if key in ("enum", "pattern")]
    assert not any(str(v) in names for enum in enums for v in (enum if isinstance(enum, list) else [enum])), enums
    assert "tiny_imagenet" not in text and "kfac_velpic" not in text


def test_the_workflows_repair_methods_default_to_the_registrys(schema):
    """The methods the workflow sweeps when the config names none are marked on their registry entries."""
    from latentgen.workflow.config import check_config

    cfg = {"corruptions": [0.0], "runs": [1], "models": {"m": {"arch": "mlp", "dataset": "digits"}},
           "figures": {"build": [], "groups": {"main": ["m"], "extra": ["m"]}}, "repair": {"models": ["m"]}}
    marked = [n for n, m in registry.REPAIR_METHODS.items() if m.workflow]
    assert check_config(cfg, schema)["repair"]["methods"] == marked == ["kfac", "svd", "random", "kfac_velpic"]
    cfg["repair"]["methods"] = ["svd"]
    assert check_config(cfg, schema)["repair"]["methods"] == ["svd"]


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("arch", list(registry.ARCHITECTURES))
def test_every_registered_pair_is_accepted_and_every_other_refused(schema, demo, arch):
    for dataset in registry.DATASETS:
        cfg = _edited(demo, lambda c: c.update(models={"mlp_digits": {"arch": arch, "dataset": dataset}},
                                               figures={"groups": {"main": ["mlp_digits"]}, "build": ["fig3"]},
                                               repair={}, relabel={}))
        if dataset in registry.ARCHITECTURES[arch].datasets:
            check_config(cfg, schema)
        else:
            with pytest.raises(ConfigError, match=f"does not support dataset '{dataset}'") as err:
                check_config(cfg, schema)
            assert err.value.key == "models.mlp_digits.dataset"


def _edited(demo, edit):
    cfg = copy.deepcopy(demo)
    edit(cfg)
    return cfg


# refused by the whole check (schema, registry, the commands' parsers): (name, edit, key named,
# words the message must hold)
SCHEMA_CASES = [
    ("unknown_dataset", lambda c: c["models"]["mlp_digits"].update(dataset="imagenet21k"), "models.mlp_digits.dataset",
     "unknown dataset 'imagenet21k'"),
    ("misspelt_dataset", lambda c: c["models"]["mlp_digits"].update(dataset="fashion-mnist"),
     "models.mlp_digits.dataset", "did you mean 'fashion_mnist'?"),
    ("unknown_arch", lambda c: c["models"]["cnn_digits"].update(arch="vgg16"), "models.cnn_digits.arch",
     "unknown architecture 'vgg16'"),
    ("corruption_above_1", lambda c: c.update(corruptions=[0.0, 1.5]), "corruptions[1]", "1.5"),
    ("corruption_negative", lambda c: c.update(corruptions=[-0.2, 0.4]), "corruptions[0]", "-0.2"),
    ("empty_runs", lambda c: c.update(runs=[]), "runs", "[]"),
    ("grid_zero_step", lambda c: c.update(grid={"dense_until": 4, "dense_step": 0, "step": 8}), "grid.dense_step",
     "expected an integer >= 1, got '0'"),
    ("grid_unknown_key", lambda c: c.update(grid={"dense_until": 4, "every": 3}), "grid.every", "unknown key"),
    ("grid_not_a_number", lambda c: c["models"]["mlp_digits"].update(grid={"step": "often"}),
     "models.mlp_digits.grid.step", "'often'"),
    ("misspelt_top_key", lambda c: c.update(corruption=[0.2]), "corruption", "did you mean 'corruptions'?"),
    ("misspelt_train_arg", lambda c: c["models"]["mlp_digits"]["train_args"].update(lrr=0.1),
     "models.mlp_digits.train_args.lrr", "no option --lrr (did you mean 'lr'?)"),
    ("negative_lr", lambda c: c["models"]["mlp_digits"]["train_args"].update(lr=-1),
     "models.mlp_digits.train_args.lr", "-1 is refused by `latentgen train --lr`: expected a number > 0"),
    ("bad_optimizer", lambda c: c["models"]["mlp_digits"]["train_args"].update(optimizer="adamw"),
     "models.mlp_digits.train_args.optimizer", "not one of sgd, adam"),
    ("bad_shuffle", lambda c: c["models"]["mlp_digits"]["train_args"].update(shuffle="sometimes"),
     "models.mlp_digits.train_args.shuffle", "expected true or false"),
    ("train_arg_the_workflow_sets", lambda c: c["models"]["mlp_digits"]["train_args"].update(seed=3),
     "models.mlp_digits.train_args.seed", "use 'seeds.train_base' instead"),
    ("negative_max_epochs", lambda c: c["models"]["mlp_digits"].update(max_epochs=-1),
     "models.mlp_digits.max_epochs", "expected an integer >= 0"),
    ("variance_above_1", lambda c: c.update(probe_args={"variance": 1.5}), "probe_args.variance",
     "1.5 is refused by `latentgen probe-run --variance`"),
    ("misspelt_probe_arg", lambda c: c.update(probe_args={"sgn": "class"}), "probe_args.sgn",
     "did you mean 'sign'?"),
    ("bad_activation_arg", lambda c: c.update(activation_args={"batchnorm": "train"}), "activation_args.batchnorm",
     "not one of eval, per_sample"),
    ("unknown_label_arg", lambda c: c.update(label_args={"strictmask": "yes"}), "label_args.strictmask",
     "did you mean 'strict_mask'?"),
    ("repair_layer_unknown", lambda c: c["repair"]["layer_sets"].update(mlp=["fc4", "fc1+fc5"]),
     "repair.layer_sets.mlp[1]", "mlp has no nn.Linear layer 'fc5'"),
    ("repair_layer_sets_arch", lambda c: c["repair"]["layer_sets"].update(mpl=["fc4"]), "repair.layer_sets.mpl",
     "did you mean 'mlp'?"),
    ("repair_method_unknown", lambda c: c["repair"].update(methods=["kfac", "kfca"]), "repair.methods",
     "did you mean 'kfac'?"),
    ("repair_rho_zero", lambda c: c["repair"].update(rhos=[1.0, 0.0]), "repair.rhos", "expected a fraction in (0, 1]"),
    ("repair_fisher", lambda c: c["repair"].update(fisher="exakt"), "repair.fisher", "did you mean 'exact'?"),
    ("repair_key", lambda c: c["repair"].update(rho=[0.5]), "repair.rho", "did you mean 'rhos'?"),
    ("device", lambda c: c.update(device="gpu"), "device", "unknown device 'gpu'"),
    ("figure_unknown", lambda c: c["figures"].update(build=["fig3", "fig15"]), "figures.build[1]",
     "unknown figure 'fig15'"),
    ("probe_family_unknown", lambda c: c.update(probes={"families": ["masc", "lda", "svm"]}), "probes.families",
     "'svm'"),
    ("fit_labels_unknown", lambda c: c.update(probes={"fit_labels": ["corrupted", "noisy"]}), "probes.fit_labels",
     "'noisy'"),
    ("probes_checkpoints", lambda c: c.update(probes={"checkpoints": "every"}), "probes.checkpoints", "'every'"),
    ("relabel_model_unknown", lambda c: c.update(relabel={"models": ["mlp_digit"]}), "relabel.models[0]",
     "did you mean 'mlp_digits'?"),
    ("relabel_subspaces", lambda c: c.update(relabel={"models": ["mlp_digits"], "subspaces": ["corrupt"]}),
     "relabel.subspaces[0]", "did you mean 'corrupted'?"),
    ("relabel_patience", lambda c: c.update(relabel={"models": ["mlp_digits"], "patience": 0}), "relabel.patience",
     "expected an integer >= 1"),
    ("table_unknown", lambda c: c.update(tables={"build": ["table_mask"]}), "tables.build[0]",
     "did you mean 'table_masc'?"),
    ("table_relabel_without_runs", lambda c: c.update(relabel={"models": []}, tables={"build": ["table_relabel"]}),
     "tables.build", "'relabel.models' is empty"),
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
    ("misspelt_train_arg", lambda c: c["models"]["mlp_digits"]["train_args"].update(lrr=0.1),
     "models.mlp_digits.train_args.lrr': `latentgen train` has no option --lrr (did you mean 'lr'?)"),
    ("variance_above_1", lambda c: c.update(probe_args={"variance": 1.5}), "probe_args.variance"),
    ("repair_layer_unknown", lambda c: c["repair"]["layer_sets"].update(cnn=["fcs.7"]), "repair.layer_sets.cnn[0]"),
]


@pytest.mark.parametrize("name,edit,key,words", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_bad_values_are_refused_naming_the_key(schema, demo, name, edit, key, words):
    with pytest.raises(ConfigError) as err:
        check_config(_edited(demo, edit), schema)
    assert err.value.key == key, str(err.value)
    assert f"config key '{key}'" in str(err.value) and words in str(err.value), str(err.value)


def test_defaults_are_filled_from_the_schema_and_the_registry(schema, demo):
    cfg = _edited(demo, lambda c: (c.pop("grid"), c.pop("threads"), c["models"]["cnn_digits"].pop("train_args"),
                                   c["figures"].pop("build", None)))
    resolved = check_config(cfg, schema)
    assert resolved["models"]["cnn_digits"]["grid"] == dict(registry.GRID_DEFAULT)
    assert resolved["models"]["cnn_digits"]["train_args"] == {} and resolved["models"]["cnn_digits"]["probe_final"] is False
    assert resolved["threads"]["train"] == schema["properties"]["threads"]["properties"]["train"]["default"]
    from latentgen.paper.figures import FIGURES

    assert resolved["figures"]["build"] == list(FIGURES)
    model_grid = check_config(_edited(demo, lambda c: c["models"]["mlp_digits"].update(grid={"step": 7})), schema)
    assert model_grid["models"]["mlp_digits"]["grid"] == {**demo["grid"], "step": 7}  # model > config > registry
    assert cfg == _edited(cfg, lambda c: None)  # the input is not modified


def test_fisher_true_is_a_deprecated_alias_of_exact(schema, demo, capsys):
    for spelling in (True, "true"):
        resolved = check_config(_edited(demo, lambda c: c["repair"].update(fisher=spelling)), schema)
        assert resolved["repair"]["fisher"] == "exact"
        assert "'true' is deprecated, spell it 'exact'" in capsys.readouterr().err


def test_options_become_the_commands_own_command_line(schema, demo):
    from latentgen.options import command_parser
    from latentgen.workflow.config import check_command_options, command_line

    line = command_line("probe", {"variance": 0.9, "sign": "class", "no_transfer": True})
    assert line == "--variance 0.9 --sign class --no-transfer"
    args = command_parser("probe").parse_args(["--activations", "a.h5", "--out", "o.csv", *line.split()])
    assert (args.variance, args.sign, args.no_transfer) == (0.9, "class", True)
    assert command_line("repair", {"rhos": [1.0, 0.5], "fisher": "exact"}) == "--rhos 1.0 0.5 --fisher exact"
    assert command_line("train", {"model_options": {"pool_stride": 1}, "shuffle": False}) == \
        """--model-options '{"pool_stride": 1}' --shuffle false"""
    # a --x/--no-x pair (train's CUDA graph: default on a GPU for some architectures) says both ways
    for value, flag in ((True, "--cuda-graph"), (False, "--no-cuda-graph")):
        assert command_line("train", {"cuda_graph": value}) == flag
        assert check_command_options("train", {"cuda_graph": value}, "train_args") == {"cuda_graph": value}
        assert command_parser("train").parse_args(["--arch", "mlp", "--dataset", "mnist", "--out", "o", "--run", "1",
                                                   "--corruption", "0",
                                                   flag]).cuda_graph is value


def test_a_cuda_graph_on_a_cpu_device_is_refused_before_any_job(schema, demo):
    bad = _edited(demo, lambda c: (c.update(device="cpu"),
                                   c["models"][next(iter(c["models"]))].update(train_args={"cuda_graph": True})))
    with pytest.raises(ConfigError, match=r"'models\.\w+\.train_args\.cuda_graph': true needs a CUDA device"):
        check_config(bad, schema)
    off = _edited(demo, lambda c: (c.update(device="cpu"),
                                   c["models"][next(iter(c["models"]))].update(train_args={"cuda_graph": False})))
    assert next(iter(check_config(off, schema)["models"].values()))["train_args"] == {"cuda_graph": False}


def test_checking_a_config_imports_no_heavy_library(repo_root):
    """The Snakefile checks the config at parse time (once per cluster job too): no torch."""
    code = ("import sys, yaml; from latentgen.workflow.config import check_config; "
            f"check_config(yaml.safe_load(open({str(repo_root / 'config.yaml')!r})), "
            f"{str(repo_root / 'workflow/schemas/config.schema.yaml')!r}); "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'sklearn', 'h5py', 'matplotlib', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # nine Snakemake start-ups
def test_bad_configs_are_refused_before_any_job_runs(tmp_path, demo, repo_root):
    procs = []
    for i, (name, edit, expect) in enumerate(WORKFLOW_CASES):
        cfg = _edited(demo, edit)
        work = tmp_path / name
        work.mkdir()
        cfg["outdir"] = str(work / "results")
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        # a real run or a dry run: nothing may start
        cmd = [*SNAKEMAKE, "-s", str(repo_root / "Snakefile"), "-d", str(work), "--configfile",
               str(work / "config.yaml"), "--cores", "1", *(["-n"] if i % 2 else [])]  # -n refuses too
        procs.append((name, expect, work, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                           text=True)))
    for name, expect, work, proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, f"{name}: accepted\n{output}"
        assert expect in output, f"{name}: message does not name {expect!r}:\n{output}"
        assert not (work / "results").exists(), f"{name}: a job ran"


def test_a_bare_yaml_true_label_set_is_the_word(schema, demo):
    cfg = _edited(demo, lambda c: c.update(relabel={"models": ["mlp_digits"], "subspaces": ["corrupted", True]},
                                           probes={"fit_labels": ["corrupted", True]}))
    resolved = check_config(cfg, schema)
    assert resolved["relabel"]["subspaces"] == ["corrupted", "true"]
    assert resolved["probes"]["fit_labels"] == ["corrupted", "true"]
    assert resolved["tables"]["build"] == ["table_masc", "table_baselines", "table_relabel", "table_sensitivity"]
    without = check_config(_edited(demo, lambda c: c.pop("relabel", None)), schema)
    assert "table_relabel" not in without["tables"]["build"]  # only tables whose inputs the config builds


def test_config_relabels_the_authors_model_set(repo_root):
    """Their retrain script (pytorch_retrain_early.py) takes the CNN and AlexNet models, not the MLP."""
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    pairs = {(config["models"][n]["arch"], config["models"][n]["dataset"]) for n in config["relabel"]["models"]}
    assert pairs == {("cnn", "mnist"), ("cnn", "fashion_mnist"), ("cnn", "cifar10"), ("alexnet", "cifar100"),
                     ("alexnet", "tiny_imagenet")}
