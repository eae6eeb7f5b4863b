"""The benchmark commands run end to end at small sizes and report consistent figures.

Speeds are not asserted here (they belong to the benchmarks themselves); what is asserted is that
each benchmark runs its reference in the same run, that the figures it prints fit together, and
that the reference agrees with our implementation.
"""

from __future__ import annotations

import json

import pytest

from latentgen.bench.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bench(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_benchmark_times_three_loops_on_the_same_samples(capsys, mnist_root):
    result = _bench(capsys, "train", "--data-root", str(mnist_root), "--samples", "128", "--chunk", "2")
    assert result["samples"] == 128 and result["batch_size"] == 32
    for side in ("ours", "reference", "bare"):
        assert result[f"{side}_samples_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["ours_samples_per_s"] / result["reference_samples_per_s"])
    assert result["ours_vs_bare"] == pytest.approx(result["ours_samples_per_s"] / result["bare_samples_per_s"])
    assert result["meets_target"] == (result["ratio"] >= result["target_ratio"] == 1.5)
    assert result["ours_samples_per_s"] == pytest.approx(128 / result["ours_seconds"])


def test_train_benchmark_names_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        main(["train", "--data-root", str(tmp_path)])


def test_curvature_benchmark_reference_agrees_with_ours(capsys, mnist_root):
    result = _bench(capsys, "curvature", "--data-root", str(mnist_root), "--n-train", "600",
                    "--reference-examples", "3", "--heap-seconds", "5")
    assert result["data"] == "MNIST training images (600)" and result["pairs"] == 2048 * 2048
    assert result["ours_s"] == pytest.approx(result["ours_factors_s"] + result["ours_eigh_s"] + result["ours_edit_s"])
    # the per-example loop's factors are ours on the same images (float32 activations, float64 sums)
    assert result["factor_A_rel_diff"] < 1e-5 and result["factor_G_rel_diff"] < 1e-5
    # every reference heap popped exactly our selection, in our order
    assert result["heap_matches_our_order"] and result["reference_sweep_heap_finished"]
    kept = result["sweep_pairs_kept"]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1] >= 1  # fewer pairs as rho falls


def test_probe_run_benchmark_times_both_paths_on_the_same_run(capsys, mnist_root):
    result = _bench(capsys, "probe_run", "--dataset", "digits", "--train-subset", "600", "--epochs", "1")
    assert result["checkpoints"] == 2 and result["identical"] is True  # epochs 0 and 1, the same bytes both ways
    assert result["ours_seconds"] > 0 and result["reference_seconds"] > 0
    assert result["ratio"] == pytest.approx(result["reference_seconds"] / result["ours_seconds"])


def test_probes_benchmark_lda_times_scikit_learn_against_the_gram_route(capsys, mnist_root):
    result = _bench(capsys, "probes", "--lda", "--data-root", str(mnist_root), "--n-train", "2500", "--n-test",
                    "1000")
    assert result["data"].startswith("MNIST fc4") and (result["lda_n_train"], result["lda_n_features"]) == (2500, 2048)
    assert result["lda_ratio"] == pytest.approx(result["lda_sklearn_s"] / result["lda_gram_s"])
    assert result["lda_between_rank_sklearn"] == result["lda_between_rank_gram"]
    assert 0.1 < result["lda_accuracy_gram"] <= 1 and result["lda_agreement"] > 0.99


def test_probe_model_benchmark_times_the_forward_passes_and_the_probing(capsys):
    result = _bench(capsys, "probe_model", "--n-train", "200", "--n-test", "50", "--image-size", "16",
                    "--layers", "layer1", "avgpool", "--device", "cpu")
    assert result["layers"] == 2 and result["families"] == "masc,velpic"
    # per layer: 2 probes x 3 splits (one label set)
    assert result["rows"] == 2 * 2 * 3
    assert result["forward_seconds"] > 0 and result["probe_seconds"] > 0
    assert result["ratio"] == pytest.approx(result["probe_seconds"] / result["forward_seconds"])


def test_train_shared_benchmark_times_concurrent_runs_against_one(capsys):
    result = _bench(capsys, "train_shared", "--runs", "1", "2", "--samples", "320", "--arch", "cnn")
    assert (result["arch"], result["dataset"], result["device"], result["cuda_graph"]) == ("cnn", "mnist", "cpu", False)
    assert result["runs1_speedup"] == 1.0 and result["runs1_samples_per_s"] > 0
    assert result["runs2_speedup"] == pytest.approx(result["runs2_samples_per_s"] / result["runs1_samples_per_s"])
    with pytest.raises(ValueError, match="unknown architecture"):
        _bench(capsys, "train_shared", "--arch", "transformer")
    from latentgen.bench.train_shared import _graphed
    assert not _graphed("mlp", "mnist", "cpu")  # a GPU's MLP runs replay the graph (tests/gpu)
    with pytest.raises(ValueError, match="--cuda-graph needs a CUDA device"):  # before any process starts
        _bench(capsys, "train_shared", "--arch", "cnn", "--cuda-graph")
    eager = _bench(capsys, "train_shared", "--runs", "1", "--samples", "64", "--arch", "cnn", "--no-cuda-graph")
    assert eager["cuda_graph"] is False and eager["runs1_samples_per_s"] > 0


def test_repair_sweep_benchmark_times_both_sweeps_and_finds_the_same_rows(capsys, mnist_root):
    result = _bench(capsys, "repair_sweep", "--data-root", str(mnist_root), "--n-train", "300", "--n-test", "100",
                    "--rhos", "0.9", "--batch-size", "128")
    assert result["arch"] == "cnn" and result["features_used"] and result["rows_identical"]
    from latentgen import registry
    from latentgen.models.architectures import build_model
    from latentgen.repair.layers import expand_layer_set

    cnn = build_model("cnn", "mnist")
    sweeps = [(m, s) for m in registry.DEFAULT_REPAIRS for s in registry.repair_layer_sets("cnn")
              if not (m == "kfac_velpic" and cnn.head in expand_layer_set(cnn, s))]
    assert result["models_scored"] == 2 + len(sweeps)  # none and velpic (the CNN's head has no bias to keep)
    assert result["ratio"] == pytest.approx(result["reference_seconds"] / result["ours_seconds"])


def test_repair_sweep_benchmark_names_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        main(["repair_sweep", "--data-root", str(tmp_path)])
