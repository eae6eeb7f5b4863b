"""The CUDA paths for real (``pytest -m gpu``; the default run deselects them, and without CUDA
each skips with the reason): the training set placed on the device (uint8, normalised there bit for
bit as on the CPU; the pinned-memory fallback), training that resumes after a kill, activation dumps
streamed to the host, probes and K-FAC factors against the CPU's, the GPU slots and the training
benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from latentgen.training import placement
from latentgen.training.placement import place_images
from latentgen.training.loop import read_train_log, train
from latentgen.training.runs import KILL_ENV
from latentgen.training.hyperparameters import default_train_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (pytest -m gpu needs one)")]


def _normalised_uint8(n=2048, dataset="mnist"):
    from latentgen.data.datasets import get_spec, normalize

    spec = get_spec(dataset)
    pixels = torch.randint(0, 256, (n, spec.in_channels, spec.image_size, spec.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return normalize(pixels.numpy(), spec)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "tiny_imagenet", "digits"])
def test_images_go_to_the_device_once_as_uint8_and_normalise_there_bit_for_bit(dataset, digits):
    x = digits.train_x if dataset == "digits" else _normalised_uint8(512, dataset)
    (placed,), where = place_images([x], dataset, "cuda")
    assert placed.on_device and placed.images.dtype == torch.uint8, where
    assert torch.equal(placed[0:len(x)].cpu(), x)  # datasets.normalize's float32 result, bit for bit
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1)).cuda()
    assert torch.equal(placed[order[:100]].cpu(), x[order[:100].cpu()])


def test_pinned_fallback_when_the_images_do_not_fit(monkeypatch):
    monkeypatch.setattr(placement, "DEVICE_DATA_FRACTION", 0.0)
    x = _normalised_uint8(1000)
    (placed,), where = place_images([x], "mnist", "cuda")
    assert not placed.on_device and "pinned" in where
    assert placed.images.is_pinned()
    for _ in range(3):  # the two staging buffers take turns; none is overwritten while in flight
        order = torch.randperm(len(x)).cuda()
        batches = [placed[order[i:i + 64]] for i in range(0, len(x), 64)]
        assert torch.equal(torch.cat(batches).cpu(), x[order.cpu()])
    assert torch.equal(placed[10:20].cpu(), x[10:20])


def test_training_on_the_device_and_through_pinned_batches_agree(tmp_path, digits, monkeypatch):
    config = default_train_config("mlp", "digits", corruption=0.4, max_epochs=4, shuffle=True, lr=0.01)
    on_device = train(config, tmp_path / "device", dataset=digits, device="cuda", verbose=False)
    monkeypatch.setattr(placement, "DEVICE_DATA_FRACTION", 0.0)
    pinned = train(config, tmp_path / "pinned", dataset=digits, device="cuda", verbose=False)
    assert on_device["final_epoch"] == pinned["final_epoch"] == 4
    assert abs(on_device["final_test_acc"] - pinned["final_test_acc"]) <= 0.02


def _cli_train(out, device="cuda", extra_env=None):
    cmd = [sys.executable, "-m", "latentgen", "train", "--arch", "mlp", "--dataset", "digits", "--corruption", "0.4",
           "--run", "2", "--out", str(out), "--max-epochs", "8", "--optimizer", "adam", "--lr", "0.001",
           "--shuffle", "true", "--grid-dense-until", "4", "--grid-step", "2", "--device", device, "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env.update(extra_env or {})
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_cuda_training_resumes_after_a_kill_to_the_same_epochs_and_a_comparable_accuracy(tmp_path):
    reference = _cli_train(tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    killed = _cli_train(out, extra_env={KILL_ENV: "3:resume"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _cli_train(out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 3" in resumed.stdout
    ref = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert got["device"].startswith("cuda") and got["final_epoch"] == ref["final_epoch"]
    assert got["epochs"] == ref["epochs"]
    assert [r["epoch"] for r in read_train_log(out / "train_log.csv")] == list(range(ref["final_epoch"] + 1))
    assert abs(got["final_test_acc"] - ref["final_test_acc"]) <= 0.05



def _trained_state(out):
    """Every checkpoint's weights and the log without its timings, of a finished run."""
    from latentgen.training.checkpoints import read_checkpoint

    manifest = json.loads((out / "manifest.json").read_text())
    states = {e: read_checkpoint(out / path)["model_state"] for e, path in manifest["checkpoints"].items()}
    log = [{k: v for k, v in row.items() if k != "seconds"} for row in read_train_log(out / "train_log.csv")]
    return states, log, manifest["train_seconds"]


