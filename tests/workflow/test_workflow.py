"""The Snakemake workflow for real: a small configuration derived from the demo builds
Figures 1–3 end to end (one shared run), plus dry runs of the full configuration, the
linter, and a job killed mid-way."""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from latentgen import provenance

pytestmark = pytest.mark.workflow

CORES = 2
LAST_HIDDEN = {"mlp": "fc4", "cnn": "fc3"}


def snakemake(repo_root, workdir, *args, configfile=None, timeout=600, env=None, **kw):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(workdir), *args]
    if configfile is not None:  # last: --configfile takes every word that follows
        cmd += ["--configfile", str(configfile)]
    env = {**os.environ, "LATENTGEN_PREFORK_DIR": str(Path(workdir) / ".prefork"), "LATENTGEN_PREFORK_IDLE": "15",
           **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def small_config(repo_root, workdir, **changes):
    demo = yaml.safe_load((repo_root / "profiles" / "demo" / "demo.yaml").read_text())
    cfg = copy.deepcopy(demo)
    cfg.update(outdir=str(Path(workdir) / "results"), corruptions=[0.2, 0.6], runs=[1, 2],
               grid={"dense_until": 2, "dense_step": 2, "step": 2})
    for model in cfg["models"].values():
        model["max_epochs"] = 4
    cfg["figures"] = {"build": ["fig1", "fig2", "fig3"], "groups": {"main": ["mlp_digits", "cnn_digits"]},
                      "model_epoch0": "repeat"}
    cfg.update(changes)
    path = Path(workdir) / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def on_grid(epoch, grid):
    if epoch in (0, 1):
        return True
    if epoch <= grid["dense_until"]:
        return epoch % grid["dense_step"] == 0
    return (epoch - grid["dense_until"]) % grid["step"] == 0


@pytest.fixture(scope="module")
def demo_run(repo_root, tmp_path_factory):
    """One real run of the small configuration."""
    work = tmp_path_factory.mktemp("workflow")
    cfg, configfile = small_config(repo_root, work)
    start = time.monotonic()
    result = snakemake(repo_root, work, "--cores", str(CORES), "--max-jobs-per-timespan", "500/5s",
                       configfile=configfile)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    print(f"\nsmall workflow run: {seconds:.1f} s")
    finished = collections.Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", result.stdout + result.stderr))
    return {"work": work, "cfg": cfg, "out": Path(cfg["outdir"]), "configfile": configfile, "seconds": seconds,
            "finished": finished}


def checked(repo_root, configfile) -> dict:
    from latentgen.workflow.config import load_config

    return load_config(configfile, repo_root / "workflow" / "schemas" / "config.schema.yaml")


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_figures_1_to_3_and_their_provenance(demo_run):
    out = demo_run["out"]
    for fig in ("fig1", "fig2", "fig3"):
        assert (out / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"
        frame = pd.read_csv(out / f"{fig}.csv")
        assert list(frame.columns) == ["model", "dataset", "corruption", "run", "epoch", "layer", "probe",
                                       "split", "accuracy"]
        assert frame["accuracy"].between(0, 1).all() and frame["accuracy"].notna().all(), fig
        record = provenance.read_sidecar(out / f"{fig}.json")
        assert record["config_hash"] and record["versions"]
        assert set(record["outputs"]) == {str(out / f"{fig}.pdf"), str(out / f"{fig}.csv")}
        assert provenance.verify_sidecar(out / f"{fig}.json") == []
    for arch in ("mlp", "cnn"):
        for c in demo_run["cfg"]["corruptions"]:
            sidecar = out / "metrics" / arch / "digits" / f"c{c}.json"
            record = provenance.read_sidecar(sidecar)
            assert record["seeds"] == demo_run["cfg"]["seeds"]
            assert provenance.verify_sidecar(sidecar) == []


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_transfer_equals_last_layer_velpic_at_every_checkpoint(demo_run):
    out = demo_run["out"]
    fig2, fig3 = pd.read_csv(out / "fig2.csv"), pd.read_csv(out / "fig3.csv")
    key = ["model", "dataset", "corruption", "run", "epoch"]
    velpic = fig2[(fig2.probe == "velpic") & (fig2.layer == fig2.model.map(LAST_HIDDEN))]
    transfer = fig3[fig3.probe == "transfer"]
    assert (transfer.layer == transfer.model.map(LAST_HIDDEN)).all()
    merged = transfer.merge(velpic, on=key, suffixes=("_transfer", "_velpic"), validate="one_to_one")
    assert len(merged) == len(transfer) == len(velpic) > 0
    assert (merged.accuracy_transfer == merged.accuracy_velpic).all()


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_every_corruption_and_run_has_the_expected_epochs(demo_run):
    out, cfg = demo_run["out"], demo_run["cfg"]
    grid = cfg["grid"]
    fig1 = pd.read_csv(out / "fig1.csv")
    for arch in ("mlp", "cnn"):
        for c in cfg["corruptions"]:
            for run in cfg["runs"]:
                manifest = json.loads((out / "runs" / arch / "digits" / f"c{c}" / f"run{run}" / "manifest.json")
                                      .read_text())
                expected = sorted(e for e in manifest["epochs"] if on_grid(e, grid))
                assert expected[:4] == [0, 1, 2, 4][:len(expected)]
                probe = pd.read_csv(out / "probes" / arch / "digits" / f"c{c}" / f"run{run}.csv")
                assert sorted(probe.epoch.unique()) == expected
                rows = fig1[(fig1.model == arch) & (fig1.corruption == c) & (fig1.run == run)]
                layers = rows[rows.probe == "masc"]
                shortest = min(
                    len([e for e in json.loads((out / "runs" / arch / "digits" / f"c{c}" / f"run{r}" /
                                                "manifest.json").read_text())["epochs"] if on_grid(e, grid)])
                    for r in cfg["runs"])
                assert sorted(layers.epoch.unique()) == expected[:shortest]
                model = rows[rows.probe == "model"].set_index("epoch")["accuracy"]
                assert model.loc[0] == model.loc[1]  # the authors' plot: epoch 0 repeats epoch 1


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_no_activation_file_is_written_and_one_probe_job_per_run(demo_run):
    out, cfg = demo_run["out"], demo_run["cfg"]
    assert not list(out.rglob("*.h5")), "activations are held in memory: no file"
    runs = len(cfg["models"]) * len(cfg["corruptions"]) * len(cfg["runs"])
    assert demo_run["finished"]["probe_run"] == demo_run["finished"]["train"] == runs
    assert not {"activations", "probe", "run_probes"} & set(demo_run["finished"])


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_the_plan_lists_the_jobs_snakemake_ran(demo_run, repo_root):
    """latentgen.workflow.plan, with the runs' epochs read from their manifests, against Snakemake's log."""
    from latentgen.workflow.plan import JobPlan

    plan = JobPlan(checked(repo_root, demo_run["configfile"]))
    assert plan.counts() == demo_run["finished"]
    assert plan.counts()["repair"] > 0


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_repair_stage_builds_its_figure_and_summary(demo_run):
    out, cfg = demo_run["out"], demo_run["cfg"]
    assert (out / "fig_repair.pdf").read_bytes()[:5] == b"%PDF-"
    summary = pd.read_csv(out / "repair_summary.csv")
    table = pd.concat(pd.read_csv(f) for f in sorted((out / "repair").rglob("epoch*.csv"))
                      if not f.name.endswith(".layers.csv"))
    runs = {(m["arch"], c, r) for m in cfg["models"].values() for c in cfg["corruptions"] for r in cfg["runs"]}
    assert {(a, float(c), int(r)) for a, c, r in table[["model", "corruption", "run"]].itertuples(index=False)} == \
        {(a, float(c), int(r)) for a, c, r in runs}
    assert set(cfg["repair"]["rhos"]) <= set(table.loc[table.repair == "kfac", "rho"].round(6))
    assert {"reference", "a_priori", "selected_on_split", "best_on_test"} <= set(summary.selection)
    kfac = summary[(summary.repair == "kfac") & summary.run.notna()]
    best = kfac[kfac.selection == "best_on_test"].set_index(["model", "corruption", "run"])["test_acc"]
    split = kfac[kfac.selection == "selected_on_split"].set_index(["model", "corruption", "run"])["test_acc"]
    assert (best >= split.reindex(best.index)).all()  # the oracle is an upper bound of the honest choice


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_nothing_left_to_do_after_the_run(demo_run, repo_root):
    dry = snakemake(repo_root, demo_run["work"], "-n", configfile=demo_run["configfile"])
    assert dry.returncode == 0, dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_estimate_projects_the_run_within_a_factor_1_5(demo_run, repo_root):
    """`latentgen estimate` of this configuration, timed on this machine right after the run,
    against the run's measured wall time (issue 12; the whole demo is compared in the README)."""
    from latentgen.workflow.estimate import estimate

    summary = estimate(demo_run["configfile"], repo_root / "workflow" / "schemas" / "config.schema.yaml",
                       cores=CORES, device="cpu")
    projected, measured = summary["projected_wall_seconds"], demo_run["seconds"]
    print(f"\nestimate: {projected:.1f} s projected for {summary['jobs']} jobs, {measured:.1f} s measured")
    assert measured / 1.5 <= projected <= measured * 1.5


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_report_collects_the_figures_with_captions(demo_run, repo_root):
    report = demo_run["work"] / "report.zip"
    made = snakemake(repo_root, demo_run["work"], "--report", str(report), configfile=demo_run["configfile"])
    assert made.returncode == 0, made.stderr[-3000:]
    import zipfile

    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        for fig in ("fig1", "fig2", "fig3"):
            assert any(name.endswith(f"{fig}.pdf") for name in names), names
        text = "".join(archive.read(n).decode(errors="ignore") for n in names if n.endswith((".html", ".js")))
    assert "VeLPIC weight transfer" in text  # fig3's caption


def test_repair_over_the_checkpoint_grid(repo_root, tmp_path):
    """checkpoints: grid repairs every probed checkpoint and plots the selected edit over training."""
    cfg, configfile = small_config(repo_root, tmp_path, corruptions=[0.6], runs=[1])
    cfg["models"] = {"mlp_digits": cfg["models"]["mlp_digits"]}
    cfg["figures"] = {"build": [], "groups": {"main": ["mlp_digits"]}, "model_epoch0": "repeat"}
    cfg["repair"] = {"models": ["mlp_digits"], "checkpoints": "grid", "rhos": [1.0, 0.8], "methods": ["kfac"],
                     "layer_sets": {"mlp": ["fc4", "fc1+fc4"]}}
    cfg["relabel"], cfg["tables"] = {"models": []}, {"build": [], "claims": False}
    configfile.write_text(yaml.safe_dump(cfg))
    result = snakemake(repo_root, tmp_path, "--cores", str(CORES), configfile=configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    results = Path(cfg["outdir"])
    run = results / "runs" / "mlp" / "digits" / "c0.6" / "run1"
    epochs = json.loads((run / "manifest.json").read_text())["epochs"]
    expected = [e for e in epochs if on_grid(e, cfg["grid"])]
    folder = results / "repair" / "mlp" / "digits" / "c0.6" / "run1"
    assert sorted(int(p.stem[5:]) for p in folder.glob("epoch*[0-9].csv")) == expected == [0, 1, 2, 4]
    stats = pd.read_csv(results / "fig_repair_epochs.csv")
    assert (results / "fig_repair_epochs.pdf").read_bytes()[:5] == b"%PDF-"
    for epoch in expected:
        table = pd.read_csv(folder / f"epoch{epoch}.csv")
        at = stats[stats["epoch"] == epoch].set_index("line")
        none = table[table["repair"] == "none"].iloc[0]
        assert at.loc["unedited", "test_acc_heldout"] == pytest.approx(none["test_acc_heldout"])
        swept = table[table["repair"] == "kfac"]
        best = swept[swept["test_acc_select"] == swept["test_acc_select"].max()]
        chosen = best.sort_values("rho", ascending=False, kind="stable").iloc[0]  # ties: the larger rho
        assert at.loc["kfac (selected)", "test_acc_heldout"] == pytest.approx(chosen["test_acc_heldout"])
    assert provenance.verify_sidecar(results / "fig_repair_epochs.json") == []


def _job_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_dry_run_of_the_full_config_lists_144_trainings_108_probed_on_the_grid(repo_root, tmp_path):
    start = time.monotonic()
    dry = snakemake(repo_root, tmp_path, "-n", "--quiet", "rules", configfile=repo_root / "config.yaml")
    seconds = time.monotonic() - start
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = _job_counts(dry.stdout + dry.stderr)
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    n_models, n_corruptions, n_runs = len(cfg["models"]), len(cfg["corruptions"]), len(cfg["runs"])
    tmlr = {n for group in cfg["figures"]["groups"].values() for n in group}  # the TMLR figures' models
    assert n_models * n_corruptions * n_runs == 144 and len(tmlr) * n_corruptions * n_runs == 108
    assert counts["train"] == 144
    assert counts["probe_run"] == 144  # one per run: along the grid for the TMLR figures' 108, final for the rest
    assert counts["metrics"] == len(tmlr) * n_corruptions
    assert counts["relabel"] == len(cfg["relabel"]["models"]) * n_corruptions * n_runs * 2
    assert all(counts[name] == 1 for name in ("table_masc", "table_baselines", "table_relabel", "table_sensitivity",
                                                "claims"))
    assert counts["download"] == len({m["dataset"] for m in cfg["models"].values()})
    assert all(counts[f"fig{i}"] == 1 for i in range(1, 15))
    # the plan lists every job the dry run shows (all of them but the repair jobs: those wait for training)
    from latentgen.workflow.plan import JobPlan

    planned = JobPlan(checked(repo_root, repo_root / "config.yaml")).counts()
    assert planned["repair"] == 0 and "repair" not in counts
    assert {rule: n for rule, n in counts.items() if rule != "total"} == {r: n for r, n in planned.items() if n}
    print(f"\nsnakemake -n of config.yaml: {seconds:.1f} s, {counts.get('total')} jobs before the checkpoints")


def test_one_figure_target_runs_only_what_it_needs(repo_root, tmp_path):
    dry = snakemake(repo_root, tmp_path, "results/fig3.pdf", "-n", "--quiet", "rules",
                    configfile=repo_root / "config.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = _job_counts(dry.stdout + dry.stderr)
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    main = cfg["figures"]["groups"]["main"]
    rows = [c for c in cfg["corruptions"] if c in (0.2, 0.4, 0.6, 0.8)]
    assert counts["train"] == len(main) * len(rows) * len(cfg["runs"])
    assert counts["metrics"] == len(main) * len(rows)
    assert counts["fig3"] == 1
    assert not any(f"fig{i}" in counts for i in range(1, 15) if i != 3)


def test_gpu_jobs_take_a_gpu_or_their_share_and_a_slot_only_on_cuda(repo_root, tmp_path):
    # config.yaml with the MLP's runs sharing a GPU 4 ways: its training holds 6 of a GPU's 24 units,
    # its probe job (whole-GPU rule) all 24; on the CPU neither holds any, and no command is wrapped
    target = "results/probes/mlp/mnist/c0.2/run1.csv"
    for device, train_units, probe_units in (("cuda", 6, 24), ("cpu", 0, 0)):
        dry = snakemake(repo_root, tmp_path, target, "-n", "-p", "--resources", "gpu=1", "--config", f"device={device}",
                        configfile=_with_mlp_runs_per_gpu(repo_root, tmp_path, 4))
        assert dry.returncode == 0, dry.stderr[-3000:]
        seen = set()
        for block in re.split(r"\n(?=[ \t]*\[)", dry.stdout + dry.stderr):  # one block per job, from its [date]
            m = re.search(r"^[ \t]*(?:rule|checkpoint) (\w+):", block, flags=re.M)
            if not m or m.group(1) not in ("train", "probe_run", "download", "corrupt"):
                continue
            rule = m.group(1)
            seen.add(rule)
            resources = re.search(r"resources: (.*)", block).group(1)
            units = {"train": train_units, "probe_run": probe_units}.get(rule, 0)
            held = re.search(r"\bgpu_units=(\d+)", resources)
            assert (int(held.group(1)) if held else 0) == units, (device, rule, resources)
            share = {"train": 4, "probe_run": 1}.get(rule)
            if device == "cuda" and share:
                assert f"latentgen.workflow.gpu_slots --jobs-per-gpu {share} -- python" in block, (device, rule)
            else:
                assert "latentgen.workflow.gpu_slots" not in block, (device, rule)
        assert {"train", "probe_run"} <= seen, seen


def _with_mlp_runs_per_gpu(repo_root, tmp_path, k):
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    cfg["models"]["mlp_mnist"]["runs_per_gpu"] = k
    path = tmp_path / "config-shared.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_share_that_does_not_divide_a_gpu_stops_the_workflow_before_any_job(repo_root, tmp_path):
    bad = _with_mlp_runs_per_gpu(repo_root, tmp_path, 5)
    dry = snakemake(repo_root, tmp_path, "-n", configfile=bad)
    said = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "models.mlp_mnist.runs_per_gpu" in said, said[-2000:]
    env_bad = snakemake(repo_root, tmp_path, "-n", "--config", "device=cuda", configfile=repo_root / "config.yaml",
                        env={"LATENTGEN_JOBS_PER_GPU": "5"})
    said = env_bad.stdout + env_bad.stderr
    assert env_bad.returncode != 0 and "LATENTGEN_JOBS_PER_GPU must be one of" in said, said[-2000:]


def test_the_demo_config_runs_on_its_own(repo_root, tmp_path):
    with_profile = snakemake(repo_root, tmp_path, "--profile", str(repo_root / "profiles" / "demo"), "-n",
                             "--quiet", "rules")
    alone = snakemake(repo_root, tmp_path, "-n", "--quiet", "rules", "--cores", "2",
                      configfile=repo_root / "profiles" / "demo" / "demo.yaml")
    assert with_profile.returncode == 0 and alone.returncode == 0, with_profile.stderr + alone.stderr
    counts = _job_counts(alone.stdout + alone.stderr)
    assert counts == _job_counts(with_profile.stdout + with_profile.stderr)
    demo = yaml.safe_load((repo_root / "profiles" / "demo" / "demo.yaml").read_text())
    assert counts["train"] == len(demo["models"]) * len(demo["corruptions"]) * len(demo["runs"])
    assert all(counts[f"fig{i}"] == 1 for i in range(1, 15))


def test_lint_is_clean(repo_root, tmp_path):
    lint = snakemake(repo_root, repo_root, "--lint", configfile=repo_root / "config.yaml")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr


@pytest.mark.slow
def test_a_job_killed_mid_way_is_not_taken_as_complete_and_resumes(repo_root, tmp_path):
    cfg, configfile = small_config(repo_root, tmp_path, corruptions=[1.0], runs=[1])
    cfg["models"] = {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 400}}
    cfg["figures"] = {"build": ["fig13"], "groups": {"main": ["mlp_digits"]}}
    cfg["repair"] = {"models": []}
    cfg["relabel"], cfg["tables"] = {"models": []}, {"build": [], "claims": False}
    configfile.write_text(yaml.safe_dump(cfg))
    run_dir = Path(cfg["outdir"]) / "runs" / "mlp" / "digits" / "c1.0" / "run1"
    log = run_dir / "train_log.csv"

    def start(*extra):
        cmd = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path),
               "--configfile", str(configfile), "--cores", "1", *extra]
        env = {**os.environ, "LATENTGEN_PREFORK_DIR": str(tmp_path / ".prefork"), "LATENTGEN_PREFORK_IDLE": "15"}
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def wait_rows(n, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if log.exists() and len(log.read_text().splitlines()) > n:
                return len(log.read_text().splitlines()) - 1
            time.sleep(0.05)
        raise AssertionError(f"training never logged {n} epochs")

    proc = start()
    wait_rows(3)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its job die at once, no cleanup
    proc.wait(30)
    time.sleep(0.5)
    assert not (run_dir / "manifest.json").exists()
    assert (run_dir / "resume.pt").exists() and (run_dir / "checkpoints" / "epoch0.pt").exists()

    unlocked = snakemake(repo_root, tmp_path, "--unlock", configfile=configfile)  # the kill left the lock
    assert unlocked.returncode == 0, unlocked.stderr
    refused = snakemake(repo_root, tmp_path, "-n", configfile=configfile)
    assert refused.returncode != 0 and "incomplete" in (refused.stdout + refused.stderr).lower()
    planned = snakemake(repo_root, tmp_path, "-n", "--rerun-incomplete", "--quiet", "rules", configfile=configfile)
    assert _job_counts(planned.stdout + planned.stderr).get("train") == 1

    # the rerun resumes: the epoch-0 checkpoint survives (it is not a declared output) untouched
    first = (run_dir / "checkpoints" / "epoch0.pt").stat().st_mtime_ns
    epochs_before = len(log.read_text().splitlines()) - 1
    proc = start("--rerun-incomplete")
    try:
        wait_rows(epochs_before + 2)
        assert (run_dir / "checkpoints" / "epoch0.pt").stat().st_mtime_ns == first
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.mark.slow  # uses the module's one real workflow run (about a minute)
def test_the_2025_paper_targets(demo_run):
    """Final checkpoints probed with every family on both label sets; relabel-and-retrain per run and
    subspaces; the tables recomputed from the probe rows; claims.csv with a verdict per claim."""
    from latentgen.paper import table_inputs, tables

    out, cfg = demo_run["out"], demo_run["cfg"]
    finals = []
    for model in cfg["models"].values():
        for c in cfg["corruptions"]:
            for run in cfg["runs"]:
                folder = out / "runs" / model["arch"] / model["dataset"] / f"c{c}" / f"run{run}"
                final = json.loads((folder / "manifest.json").read_text())["final_epoch"]
                probes = out / "probes" / model["arch"] / model["dataset"] / f"c{c}" / f"run{run}.final.csv"
                finals.append(probes)
                rows = pd.read_csv(probes)
                assert set(rows.epoch) == {final}
                assert {"logistic", "ncm", "knn", "lda", "qda", "masc_1pc", "masc_var0.25", "transfer"} <= set(rows.probe)
                assert set(rows.fit_labels) == {"corrupted", "true"}
                for subspaces in ("corrupted", "true"):
                    result = out / "relabel" / model["arch"] / model["dataset"] / f"c{c}" / f"run{run}" / subspaces
                    assert len(pd.read_csv(result / "result.csv")) == 1
                    assert provenance.verify_sidecar(result / "result.json") == []
    table = pd.read_csv(out / "table_masc.csv")
    assert len(table) == len(cfg["models"]) * len(cfg["corruptions"])
    final = tables.final_rows(table_inputs.read_probe_tables(finals))
    for row in table.itertuples():
        best = tables.best_layers(final, "masc", "true")
        best = best[(best.model == row.model) & (best.corruption == row.corruption)]
        assert (row.masc_true, row.masc_true_layer) == (best.accuracy.iloc[0], best.layer.iloc[0])
    for name in ("table_masc", "table_baselines", "table_relabel", "table_sensitivity"):
        assert (out / f"{name}.tex").read_text().count("\\toprule") == 1 and (out / f"{name}.md").is_file()
        assert provenance.verify_sidecar(out / f"{name}.json") == []
    assert (out / "fig_table_masc.pdf").read_bytes()[:5] == b"%PDF-"
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims.verdict) <= {"holds", "does not hold", "not evaluable"} and len(claims) >= 10
