"""``latentgen estimate``: the plan's arithmetic on a constructed config with injected per-job
times, the scheduling model, a dataset that is not there (timed on random data, flagged), bad
input, and the output formats. The projection against a real workflow run is in
tests/workflow/test_workflow.py (it reuses that module's one shared run)."""

from __future__ import annotations

import csv
import json

import pytest

from latentgen import registry
from latentgen.workflow import cost_measurement as M
from latentgen.workflow import estimate as E
from latentgen.__main__ import main
from latentgen.workflow.config import check_config, load_config

SCHEMA = "workflow/schemas/config.schema.yaml"


def make_config(repo_root, tmp_path, **changes) -> dict:
    cfg = {
        "outdir": str(tmp_path / "results"), "data_root": str(tmp_path / "data"), "device": "cpu",
        "corruptions": [0.2, 0.6], "runs": [1, 2],
        "grid": {"dense_until": 2, "dense_step": 2, "step": 2},
        "threads": {"train": 1, "activations": 1, "probe": 1, "repair": 1},
        "models": {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 4}},
        "figures": {"build": ["fig1", "fig2"], "groups": {"main": ["mlp_digits"]}},
    }
    cfg.update(changes)
    return check_config(cfg, repo_root / SCHEMA)


COST = M.ModelCost(train_start=1.0, train_epoch=2.0, checkpoint=0.5, forward=3.0, probe=5.0, repair=7.0,
                   activation_bytes=1000)
NO_SMALL = {k: 0.0 for k in E.SMALL_JOBS}


def test_expected_epochs_follow_the_spec_table_and_the_cap():
    assert E.expected_epochs("mlp", "mnist", 0.2, 1, None) == (298, "SPEC §4")
    assert E.expected_epochs("mlp", "mnist", 0.0, 3, None) == (58, "SPEC §4")  # run 1's number for every run
    assert E.expected_epochs("mlp", "mnist", 0.2, 1, 100) == (100, "max_epochs")  # capped by the config
    assert E.expected_epochs("cnn", "mnist", 0.0, 1, None) == (41, "SPEC §4")
    assert E.expected_epochs("alexnet", "tiny_imagenet", 0.0, 2, None) == (179, "SPEC §4")  # index 178 + 1
    assert E.expected_epochs("alexnet", "tiny_imagenet", 0.4, 5, None) == (round((264 + 241 + 273) / 3), "SPEC §4")
    assert E.expected_epochs("cnn", "cifar10", 0.2, 1, None) == (500, "cap")  # not recorded
    assert E.expected_epochs("mlp", "mnist", 0.3, 1, None) == (500, "cap")  # a degree the authors did not run
    assert E.expected_epochs("mlp", "digits", 0.2, 1, 40) == (40, "max_epochs")


def test_plan_and_schedule_on_known_per_job_times(repo_root, tmp_path):
    cfg = make_config(repo_root, tmp_path)
    jobs = E.plan(cfg, {"mlp_digits": COST}, cores=1, job_overhead=0.0, small=NO_SMALL)
    # the jobs of latentgen.workflow.plan: 4 epochs, on the grid 0, 1, 2, 4 (the final one is on the grid)
    count = {}
    for job in jobs:
        count[job.stage] = count.get(job.stage, 0) + 1
    assert count == {"download": 1, "corrupt": 2, "train": 4, "probe_run": 4, "metrics": 2, "figure": 2,
                     "table": len(cfg["tables"]["build"]) + 1}  # the 2025 tables and the claims (1 s each here)
    train = 1.0 + 4 * 2.0 + 4 * 0.5
    assert all(j.seconds == train for j in jobs if j.stage == "train")
    probe_run = 4 * (3.0 + 5.0)  # one job per run: forward passes and probes of its 4 checkpoints
    assert all(j.seconds == probe_run for j in jobs if j.stage == "probe_run")
    total = 4 * train + 4 * probe_run
    assert sum(j.seconds for j in jobs) == pytest.approx(total)
    assert E.simulate(jobs, cores=1) == pytest.approx(total)  # one core: everything in sequence
    # many cores: the longest chain, train -> probe_run (the small jobs cost nothing here)
    assert E.simulate(jobs, cores=64) == pytest.approx(train + probe_run)
    two = E.simulate(jobs, cores=2)
    assert total / 2 <= two <= total / 2 + train
    summary = E.summarise(cfg, {"mlp_digits": COST}, jobs, cores=1, gpus=0)
    assert summary["jobs"] == len(jobs) == 19
    assert summary["device_hours"] == pytest.approx(total / 3600)
    assert summary["projected_wall_seconds"] == pytest.approx(E.WORKFLOW_START_S + total)
    rows = {(r["model"], r["stage"]): r for r in summary["rows"]}
    assert rows["mlp_digits", "probe_run"]["jobs"] == 4 and rows["mlp_digits", "probe_run"]["seconds_per_job"] == 32
    assert rows["mlp_digits", "probe_run"]["activations_gb"] == 1000 / 1e9