def _same(a, b) -> bool:
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(
        torch.equal(a[0][e][k], b[0][e][k]) for e in a[0] for k in a[0][e])


@pytest.mark.parametrize("arch, shuffle", [("mlp", False), ("mlp", True), ("resnet18", True), ("cnn", True),
                                           ("alexnet", True)])
def test_a_cuda_graph_step_trains_bitwise_as_the_eager_one(tmp_path, digits, arch, shuffle):
    # a model on a training set with a short last batch: every checkpoint's weights and every log value
    # equal with and without --cuda-graph (its warm-up, capture and replays). The MLP's pass made the
    # graph its default on a GPU (registry cuda_graph); ResNet-18's (BatchNorm's running statistics
    # updated inside the graph), the CNN's and AlexNet's (Adam: the eager step after each replay) would
    # let them set the flag too
    config = default_train_config(arch, "digits", corruption=0.4, run=1, train_subset=32 * 20 + 7, max_epochs=4,
                                  shuffle=shuffle, grid_dense_until=4, grid_step=1)
    runs = {name: train(config, tmp_path / name, dataset=digits, device="cuda", verbose=False,
                        cuda_graph=name == "graph") for name in ("eager", "again", "graph")}
    eager, again, graph = (_trained_state(tmp_path / name) for name in runs)
    if not _same(eager, again):
        pytest.skip("eager CUDA training is not bitwise reproducible on this machine: nothing to compare with")
    assert _same(eager, graph), "the graphed step changed the numbers"
    print(f"\n{arch} digits, shuffle={shuffle}: eager {eager[2]:.2f} s, graphed {graph[2]:.2f} s")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("gpu") / "run"
    config = default_train_config("mlp", "digits", corruption=0.4, max_epochs=5, lr=0.01)
    manifest = train(config, out, dataset=digits, device="cpu", verbose=False)
    return out / manifest["checkpoints"][str(manifest["final_epoch"])]


def test_activation_dumps_stream_from_the_device_and_equal_the_cpus(checkpoint, tmp_path, digits, monkeypatch):
    from latentgen.probing import activations

    monkeypatch.setattr(activations, "STREAM_BYTES", 64 << 10)  # many blocks and both pinned buffers
    cpu = activations.dump_activations(checkpoint, tmp_path / "cpu.h5", dataset=digits, device="cpu", batch_size=100)
    gpu = activations.dump_activations(checkpoint, tmp_path / "gpu.h5", dataset=digits, device="cuda", batch_size=100)
    with activations.open_activations(cpu) as a, activations.open_activations(gpu) as b:
        assert a.layers == b.layers
        for split in activations.SPLITS:
            for layer in a.layers:
                np.testing.assert_allclose(b.array(split, layer), a.array(split, layer), rtol=1e-5, atol=1e-5)
        assert np.array_equal(a.labels("train", "corrupted"), b.labels("train", "corrupted"))


def test_probes_on_cuda_agree_with_the_cpu_on_999_of_1000_predictions(checkpoint, tmp_path, digits):
    from latentgen.probing.activations import dump_activations, open_activations
    from latentgen.probing.masc_velpic import fit_probes

    path = dump_activations(checkpoint, tmp_path / "acts.h5", dataset=digits, device="cpu")
    agree = total = 0
    with open_activations(path) as acts:
        y = acts.labels("train", "corrupted")
        for layer in acts.layers:
            X, T = acts.array("train", layer), acts.array("test", layer)
            cpu = fit_probes(X, y, device="cpu")
            gpu = fit_probes(X, y, device="cuda")
            for a, b in zip(cpu, gpu):
                for rows in (X, T):
                    agree += int(np.sum(a.predict(rows) == b.predict(rows)))
                    total += len(rows)
    assert agree / total >= 0.999, f"{agree}/{total}"


