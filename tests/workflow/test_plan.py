"""latentgen.workflow.plan: the workflow's jobs from the configuration (compared with Snakemake itself in
tests/workflow/test_workflow.py: the small run's finished jobs and config.yaml's dry run)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from latentgen.workflow.config import ConfigError, load_config
from latentgen.workflow.plan import GPU_RULES, JobPlan


@pytest.fixture(scope="module")
def schema(repo_root):
    return repo_root / "workflow" / "schemas" / "config.schema.yaml"


def _load(tmp_path, schema, cfg) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path, schema)


@pytest.fixture
def demo(repo_root):
    return yaml.safe_load((repo_root / "profiles" / "demo" / "demo.yaml").read_text())


def _epochs(saved, final):
    return lambda plan, name, corruption, run: (saved, final)


def test_the_profiles_gpu_rules_are_the_plans(repo_root):
    for profile in (repo_root / "profiles" / "slurm" / "config.yaml", repo_root / "tests" / "fixtures" / "slurm-profile" / "config.yaml"):
        resources = yaml.safe_load(profile.read_text())["set-resources"]
        assert {rule for rule, values in resources.items() if values.get("gpu")} == GPU_RULES, profile


def test_demo_jobs_per_rule(tmp_path, schema, demo):
    cfg = _load(tmp_path, schema, demo)
    plan = JobPlan(cfg, epochs=_epochs([0, 1, 2, 4, 16, 28, 40], 40))
    runs = len(demo["models"]) * len(demo["corruptions"]) * len(demo["runs"])  # 24
    counts = plan.counts()
    assert counts["train"] == counts["probe_run"] == runs
    assert counts["repair"] == runs  # the final checkpoint of every run
    assert counts["relabel"] == runs * 2  # both kinds of subspaces
    assert counts["metrics"] == len(demo["models"]) * len(demo["corruptions"])
    assert counts["download"] == 1 and counts["corrupt"] == 6 and counts["all"] == 1
    assert sum(counts.values()) == 160  # the demo was 496 jobs with a job pair per checkpoint
    # not trained yet: the repair jobs wait for the runs' epochs
    assert JobPlan(cfg, epochs=lambda *a: None).counts()["repair"] == 0


def test_a_model_only_the_tables_read_is_probed_at_its_final_checkpoint(tmp_path, schema, demo):
    cfg = copy.deepcopy(demo)
    cfg["figures"]["groups"] = {"main": ["mlp_digits"], "extra": ["mlp_digits"]}
    cfg["repair"] = {"models": []}
    plan = JobPlan(_load(tmp_path, schema, cfg), epochs=_epochs([0, 1, 2, 4, 16], 16))
    assert plan.tracks_grid("mlp_digits") and not plan.tracks_grid("cnn_digits")
    assert plan.probe_run_options("cnn_digits", "0.4", "digits")["checkpoints"] == "final"
    assert plan.probe_run_options("mlp_digits", "0.4", "digits")["checkpoints"] == "grid"
    jobs = plan.jobs()
    metrics = {j.wildcards["arch"] for j in jobs if j.rule == "metrics"}
    assert metrics == {"mlp"}
    assert sum(j.rule == "probe_run" for j in jobs) == 24  # the tables need the cnn's final tables too


def test_probe_run_options_carry_the_2025_families_and_the_clean_models_label_files(tmp_path, schema, demo):
    plan = JobPlan(_load(tmp_path, schema, demo))
    clean = plan.probe_run_options("mlp_digits", "0.0", "digits")
    assert clean["final_families"] and clean["final_fit_labels"] == ["corrupted", "true"]
    assert [x.split("=")[0] for x in clean["final_extra_labels"]] == ["0.2", "0.4", "0.6", "0.8", "1.0"]
    assert clean["final_extra_labels"][0].endswith("labels/digits/c0.2.npz")
    assert "final_extra_labels" not in plan.probe_run_options("mlp_digits", "0.4", "digits")
    grid = copy.deepcopy(demo)
    grid["probes"] = {"checkpoints": "grid"}
    options = JobPlan(_load(tmp_path, schema, grid)).probe_run_options("mlp_digits", "0.0", "digits")
    assert "families" in options and "extra_labels" in options and "final_families" not in options


def test_activation_args_reach_the_probe_jobs(tmp_path, schema, demo):
    cfg = copy.deepcopy(demo)
    cfg["activation_args"] = {"batch_size": 64, "batchnorm": "per_sample"}
    options = JobPlan(_load(tmp_path, schema, cfg)).probe_run_options("cnn_digits", "0.2", "digits")
    assert options["activation_batch_size"] == 64 and options["batchnorm"] == "per_sample"


def test_every_job_can_run_after_its_dependencies(tmp_path, schema, demo):
    jobs = JobPlan(_load(tmp_path, schema, demo), epochs=_epochs([0, 40], 40)).jobs()
    for i, job in enumerate(jobs):
        assert all(d < i for d in job.deps), job
    train = next(i for i, j in enumerate(jobs) if j.rule == "train")
    probe = next(j for j in jobs if j.rule == "probe_run" and j.wildcards == jobs[train].wildcards)
    assert train in probe.deps and probe.priority > 0


@pytest.mark.parametrize("value", ["kept", True, ""])
def test_a_bad_activations_value_is_refused_naming_the_key(tmp_path, schema, demo, value):
    cfg = copy.deepcopy(demo)
    cfg["activations"] = value
    with pytest.raises(ConfigError, match="activations"):
        _load(tmp_path, schema, cfg)


def test_the_plan_imports_no_torch():
    code = "import sys, latentgen.workflow.plan; sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_gpu_shares_per_model_and_rule(tmp_path, schema, demo):
    cfg = copy.deepcopy(demo)
    cfg["device"] = "cuda"
    cfg["models"]["mlp_digits"]["runs_per_gpu"] = 4
    plan = JobPlan(_load(tmp_path, schema, cfg), epochs=_epochs([0, 1, 2, 4], 4))
    units = {(j.rule, j.model): j.gpu_units for j in plan.jobs() if j.rule in ("train", "probe_run", "metrics")}
    # the MLP's training runs share a GPU 4 ways (6 of its 24 units); every other GPU job holds a whole one
    assert units["train", "mlp_digits"] == 6 and units["train", "cnn_digits"] == 24
    assert units["probe_run", "mlp_digits"] == 24 and units["metrics", "mlp_digits"] == 0
    assert str(plan.gpu_prefix("train", "mlp_digits")) == "python -m latentgen.workflow.gpu_slots --jobs-per-gpu 4 --"
    assert str(plan.gpu_prefix("probe_run", "mlp_digits")).endswith("--jobs-per-gpu 1 --")
    # $LATENTGEN_JOBS_PER_GPU: every GPU job's share
    override = JobPlan(_load(tmp_path, schema, cfg), epochs=_epochs([0, 1, 2, 4], 4), jobs_per_gpu=3)
    assert {j.gpu_units for j in override.jobs() if j.gpu} == {8}
    # on the CPU nothing holds a GPU and no command is wrapped
    cfg["device"] = "cpu"
    cpu = JobPlan(_load(tmp_path, schema, cfg), epochs=_epochs([0, 1, 2, 4], 4))
    assert {j.gpu_units for j in cpu.jobs()} == {0} and cpu.gpu_prefix("train", "mlp_digits") == ""


def test_where_a_job_runs_is_not_a_parameter_snakemake_reruns_for(tmp_path):
    # Snakemake reruns a job whose recorded params changed; the gpu_slots prefix is a param of every GPU
    # job, and a model's new runs_per_gpu must retrain nothing. A real run, then the same with a new share.
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        "import os\n"
        "from latentgen.workflow.gpu_slots import Prefix\n"
        "rule done:\n"
        "    output: 'done.txt'\n"
        "    params: gpu=Prefix(int(os.environ['SHARE'])), other=os.environ['OTHER']\n"
        "    shell: 'echo {params.gpu} > {output}'\n")

    def snakemake(share, other, *args):
        env = {**os.environ, "SHARE": str(share), "OTHER": other}
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(tmp_path),
                               "--cores", "1", *args], capture_output=True, text=True, env=env, timeout=120)

    assert snakemake(4, "a").returncode == 0
    assert (tmp_path / "done.txt").read_text() == "python -m latentgen.workflow.gpu_slots --jobs-per-gpu 4 --\n"
    unchanged = snakemake(2, "a", "-n")
    assert unchanged.returncode == 0 and "Nothing to be done" in unchanged.stdout + unchanged.stderr
    # the check can fail: a builtin param that changes does rerun
    changed = snakemake(2, "b", "-n")
    assert changed.returncode == 0 and "Nothing to be done" not in changed.stdout + changed.stderr