def test_the_input_layer_is_fit_once_per_probe_job_and_the_final_checkpoint_priced_apart(repo_root, tmp_path):
    cfg = make_config(repo_root, tmp_path, corruptions=[0.0, 0.6], runs=[1])
    cost = M.ModelCost(1.0, 2.0, 0.5, forward=3.0, probe=5.0, probe_final=11.0, probe_final_labels=2.0,
                       probe_input=1.0, load=0.25)
    jobs = {j.seconds for j in E.plan(cfg, {"mlp_digits": cost}, cores=1, job_overhead=0.0, small=NO_SMALL)
            if j.stage == "probe_run"}
    # epochs 0, 1, 2 tracked (their input rows reused after the first), the final 4 with the 2025 families;
    # the clean model also fits its subspaces on the other degree's labels (one extra label set)
    base = 0.25 + 3 * (3.0 + 5.0) - 3 * 1.0 + 3.0 + 11.0
    assert jobs == {base, base + 2.0}


def test_a_model_only_the_tables_read_is_probed_at_its_final_checkpoint_only(repo_root, tmp_path):
    models = {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 4},
              "cnn_digits": {"arch": "cnn", "dataset": "digits", "max_epochs": 4}}
    cfg = make_config(repo_root, tmp_path, models=models, corruptions=[0.6], runs=[1],
                      tables={"models": ["mlp_digits", "cnn_digits"]})
    costs = {"mlp_digits": COST, "cnn_digits": COST}
    jobs = E.plan(cfg, costs, cores=1, job_overhead=0.0, small=NO_SMALL)
    probe = {j.model: j.seconds for j in jobs if j.stage == "probe_run"}
    assert probe == {"mlp_digits": 4 * (3.0 + 5.0), "cnn_digits": 3.0 + 5.0}  # the figures' model: the whole grid


def test_job_overhead_threads_and_gpus(repo_root, tmp_path):
    cfg = make_config(repo_root, tmp_path, threads={"train": 4, "activations": 2, "probe": 2})
    jobs = E.plan(cfg, {"mlp_digits": COST}, cores=2, gpus=1, job_overhead=0.25, small=NO_SMALL)
    train = [j for j in jobs if j.stage == "train"]
    assert all(j.threads == 2 and j.gpu and j.seconds == 1.0 + 8.0 + 2.0 + 0.25 for j in train)  # capped at cores
    assert all(j.gpu for j in jobs if j.stage == "probe_run")
    assert not any(j.gpu for j in jobs if j.stage in ("download", "metrics", "figure"))
    gpu_seconds = sum(j.seconds for j in jobs if j.gpu)
    assert E.simulate(jobs, cores=64, gpus=1) >= gpu_seconds  # one GPU: its jobs in sequence
    with pytest.raises(ValueError, match="never start"):
        E.simulate([E.Job("train", "m", 1.0, 1, True)], cores=4, gpus=0)


def test_repair_jobs_final_or_grid(repo_root, tmp_path):
    final = make_config(repo_root, tmp_path, repair={"models": ["mlp_digits"]})
    jobs = E.plan(final, {"mlp_digits": COST}, cores=1, job_overhead=0.0, small=NO_SMALL)
    repairs = [j for j in jobs if j.stage == "repair"]
    assert len(repairs) == 4 and all(j.seconds == 7.0 for j in repairs)
    assert sum(j.stage == "figure" for j in jobs) == 2 and sum(j.stage == "fig_repair" for j in jobs) == 1
    grid = make_config(repo_root, tmp_path, repair={"models": ["mlp_digits"], "checkpoints": "grid"})
    jobs = E.plan(grid, {"mlp_digits": COST}, cores=1, job_overhead=0.0, small=NO_SMALL)
    assert [j.seconds for j in jobs if j.stage == "repair"] == [7.0] * 16  # every probed checkpoint, one job each
    assert sum(j.stage == "fig_repair" for j in jobs) == 2  # and the figure over the epochs