def test_a_run_probed_on_cuda_in_memory_agrees_with_the_cpu(checkpoint, tmp_path):
    """`latentgen probe-run` on the GPU: forward passes there, activations streamed into host memory
    in several groups of layers (a small budget), probes on the device; accuracies within 1e-2 of
    the CPU's (a few of 359 test rows may flip) and the transfer equal to VeLPIC on the device too."""
    import csv

    from latentgen.probing.run import ProbeSettings, RunProbeJob, probe_run

    run_dir = checkpoint.parent.parent
    tables = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        job = RunProbeJob(run_dir=run_dir, out=out / "run.csv", final_out=out / "final.csv", parts=out / "parts",
                          final=ProbeSettings(("masc", "velpic", "transfer", "ncm"), ("corrupted", "true")),
                          memory_budget=2 << 20)
        probe_run(job, device=device, log=lambda *_: None)
        with open(out / "run.csv") as fh:
            tables[device] = {tuple(r[k] for k in ("epoch", "layer", "probe", "fit_labels", "split")): float(r["accuracy"])
                              for r in csv.DictReader(fh)}
    assert tables["cpu"].keys() == tables["cuda"].keys() and len(tables["cpu"]) > 0
    for key, value in tables["cpu"].items():
        assert abs(tables["cuda"][key] - value) <= 1e-2, key


def test_repair_factors_on_cuda_equal_the_cpus_to_1e6(checkpoint, digits):
    from latentgen.repair import collect_factors  # latentgen.repair.factors
    from latentgen.training.checkpoints import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    layers = ["fc1", "fc4", "output"]
    for fisher in ("exact", "empirical"):
        labels = digits.train_y[:512]
        cpu = collect_factors(model, digits.train_x[:512], layers, fisher=fisher, labels=labels, device="cpu")
        gpu = collect_factors(model, digits.train_x[:512], layers, fisher=fisher, labels=labels, device="cuda")
        for name in layers:
            for which in ("A", "G"):
                a, b = getattr(cpu[name], which), getattr(gpu[name], which).cpu()
                assert (b - a).norm() <= 1e-6 * a.norm(), (fisher, name, which)


def test_a_repair_sweep_on_cuda_from_the_features_equals_whole_passes(digits, monkeypatch):
    """The CNN's sweep on the GPU: features once (on the device) and the head per edit give the
    rows of whole forward passes on the same device, bit for bit."""
    import pandas as pd

    from latentgen.data.labels import corrupt_labels
    from latentgen.models import forward
    from latentgen.models.architectures import build_model
    from latentgen.repair.evaluation import RepairData
    from latentgen.repair.sweep import repair_sweep

    model = build_model("cnn", "digits", seed=0).to("cuda").eval()
    corrupted = torch.from_numpy(corrupt_labels(digits.train_y.numpy(), 0.6, 10, seed=42))
    data = RepairData(digits.train_x, digits.train_y, corrupted, digits.test_x, digits.test_y)
    kwargs = dict(layer_sets=["fcs.2", "fcs.0+fcs.2"], rhos=[1.0, 0.8], methods=["kfac", "kfac_velpic"],
                  batch_size=500, device="cuda")
    features_of, made = forward.FeatureBatches.__dict__["of"], []
    monkeypatch.setattr(forward.FeatureBatches, "of", classmethod(
        lambda cls, *a, **k: made.append(features_of.__func__(cls, *a, **k)) or made[-1]))
    cached = repair_sweep(model, data, **kwargs)
    assert len(made) == 2 and all(f is not None and f.batches[0].is_cuda for f in made)
    whole = repair_sweep(model, data, cache_features=False, **kwargs)
    assert len(made) == 2  # whole passes: no features asked for
    for ours, reference in zip(cached, whole):
        pd.testing.assert_frame_equal(pd.DataFrame(ours), pd.DataFrame(reference), check_exact=True)