def test_probe_final_adds_the_final_epoch(repo_root, tmp_path):
    models = {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 5, "probe_final": True}}
    cfg = make_config(repo_root, tmp_path, models=models, runs=[1], corruptions=[0.2])
    jobs = E.plan(cfg, {"mlp_digits": COST}, cores=1, job_overhead=0.0, small=NO_SMALL)
    assert [j.seconds for j in jobs if j.stage == "probe_run"] == [5 * (3.0 + 5.0)]  # 0, 1, 2, 4 and the final 5


def test_probe_sample_and_fit_scaling_on_cpu_and_gpu():
    weights = (1e-9, 2e-10)  # seconds per flop of an eigh (e³) and a Gram product (n·d·e)
    # CPU: FIT_CLASSES classes of at most PROBE_ROWS_PER_CLASS rows; classes `workers` at a time
    n_k, k_s, m, scored = M.probe_sample(2048, 10, 60000, gpu=False)
    assert (n_k, k_s, m, scored) == (6000, M.FIT_CLASSES, M.PROBE_ROWS_PER_CLASS,
                                     min(M.PROBE_ROWS_PER_CLASS * M.FIT_CLASSES, M.SCORE_ROWS))
    model = 1e-9 * 2048 ** 3 + 2e-10 * 6000 * 2048 * 2048
    model_s = 1e-9 * m ** 3 + 2e-10 * m * 2048 * m
    fit = k_s * (model_s + 0.5)  # the sample took its flop model's time plus 0.5 s per class
    assert M.fit_seconds(fit, 2048, 10, n_k, k_s, m, weights, 4, gpu=False) == pytest.approx(
        10 * (model + 0.5 * 6000 / m) / 4)
    # GPU: the whole layer (the ResNet's widest fits), so the sample's time is the layer's
    n_k, k_s, m, scored = M.probe_sample(16384, 10, 50000, gpu=True)
    assert (n_k, k_s, m, scored) == (5000, 10, 5000, M.GPU_SCORE_ROWS)
    assert M.fit_seconds(3.0, 16384, 10, n_k, k_s, m, weights, 16, gpu=True) == pytest.approx(3.0)
    # a layer over GPU_PROBE_BYTES: as many whole classes as fit (Tiny ImageNet's input layer) ...
    n_k, k_s, m, _ = M.probe_sample(12288, 200, 100000, gpu=True)
    assert (m, k_s) == (500, M.GPU_PROBE_BYTES // (4 * 500 * 12288)) and 2 <= k_s < 200
    assert M.fit_seconds(2.0, 12288, 200, n_k, k_s, m, weights, 16, gpu=True) == pytest.approx(200 * 2.0 / k_s)
    # ... and where two classes are too large, sampled rows scaled by the flop count's ratio
    n_k, k_s, m, _ = M.probe_sample(65536, 10, 500000, gpu=True)
    assert k_s == 2 and m == M.GPU_PROBE_BYTES // (4 * 2 * 65536) < n_k
    ratio = (1e-9 * n_k ** 3 + 2e-10 * n_k * 65536 * n_k) / (1e-9 * m ** 3 + 2e-10 * m * 65536 * m)
    assert M.fit_seconds(2.0, 65536, 10, n_k, k_s, m, weights, 16, gpu=True) == pytest.approx(10 * 1.0 * ratio)


def test_a_gpu_baseline_is_a_fixed_part_plus_a_growing_one_from_two_samples(monkeypatch):
    # a baseline whose time is a fixed 50 ms (launches, a d×d decomposition: most of a small sample's
    # time on a GPU) plus 10 µs per row; the job's layer: 40,000 training + 10,000 test rows
    import time
    import types

    import torch
    from latentgen.probing.contexts import ProbeOptions

    def baseline(ctx):
        time.sleep(0.05 + 1e-5 * len(ctx.train))

    families = {"slow": (baseline, types.SimpleNamespace(shares_fit=False))}
    options = ProbeOptions(0.99, "all", 1000, torch.device("cpu"))
    d, k, n_train, n_test = 16, 4, 40000, 10000
    real = 0.05 + 1e-5 * (n_train + n_train + n_test) / 3  # the same rows model: (fit + scored rows) / 3
    cpu = M._measure_probe_layer(d, k, n_train, n_test, families, options, (1e-9, 1e-9), 1)["slow"]
    m_b = M.BASELINE_ROWS // k
    assert cpu == pytest.approx((0.05 + 1e-5 * m_b * k) * (2 * n_train + n_test) / (3 * m_b * k), rel=0.1)
    assert cpu > 5 * real  # one sample scaled by rows: the fixed part scaled with them (the CPU's model, kept)
    monkeypatch.setattr(M, "_is_cuda", lambda device: True)  # the GPU's sampling (timed here on the CPU)
    gpu = M._measure_probe_layer(d, k, n_train, n_test, families, options, (1e-9, 1e-9), 1)["slow"]
    assert gpu == pytest.approx(real, rel=0.15)
    # the extrapolation itself: never under either timing, in proportion below the first sample
    assert M.two_point_seconds(1.0, 10, 3.0, 20, 40) == pytest.approx(7.0)
    assert M.two_point_seconds(1.0, 10, 0.9, 20, 40) == 1.0  # a noisy second timing: no negative slope
    assert M.two_point_seconds(1.0, 10, 3.0, 20, 5) == pytest.approx(0.5)


@pytest.fixture
def quick(monkeypatch):
    """Short samples: these tests check the plumbing, not the numbers."""
    monkeypatch.setattr(M, "TRAIN_BUDGET_S", 0.05)
    monkeypatch.setattr(M, "ACTIVATION_BUDGET_S", 0.05)
    monkeypatch.setattr(M, "PROBE_ROWS_PER_CLASS", 16)
    monkeypatch.setattr(M, "REPAIR_ROWS", 16)


def write_config(tmp_path, models, **extra):
    import yaml

    cfg = {"outdir": str(tmp_path / "results"), "data_root": str(tmp_path / "no-data"), "device": "cpu",
           "corruptions": [0.6], "runs": [1], "threads": {"train": 1, "activations": 1, "probe": 1, "repair": 1},
           "models": models, "figures": {"build": ["fig1"], "groups": {"main": list(models)}}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_missing_dataset_is_timed_on_random_data_and_flagged(tmp_path, quick, capsys, one_torch_thread):
    models = {"cnn_mnist": {"arch": "cnn", "dataset": "mnist", "max_epochs": 4}}
    path = write_config(tmp_path, models, repair={"models": ["cnn_mnist"], "rhos": [0.9], "methods": ["kfac"],
                                                  "layer_sets": {"cnn": ["fc3"]}})
    out = tmp_path / "cost.csv"
    assert main(["estimate", "--configfile", str(path), "--cores", "2", "--device", "cpu", "--json", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["random_data"] == ["cnn_mnist"]
    assert {"projected_wall_seconds", "device_hours", "jobs"} <= set(summary)
    cfg = load_config(path, "workflow/schemas/config.schema.yaml")
    tables = len((cfg.get("tables") or {}).get("build") or []) if "probes" in cfg else 0  # the 2025 tables
    # download, corrupt, train, probe_run, metrics, fig1, repair, fig_repair, the tables and claims
    assert summary["jobs"] == 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + tables + 1
    assert summary["projected_wall_seconds"] > 0 and summary["epoch_sources"] == {"cnn_mnist": ["max_epochs"]}
    assert all(r["data"] == "random" for r in summary["rows"] if r["model"] == "cnn_mnist")
    # (60,000 + 10,000) images × (784 + 576 + 3 × 250) values × 4 bytes
    assert summary["largest_activations_gb"] == pytest.approx(70000 * (784 + 576 + 750) * 4 / 1e9)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[-1]["model"] == "(total)" and float(rows[-1]["projected_wall_seconds"]) == pytest.approx(
        summary["projected_wall_seconds"])
    assert {r["stage"] for r in rows} >= {"train", "probe_run", "repair"}


def test_the_table_names_the_random_data(tmp_path, quick, capsys, one_torch_thread):
    path = write_config(tmp_path, {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 2}})
    assert main(["estimate", "--configfile", str(path), "--cores", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "projected wall time on 2 CPU cores" in text and "random" not in text  # digits ships with scikit-learn
    assert "mlp_digits" in text and "probe_run" in text


@pytest.mark.parametrize("argv, config, message", [
    ([], {"modles": {}}, "unknown key"),
    ([], {"models": {}}, "models"),
    (["--gpus", "1", "--device", "cpu"], None, "--gpus"),
    (["--cores", "0"], None, "--cores"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, argv, config, message):
    path = write_config(tmp_path, {"mlp_digits": {"arch": "mlp", "dataset": "digits"}})
    if config is not None:
        import yaml

        data = yaml.safe_load(path.read_text())
        data.pop("models")
        data["figures"]["groups"] = {}
        data.update(config)
        path.write_text(yaml.safe_dump(data))
    try:
        code = main(["estimate", "--configfile", str(path), "--quiet", *argv])
    except SystemExit as exc:  # refused by the argument parser itself
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1 and message in err, err


def test_recorded_epochs_name_registered_pairs():
    for arch, dataset in E.RECORDED_EPOCHS:
        assert dataset in registry.get_architecture(arch).datasets


def test_runs_sharing_a_gpu_take_their_share_and_their_measured_slowdown(repo_root, tmp_path):
    # the MLP's runs share a GPU 4 ways at a measured 2× aggregate rate: each run takes 4/2 = 2× its time
    # alone and a quarter of the GPU, so the four runs train side by side on one GPU
    models = {"mlp_digits": {"arch": "mlp", "dataset": "digits", "max_epochs": 4, "runs_per_gpu": 4}}
    cfg = make_config(repo_root, tmp_path, models=models, runs=[1, 2], tables={"build": []})
    shared_cost = M.ModelCost(1.0, 2.0, 0.5, forward=3.0, probe=5.0, train_shared_speedup=2.0, train_shared_runs=4)
    jobs = E.plan(cfg, {"mlp_digits": shared_cost}, cores=64, gpus=1, job_overhead=0.0, small=NO_SMALL)
    alone = 1.0 + 4 * 2.0 + 4 * 0.5
    train = [j for j in jobs if j.stage == "train"]
    assert len(train) == 4 and all(j.seconds == 2 * alone and j.gpu_units == 6 for j in train)
    assert all(j.gpu_units == 24 for j in jobs if j.stage == "probe_run")  # whole-GPU rule
    only_train = [E.Job(j.stage, j.model, j.seconds, j.threads, j.gpu, [], 0, j.gpu_units) for j in train]
    assert E.simulate(only_train, cores=64, gpus=1) == pytest.approx(2 * alone)  # all four at once
    # the same runs unshared: one at a time on the GPU, each at its own speed
    whole = E.plan(cfg, {"mlp_digits": shared_cost}, cores=64, gpus=1, job_overhead=0.0, small=NO_SMALL,
                   jobs_per_gpu=1)
    whole_train = [E.Job(j.stage, j.model, j.seconds, j.threads, j.gpu, [], 0, j.gpu_units)
                   for j in whole if j.stage == "train"]
    assert [j.seconds for j in whole_train] == [alone] * 4
    assert E.simulate(whole_train, cores=64, gpus=1) == pytest.approx(4 * alone)
    # $LATENTGEN_JOBS_PER_GPU overrides every GPU job's share, the probe jobs' too
    halves = M.ModelCost(1.0, 2.0, 0.5, forward=3.0, probe=5.0, train_shared_speedup=1.5, train_shared_runs=2)
    every = E.plan(cfg, {"mlp_digits": halves}, cores=64, gpus=1, job_overhead=0.0, small=NO_SMALL, jobs_per_gpu=2)
    assert {j.gpu_units for j in every if j.gpu} == {12}
    assert {j.seconds for j in every if j.stage == "train"} == {alone * 2 / 1.5}
    with pytest.raises(ValueError, match="2 training runs per GPU, but the speed-up was measured for 4"):
        E.plan(cfg, {"mlp_digits": shared_cost}, cores=64, gpus=1, job_overhead=0.0, small=NO_SMALL, jobs_per_gpu=2)
    # on the CPU (no GPUs) sharing does not apply: the runs cost their own time
    cpu = E.plan(cfg, {"mlp_digits": shared_cost}, cores=64, gpus=0, job_overhead=0.0, small=NO_SMALL)
    assert [j.seconds for j in cpu if j.stage == "train"] == [alone] * 4


def test_runs_that_do_the_same_work_share_one_timing_of_their_speedup(monkeypatch):
    # the CNN on MNIST and on Fashion-MNIST train the same shapes, classes and batch size: their
    # K-run and one-run rates are timed once (each timing starts K GPU processes); the MLP apart
    from latentgen.training import shared_device

    timed = []

    def fake_rate(arch, dataset, runs, samples, device):
        timed.append((arch, dataset, runs))
        return {1: 100.0, 4: 290.0}[runs] * (2 if arch == "mlp" else 1)

    monkeypatch.setattr(shared_device, "concurrent_rate", fake_rate)
    rates = {}
    for dataset in ("mnist", "fashion_mnist"):
        assert M._measure_shared_speedup({"arch": "cnn", "dataset": dataset}, 4, rates) == pytest.approx(2.9)
    assert timed == [("cnn", "mnist", 4), ("cnn", "mnist", 1)]
    assert M._measure_shared_speedup({"arch": "mlp", "dataset": "mnist"}, 4, rates) == pytest.approx(2.9)
    assert len(timed) == 4 and timed[2:] == [("mlp", "mnist", 4), ("mlp", "mnist", 1)]