def test_the_estimates_probe_time_on_cuda_is_within_1_5_of_a_real_layer_probe():
    """`latentgen estimate`'s MASC + VeLPIC seconds for one layer on the GPU (whole classes sampled,
    a few thousand rows scored) against the probing of that whole layer as a probe job does it."""
    from latentgen.workflow import cost_measurement as M
    from latentgen.probing.contexts import ProbeOptions

    families, _ = M._families(["masc", "velpic"])
    options = ProbeOptions(0.99, "all", 1000, torch.device("cuda"))
    weights = M._flop_weights()
    M._measure_probe_layer(512, 10, 2000, 2000, families, options, weights, 1)  # CUDA and cuSOLVER start-up
    d, k, n = 4096, 10, 30000
    layer = M._measure_probe_layer(d, k, n, n, families, options, weights, 1)
    predicted = layer["fit"] + layer["masc"] + layer["velpic"]
    whole = M._context(n // k, k, d, options)  # n rows as training and test rows, as the estimate assumed
    real = M._timed(lambda: [family(whole) for family, _ in families.values()], options.device)
    print(f"\nestimate on cuda, one {n}×{d} layer: predicted {predicted:.2f} s, real {real:.2f} s")
    assert 1 / 1.5 <= predicted / real <= 1.5, (predicted, real)


def test_the_estimates_large_random_layers_are_drawn_on_the_gpu_with_the_cpus_spectrum(monkeypatch):
    # a GPU sample's random layer (GBs) is drawn on the device: host float32 rows, non-negative, each
    # column scaled as the CPU's draw of the same layer (the feature scales of the spectrum)
    import numpy as np
    from latentgen.workflow import cost_measurement as M
    from latentgen.probing.contexts import ProbeOptions

    monkeypatch.setattr(M, "SAMPLE_BYTES", 1 << 16)  # this small layer takes the GPU's path
    gpu = M._context(2000, 4, 64, ProbeOptions(0.99, "all", 1000, torch.device("cuda"))).train
    cpu = M._context(2000, 4, 64, ProbeOptions(0.99, "all", 1000, torch.device("cpu"))).train
    assert isinstance(gpu, np.ndarray) and gpu.dtype == np.float32 and gpu.shape == cpu.shape == (8000, 64)
    assert (gpu >= 0).all() and not np.array_equal(gpu, cpu)
    np.testing.assert_allclose(gpu.mean(0), cpu.mean(0), rtol=0.1)


def test_the_mlp_takes_the_cuda_graph_by_default_on_a_gpu_and_the_cnn_when_asked():
    from latentgen.bench.train_shared import _graphed

    assert _graphed("mlp", "mnist", "cuda") and not _graphed("cnn", "mnist", "cuda")
    assert _graphed("cnn", "mnist", "cuda", True) and not _graphed("mlp", "mnist", "cuda", False)


def test_gpu_slots_place_two_concurrent_jobs_on_two_devices(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two CUDA devices, this machine has {torch.cuda.device_count()}")
    probe = ("import os, time, torch; print(os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count(), "
             "torch.cuda.get_device_properties(0).uuid, flush=True); time.sleep(3)")
    env = {**os.environ, "LATENTGEN_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "latentgen.workflow.gpu_slots", "--", sys.executable, "-c", probe]
    jobs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)]
    time.sleep(0.5)
    jobs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    lines = [job.communicate(timeout=120)[0].split() for job in jobs]
    assert all(job.returncode == 0 for job in jobs)
    assert lines[0][0] != lines[1][0]  # different CUDA_VISIBLE_DEVICES
    assert lines[0][1] == lines[1][1] == "1"  # each job sees exactly its own device
    assert lines[0][2] != lines[1][2]  # and they are different GPUs



def test_runs_sharing_one_gpu_through_the_slots_and_their_rate(tmp_path):
    # two jobs at --jobs-per-gpu 2 share the one GPU (the same device, at once), and two concurrent
    # training runs on it are timed (the estimate's speed-up for a model's runs_per_gpu)
    from latentgen.training.shared_device import concurrent_rate

    probe = ("import os, time, torch; torch.zeros(1, device='cuda'); print(os.environ['CUDA_VISIBLE_DEVICES'], "
             "time.time(), flush=True); time.sleep(3)")
    env = {**os.environ, "LATENTGEN_GPU_LOCK_DIR": str(tmp_path / "locks"), "LATENTGEN_NUM_GPUS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "latentgen.workflow.gpu_slots", "--jobs-per-gpu", "2", "--", sys.executable, "-c", probe]
    jobs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    lines = [job.communicate(timeout=120)[0].split() for job in jobs]
    assert all(job.returncode == 0 for job in jobs) and lines[0][0] == lines[1][0] == "0"
    assert abs(float(lines[0][1]) - float(lines[1][1])) < 2.5  # side by side, not one after the other
    one = concurrent_rate("mlp", "mnist", 1, 6400, "cuda")
    two = concurrent_rate("mlp", "mnist", 2, 6400, "cuda")
    print(f"\nMLP training on one GPU: 1 run {one:.0f} samples/s, 2 runs {two:.0f} samples/s ({two / one:.2f}x)")
    assert one > 0 and two > 0

def test_the_training_benchmark_runs_on_cuda(mnist_root):
    out = subprocess.run([sys.executable, "-m", "latentgen.bench", "train", "--device", "cuda", "--samples", "3200",
                          "--data-root", str(mnist_root), "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["device"].startswith("cuda") and "uint8" in result["ours_placement"]
    print(f"\nbench train --device cuda: ours {result['ours_samples_per_s']:.0f}/s, reference "
          f"{result['reference_samples_per_s']:.0f}/s, bare {result['bare_samples_per_s']:.0f}/s, graphed "
          f"{result['graphed_samples_per_s']:.0f}/s ({result['graphed_vs_ours']:.2f}x ours)")
    assert result["ours_samples_per_s"] > 0 and result["graphed_samples_per_s"] > 0


# ------------------------------------------------------------------------------------------
# the baselines on the device (latentgen.probing.device_baselines) against the CPU code


@pytest.fixture(scope="module")
def mlp_mnist_layers(mnist_root):
    """fc2 and fc4 of the MLP at its seed-0 initialisation: 20,000 MNIST training images (dead
    units, near ties), 5,000 test images, the authors' 40 % corrupted labels."""
    from latentgen.data.datasets import load_dataset
    from latentgen.models.forward import iter_activations
    from latentgen.data.labels import corrupt_labels
    from latentgen.models.architectures import build_model

    data = load_dataset("mnist", data_root=mnist_root)
    model = build_model("mlp", "mnist", seed=0).eval()

    def acts(x):
        parts = [a for _, a in iter_activations(model, x, ["fc2", "fc4"], 1000)]
        return {name: torch.cat([p[name] for p in parts]).numpy() for name in ("fc2", "fc4")}

    y = data.train_y[:20000].numpy()
    return acts(data.train_x[:20000]), acts(data.test_x[:5000]), corrupt_labels(y, 0.4, 10, seed=42), \
        data.test_y[:5000].numpy()


@pytest.mark.parametrize("layer", ["fc2", "fc4"])
def test_knn_lda_qda_on_cuda_agree_with_the_cpu(mlp_mnist_layers, layer):
    from latentgen.probing.baselines import CosineKNN, majority_vote
    from latentgen.probing.device_baselines import DeviceQDA, cosine_kneighbors, fit_lda_device, lda_predict_device
    from latentgen.probing.discriminant import AuthorsQDA, fit_lda

    train, test, y, y_test = mlp_mnist_layers
    X, T = train[layer], test[layer]
    reference = CosineKNN(5).fit(X).kneighbors(T)
    np.testing.assert_array_equal(cosine_kneighbors(X, T, 5, "cuda"), reference)  # scikit-learn's neighbours
    np.testing.assert_array_equal(majority_vote(cosine_kneighbors(X, T, 5, "cuda"), y), majority_vote(reference, y))

    def close(ours, cpu):
        assert np.mean(ours == cpu) >= 0.999
        assert abs(np.mean(ours == y_test) - np.mean(cpu == y_test)) <= 1e-3

    lda = fit_lda_device(X, y, "cuda")
    close(lda_predict_device(lda, T, "cuda"), fit_lda(X, y).predict(T))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        close(DeviceQDA(device="cuda").fit(X, y).predict(T), AuthorsQDA().fit(X, y).predict(T))


def test_logistic_regressions_in_one_loop_on_cuda_equal_their_single_cuda_fits(mlp_mnist_layers):
    from latentgen.probing.baselines import LogisticRegressionProbe
    from latentgen.probing.device_baselines import fit_logistic_many

    train, test, y, y_test = mlp_mnist_layers
    problems = [(train["fc2"][:5000], y[:5000]), (train["fc4"][:5000], y[:5000]), (train["fc4"][:5000], y[:5000] % 2)]
    many = fit_logistic_many(problems, epochs=2, device="cuda")
    for probe, (X, labels) in zip(many, problems):
        single = LogisticRegressionProbe(epochs=2, device="cuda").fit(X, labels)
        np.testing.assert_array_equal(probe.coef_, single.coef_)
        cpu = LogisticRegressionProbe(epochs=2, device="cpu").fit(X, labels)  # another device: to rounding
        assert np.mean(probe.predict(test["fc4" if X.shape[1] == 2048 else "fc2"]) ==
                       cpu.predict(test["fc4" if X.shape[1] == 2048 else "fc2"])) >= 0.99


def test_the_device_baselines_benchmark_runs_on_cuda():
    result = subprocess.run([sys.executable, "-m", "latentgen.bench", "baselines_device", "--json", "--device", "cuda",
                             "--n-train", "6000", "--n-test", "2000", "--epochs", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["knn_identical"] and figures["lda_agreement"] >= 0.999 and figures["logistic_identical"]
