"""The 2025 paper's probe families on real MNIST activations: each against scikit-learn or a
brute-force computation, the label sets (corrupted, true, corrupted@C), the sensitivity
thresholds from one decomposition, NaN rows for fits that cannot be made, and the TMLR path
unchanged by all of it (probe rows and metrics bytes)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier

from latentgen.probing import baselines
from latentgen.probing import subspaces as probes_module
from latentgen import registry
from latentgen.__main__ import main
from latentgen.probing.activations import dump_activations, open_activations
from latentgen.data.labels import corrupt_dataset, corrupt_labels, read_label_file, write_label_file
from latentgen.paper.metrics import write_metrics
from latentgen.probing.baselines import LogisticRegressionProbe, NearestClassMean
from latentgen.probing.masc_velpic import MASC, fit_probes
from latentgen.contracts import PROBE_COLUMNS as COLUMNS
from latentgen.probing.checkpoint import _run_family, probe_checkpoint, probe_layer, write_probe_csv
from latentgen.probing.contexts import LayerContext, ProbeOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread", "single_threaded_blas")


N_TRAIN = 2000
LAYER_FAMILIES = ["masc", "velpic", "logistic", "ncm", "knn", "lda", "qda", "masc_sensitivity"]
BASELINES = ["logistic", "ncm", "knn", "lda", "qda"]
SPLITS = ["test", "train_corrupted", "train_true"]
SENSITIVITY = {"masc_var0.25": {"variance": 0.25}, "masc_var0.5": {"variance": 0.5},
               "masc_var0.75": {"variance": 0.75}, "masc_var0.99": {"variance": 0.99},
               "masc_1pc": {"n_components": 1}}


def frame_of(rows) -> pd.DataFrame:
    return pd.DataFrame([r.values() for r in rows], columns=list(COLUMNS))


def value(frame, layer, probe, fit_labels, split="test"):
    (v,) = frame.loc[(frame.layer == layer) & (frame.probe == probe) & (frame.fit_labels == fit_labels)
                     & (frame.split == split), "accuracy"]
    return v


# ------------------------------------------------------------------------------------------
# a real checkpoint: an MLP trained one epoch on 2,000 MNIST images with 40 % corrupted labels


@pytest.fixture(scope="module")
def mnist(mnist_root):
    from latentgen.data.datasets import load_dataset

    return load_dataset("mnist", data_root=mnist_root)


@pytest.fixture(scope="module")
def run_h5(tmp_path_factory, mnist, mnist_root):
    from latentgen.training.loop import train
    from latentgen.training.hyperparameters import default_train_config

    folder = tmp_path_factory.mktemp("mnist_mlp")
    config = default_train_config("mlp", "mnist", corruption=0.4, run=1, train_subset=N_TRAIN, max_epochs=1,
                                  grid_dense_until=2, grid_step=1)
    train(config, folder / "run", dataset=mnist, device="cpu", verbose=False)
    h5 = dump_activations(folder / "run" / "checkpoints" / "epoch1.pt", folder / "epoch1.h5", dataset=mnist,
                          device="cpu")
    corrupt_dataset("mnist", 0.6, folder / "c0.6.npz", data_root=mnist_root)
    return folder, h5


@pytest.fixture(scope="module")
def all_rows(run_h5, mnist_root):
    """Every family, label sets asked in reverse order, and degree 0.6's label file."""
    folder, h5 = run_h5
    return probe_checkpoint(h5, families=[*reversed(LAYER_FAMILIES), "transfer"], fit_labels=["true", "corrupted"],
                            extra_labels={0.6: folder / "c0.6.npz"}, data_root=mnist_root, device="cpu")


@pytest.fixture(scope="module")
def default_rows(run_h5, mnist_root):
    """Today's probing: MASC, VeLPIC and the transfer on the corrupted labels."""
    _, h5 = run_h5
    return probe_checkpoint(h5, data_root=mnist_root, device="cpu")


@pytest.fixture(scope="module")
def file_arrays(run_h5):
    _, h5 = run_h5
    with open_activations(h5) as acts:
        layers = list(acts.layers)
        return {"layers": layers,
                "train": {layer: acts.array("train", layer) for layer in layers},
                "test": {layer: acts.array("test", layer) for layer in layers},
                "y": {"test": acts.labels("test"), "train_corrupted": acts.labels("train", "corrupted"),
                      "train_true": acts.labels("train", "true")}}


def test_rows_cover_every_family_label_set_and_split(all_rows, file_arrays):
    frame = frame_of(all_rows)
    assert list(frame.columns) == ["model", "dataset", "corruption", "run", "epoch", "layer", "probe", "fit_labels",
                                   "split", "accuracy"]
    sensitivity = list(SENSITIVITY)
    for layer in file_arrays["layers"]:
        here = frame[frame.layer == layer]
        expected = {(p, s, split) for p in ["masc", "velpic", *sensitivity] for s in ("corrupted", "true")
                    for split in SPLITS}
        expected |= {(p, "corrupted@0.6", split) for p in ("masc", "velpic") for split in SPLITS}
        if layer != "input":  # the authors' baselines skip the input layer, score the test split only
            expected |= {(p, s, "test") for p in BASELINES for s in ("corrupted", "true")}
        if layer == "fc4":
            expected |= {(p, s, split) for p in ("transfer", "transfer_bias") for s in ("corrupted", "true")
                         for split in SPLITS}
        assert set(zip(here.probe, here.fit_labels, here.split)) == expected, layer
        assert len(here) == len(expected)
    # row order: per layer, families in registry order, each with its label sets in order
    fc1 = frame[frame.layer == "fc1"].drop_duplicates(["probe", "fit_labels"])
    assert list(zip(fc1.probe, fc1.fit_labels))[:8] == [
        ("masc", "corrupted"), ("masc", "true"), ("masc", "corrupted@0.6"), ("velpic", "corrupted"),
        ("velpic", "true"), ("velpic", "corrupted@0.6"), ("logistic", "corrupted"), ("logistic", "true")]
    assert list(frame.layer.drop_duplicates()) == file_arrays["layers"]
    assert frame.accuracy.between(0, 1).all()  # QDA included: a number on every layer, as the authors' code


def test_the_tmlr_rows_are_unchanged_by_more_families(all_rows, default_rows):
    default = default_rows
    tmlr = [r for r in all_rows if r.fit_labels == "corrupted" and r.probe in ("masc", "velpic", "transfer",
                                                                                  "transfer_bias")]
    assert [r.values() for r in default] == [r.values() for r in tmlr]


def test_metrics_are_the_same_bytes_with_more_families_and_label_sets(all_rows, default_rows, run_h5, tmp_path):
    folder, _ = run_h5
    default_csv = write_probe_csv(default_rows, tmp_path / "default.csv")
    full_csv = write_probe_csv(all_rows, tmp_path / "full.csv")
    assert len(pd.read_csv(full_csv)) > 4 * len(pd.read_csv(default_csv))
    logs = {1: folder / "run" / "train_log.csv"}
    write_metrics([default_csv], logs, tmp_path / "m_default.csv")
    write_metrics([full_csv], logs, tmp_path / "m_full.csv")
    written = (tmp_path / "m_default.csv").read_bytes()
    assert written == (tmp_path / "m_full.csv").read_bytes()
    assert written.splitlines()[0] == b"model,dataset,corruption,run,epoch,layer,probe,split,accuracy"


def _split_accuracies(probe, train, test, y):
    predicted = {"test": probe.predict(test), "train": probe.predict(train)}
    return {split: float(np.mean(predicted[split.split("_")[0]] == y[split])) for split in SPLITS}


def test_true_label_subspaces_are_masc_and_velpic_fit_on_the_true_labels(all_rows, file_arrays):
    frame, a = frame_of(all_rows), file_arrays
    assert not np.array_equal(a["y"]["train_true"], a["y"]["train_corrupted"])
    for layer in ("input", "fc2", "fc4"):
        masc = MASC(device="cpu").fit(a["train"][layer], a["y"]["train_true"], classes=np.arange(10))
        _, velpic = fit_probes(a["train"][layer], a["y"]["train_true"], classes=np.arange(10), device="cpu")
        for name, probe in (("masc", masc), ("velpic", velpic)):
            for split, expected in _split_accuracies(probe, a["train"][layer], a["test"][layer], a["y"]).items():
                assert value(frame, layer, name, "true", split) == expected, (layer, name, split)
    assert value(frame, "fc4", "masc", "true") != value(frame, "fc4", "masc", "corrupted")


def test_extra_label_rows_are_masc_fit_on_the_other_label_file(all_rows, file_arrays, run_h5):
    folder, _ = run_h5
    frame, a = frame_of(all_rows), file_arrays
    other = read_label_file(folder / "c0.6.npz").corrupted[:N_TRAIN]
    assert not np.array_equal(other, a["y"]["train_corrupted"])
    for layer in ("fc1", "fc4"):
        masc, velpic = fit_probes(a["train"][layer], other, classes=np.arange(10), device="cpu")
        for name, probe in (("masc", masc), ("velpic", velpic)):
            for split, expected in _split_accuracies(probe, a["train"][layer], a["test"][layer], a["y"]).items():
                assert value(frame, layer, name, "corrupted@0.6", split) == expected, (layer, name, split)


def test_sensitivity_rows_equal_separate_masc_fits(all_rows, file_arrays):
    frame, a = frame_of(all_rows), file_arrays
    for layer in ("input", "fc3"):
        for name, params in SENSITIVITY.items():
            masc = MASC(device="cpu", **params).fit(a["train"][layer], a["y"]["train_corrupted"],
                                                    classes=np.arange(10))
            for split, expected in _split_accuracies(masc, a["train"][layer], a["test"][layer], a["y"]).items():
                assert value(frame, layer, name, "corrupted", split) == expected, (layer, name, split)
    for split in SPLITS:
        assert value(frame, "fc3", "masc_var0.99", "true", split) == value(frame, "fc3", "masc", "true", split)


def test_one_decomposition_per_layer_and_label_set(run_h5, all_rows, monkeypatch):
    _, h5 = run_h5
    fits, decompositions = [], []
    fit, decompose = probes_module.ClassSubspaces.fit, probes_module._decompose_class

    def counting_fit(self, X, y, classes=None):
        fits.append(X.shape)
        return fit(self, X, y, classes)

    def counting_decompose(*args, **kwargs):
        decompositions.append(1)
        return decompose(*args, **kwargs)

    monkeypatch.setattr(probes_module.ClassSubspaces, "fit", counting_fit)
    monkeypatch.setattr(probes_module, "_decompose_class", counting_decompose)
    rows = probe_checkpoint(h5, families=["masc", "velpic", "masc_sensitivity"], fit_labels="corrupted,true",
                            device="cpu")
    assert len(fits) == 5 * 2 and len(decompositions) == 5 * 2 * 10
    again = {r.values() for r in all_rows if r.probe in ("masc", "velpic", *SENSITIVITY)
             and r.fit_labels != "corrupted@0.6"}
    assert {r.values() for r in rows} == again


def test_cli_writes_the_library_rows(run_h5, all_rows, tmp_path):
    folder, h5 = run_h5
    out = tmp_path / "probes.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--families",
                 "masc,velpic", "knn", "--fit-labels", "corrupted,true", "--extra-labels",
                 f"0.6={folder / 'c0.6.npz'}", "--no-transfer", "--threads", "1"]) == 0
    written = pd.read_csv(out, dtype={"fit_labels": str})
    expected = frame_of([r for r in all_rows if r.probe in ("masc", "velpic", "knn")])
    pd.testing.assert_frame_equal(written, expected.reset_index(drop=True), check_dtype=False)


# ------------------------------------------------------------------------------------------
# refusals


def test_unknown_label_sets_and_bad_label_files_are_refused(run_h5, tmp_path, capsys):
    folder, h5 = run_h5
    with pytest.raises(ValueError, match="unknown label set 'noisy'; known: corrupted, true"):
        probe_checkpoint(h5, fit_labels=["corrupted", "noisy"], device="cpu")
    with pytest.raises(ValueError, match="unknown label set 'corrupted@0.6'.*--extra-labels C=FILE"):
        probe_checkpoint(h5, fit_labels="corrupted@0.6", device="cpu")
    args = ["probe", "--activations", str(h5), "--out", str(tmp_path / "x.csv"), "--device", "cpu", "--no-transfer"]
    for bad, message in ((["--fit-labels", "corrupted,noisy"], "unknown label set 'noisy'; known: corrupted, true"),
                         (["--fit-labels", "corrupted@0.6"], "come from --extra-labels"),
                         (["--extra-labels", "0.6"], "expected C=LABELS.npz, got '0.6'"),
                         (["--extra-labels", "1.5=x.npz"], "C in [0, 1]"),
                         (["--families", "masc,svm"], "unknown probe family 'svm'")):
        with pytest.raises(SystemExit) as exit_info:
            main(args + bad)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err

    lf = read_label_file(folder / "c0.6.npz")
    shuffled = tmp_path / "other-images.npz"
    true = lf.true.copy()
    true[:N_TRAIN] = np.roll(true[:N_TRAIN], 1)
    write_label_file(shuffled, true, corrupt_labels(true, 0.6, 10, seed=42), seed=42, degree=0.6, num_classes=10,
                     dataset="mnist")
    assert main(args + ["--extra-labels", f"0.6={shuffled}"]) == 1
    err = capsys.readouterr().err
    assert str(shuffled) in err and str(h5) in err and "not the same images" in err
    assert main(args + ["--extra-labels", f"0.4={folder / 'c0.6.npz'}"]) == 1
    assert "holds degree 0.6 labels, not 0.4" in capsys.readouterr().err
    assert main(args + ["--extra-labels", f"0.6={tmp_path / 'missing.npz'}"]) == 1
    assert "label file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------------------------------
# each baseline against scikit-learn or brute force, on real MNIST activations (one layer at a
# time through the probing driver)


class ArrayActivations:
    """What a LayerContext reads from an activations file, from arrays in memory."""

    def __init__(self, train: dict, test: dict):
        self.arrays = {"train": train, "test": test}

    def array(self, split, layer):
        return self.arrays[split][layer]


@pytest.fixture(scope="module")
def mnist_layers(mnist):
    """fc1 (128) and fc4 (2048) of the paper's MLP (random init) on 3,000 + 1,000 MNIST images,
    with 50 % corrupted training labels."""
    from latentgen.models.forward import iter_activations
    from latentgen.models.architectures import build_model

    model = build_model("mlp", "mnist", seed=3).eval()

    def acts(x):
        parts = [a for _, a in iter_activations(model, x, ["fc1", "fc4"], 1000)]
        return {layer: torch.cat([p[layer] for p in parts]).numpy() for layer in ("fc1", "fc4")}

    y_true = mnist.train_y[:3000].numpy()
    labels = {"test": mnist.test_y[:1000].numpy(), "train_true": y_true,
              "train_corrupted": corrupt_labels(y_true, 0.5, 10, seed=42)}
    return ArrayActivations(acts(mnist.train_x[:3000]), acts(mnist.test_x[:1000])), labels


def layer_rows(acts, labels, layer, families, fit_labels=("corrupted", "true"), seed=0):
    options = ProbeOptions(device=torch.device("cpu"), seed=seed)
    context = LayerContext(acts, layer, ("mlp", "mnist", 0.5, 1, 0), labels, np.arange(10), options)
    loaded = [(registry.PROBE_FAMILIES[n], registry.load(registry.PROBE_FAMILIES[n].impl)) for n in families]
    return frame_of(probe_layer(context, loaded, dict.fromkeys(fit_labels), fit_labels))


def test_nearest_class_mean_against_brute_force_cosine(mnist_layers):
    acts, labels = mnist_layers
    frame = layer_rows(acts, labels, "fc4", ["ncm"])
    X, T = acts.array("train", "fc4").astype(np.float64), acts.array("test", "fc4").astype(np.float64)
    for fit_labels in ("corrupted", "true"):
        y = labels[f"train_{fit_labels}"]
        means = np.array([[sum(X[i, j] for i in np.flatnonzero(y == k)) for j in range(0, X.shape[1], 97)]
                          for k in range(10)]) / np.bincount(y)[:, None]  # every 97th feature, by hand
        full = np.stack([X[y == k].mean(axis=0) for k in range(10)])
        np.testing.assert_allclose(full[:, ::97], means, rtol=1e-10)
        cosine = np.array([[t @ m / (np.linalg.norm(t) * np.linalg.norm(m)) for m in full] for t in T])
        brute = cosine.argmax(axis=1)
        ncm = NearestClassMean().fit(acts.array("train", "fc4"), y)
        np.testing.assert_allclose(ncm.decision_function(acts.array("test", "fc4")), cosine, rtol=1e-9)
        assert np.array_equal(ncm.predict(acts.array("test", "fc4")), brute)
        assert value(frame, "fc4", "ncm", fit_labels) == np.mean(brute == labels["test"])


@pytest.mark.parametrize("layer", ["fc1", "fc4"])
def test_knn_is_scikit_learns_cosine_5nn(mnist_layers, layer):
    acts, labels = mnist_layers
    frame = layer_rows(acts, labels, layer, ["knn"])
    X, T = acts.array("train", layer), acts.array("test", layer)
    for fit_labels in ("corrupted", "true"):
        reference = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(X, labels[f"train_{fit_labels}"])
        ours = baselines.CosineKNN(5).fit(X, labels[f"train_{fit_labels}"])
        assert np.array_equal(ours.kneighbors(T), reference.kneighbors(T, return_distance=False))
        predicted = reference.predict(T)
        assert np.array_equal(ours.predict(T), predicted)
        assert value(frame, layer, "knn", fit_labels) == np.mean(predicted == labels["test"])


def test_lda_svd_route_is_scikit_learn_bit_for_bit_and_the_family_is_the_authors_fit(mnist_layers):
    acts, labels = mnist_layers
    frame = layer_rows(acts, labels, "fc4", ["lda"])
    X, T = acts.array("train", "fc4"), acts.array("test", "fc4")
    for fit_labels in ("corrupted", "true"):
        lda = LinearDiscriminantAnalysis().fit(X, labels[f"train_{fit_labels}"])
        lean = baselines.fit_lda(X, labels[f"train_{fit_labels}"], within_scale="n", method="svd")
        assert set(vars(lda)) <= set(vars(lean))
        for name, fitted in vars(lda).items():
            if isinstance(fitted, np.ndarray):
                assert fitted.dtype == getattr(lean, name).dtype and np.array_equal(fitted, getattr(lean, name)), name
        assert np.array_equal(lean.predict(T), lda.predict(T))
        # the gram route at scikit-learn's 1/n: its rank and its test accuracy (to 4 decimals)
        gram = baselines.fit_lda(X, labels[f"train_{fit_labels}"], within_scale="n", method="gram")
        assert gram.within_rank_ == lean.within_rank_
        assert round(np.mean(gram.predict(T) == labels["test"]), 4) == round(np.mean(lda.predict(T) == labels["test"]), 4)
        # the family: the authors' 1/(n - K), the gram route (3,000 rows, 2,048 features)
        authors = baselines.fit_lda(X, labels[f"train_{fit_labels}"])
        assert authors.method_ == "gram"
        assert value(frame, "fc4", "lda", fit_labels) == np.mean(authors.predict(T) == labels["test"])
    # two classes (scikit-learn's binary special case) and float64
    two = labels["train_true"] % 2
    lda = LinearDiscriminantAnalysis().fit(X[:, :300].astype(np.float64), two)
    lean = baselines.fit_lda(X[:, :300].astype(np.float64), two, within_scale="n", method="svd")
    assert np.array_equal(lda.coef_, lean.coef_) and np.array_equal(lda.intercept_, lean.intercept_)
    gram = baselines.fit_lda(X[:, :300], two, within_scale="n", method="gram")
    assert np.mean(gram.predict(T[:, :300]) == lda.predict(T[:, :300].astype(np.float64))) == 1.0


def test_qda_is_the_authors_scikit_learn_where_1_9_refuses(mnist_layers, caplog):
    """2048 features, ~300 rows per class: scikit-learn 1.9 refuses; the authors' (<= 1.7) warned and
    computed, and so does the family (tests/probing/test_discriminant.py checks the arithmetic)."""
    from latentgen.probing.discriminant import AuthorsQDA

    acts, labels = mnist_layers
    with caplog.at_level(logging.WARNING, logger="latentgen"), np.errstate(all="ignore"):
        frame = layer_rows(acts, labels, "fc4", ["qda"])
    for fit_labels in ("corrupted", "true"):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            qda = AuthorsQDA().fit(acts.array("train", "fc4"), labels[f"train_{fit_labels}"])
            expected = np.mean(qda.predict(acts.array("test", "fc4")) == labels["test"])
        assert value(frame, "fc4", "qda", fit_labels) == expected
    assert "qda on layer 'fc4' (fit_labels=corrupted): UserWarning: Variables are collinear" in caplog.text
    assert "QDA per class" in caplog.text
    with pytest.raises(np.linalg.LinAlgError, match="not full rank"):
        QuadraticDiscriminantAnalysis().fit(acts.array("train", "fc4"), labels["train_corrupted"])


def test_logistic_regression_is_reproducible_from_its_seed(mnist_layers):
    acts, labels = mnist_layers
    X, T = acts.array("train", "fc1"), acts.array("test", "fc1")
    first = LogisticRegressionProbe(seed=5, device="cpu").fit(X, labels["train_corrupted"])
    second = LogisticRegressionProbe(seed=5, device="cpu").fit(X, labels["train_corrupted"])
    other = LogisticRegressionProbe(seed=6, device="cpu").fit(X, labels["train_corrupted"])
    assert np.array_equal(first.coef_, second.coef_) and np.array_equal(first.predict(T), second.predict(T))
    assert not np.array_equal(first.coef_, other.coef_)
    frame = layer_rows(acts, labels, "fc1", ["logistic"], fit_labels=("corrupted",), seed=5)
    assert value(frame, "fc1", "logistic", "corrupted") == np.mean(first.predict(T) == labels["test"])
    again = layer_rows(acts, labels, "fc1", ["logistic"], fit_labels=("corrupted",), seed=5)
    pd.testing.assert_frame_equal(frame, again)


def test_fits_that_cannot_be_made_give_nan_rows_with_the_reason_logged(mnist_layers, caplog):
    acts, labels = mnist_layers
    few = ArrayActivations({"fc1": acts.array("train", "fc1")[:8]}, {"fc1": acts.array("test", "fc1")})
    few_labels = {"test": labels["test"], "train_true": np.arange(8), "train_corrupted": np.arange(8)}
    with caplog.at_level(logging.WARNING, logger="latentgen.probing.checkpoint"):
        frame = layer_rows(few, few_labels, "fc1", BASELINES)
    assert len(frame) == len(BASELINES) * 2 and frame.accuracy.isna().all()
    for family in BASELINES:
        assert f"{family} on layer 'fc1' (fit_labels=true): cannot fit" in caplog.text
    assert "8 training rows for 8 classes" in caplog.text

    one_row_class = labels["train_corrupted"].copy()
    one_row_class[one_row_class == 7] = 6
    one_row_class[0] = 7
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latentgen.probing.checkpoint"):
        frame = layer_rows(acts, {**labels, "train_corrupted": one_row_class}, "fc1", ["qda", "ncm"],
                           fit_labels=("corrupted",))
    assert np.isnan(value(frame, "fc1", "qda", "corrupted")) and value(frame, "fc1", "ncm", "corrupted") > 0
    assert "class(es) [7] have fewer than 2 training rows" in caplog.text


def test_warnings_are_logged_naming_family_and_layer(mnist_layers, caplog):
    acts, labels = mnist_layers
    context = LayerContext(acts, "fc1", ("mlp", "mnist", 0.5, 1, 0), labels, np.arange(10),
                           ProbeOptions(device=torch.device("cpu")))

    def warns(layer):
        warnings.warn("variables are collinear", UserWarning)
        return []

    with caplog.at_level(logging.WARNING, logger="latentgen.probing.checkpoint"):
        _run_family(warns, registry.PROBE_FAMILIES["lda"], context, context.with_labels("true"))
    assert "lda on layer 'fc1' (fit_labels=true): UserWarning: variables are collinear" in caplog.text


# ------------------------------------------------------------------------------------------
# the benchmark's family timing and memory measurement, at small sizes


def test_bench_times_every_family_and_measures_memory(mnist_layers):
    import types

    from latentgen.bench import probes as bench

    acts, labels = mnist_layers
    args = types.SimpleNamespace(families=None, fit_labels="corrupted,true", corruption=0.5, device="cpu",
                                 variance=0.99)
    result = bench.time_families(acts.array("train", "fc1"), labels["train_true"], acts.array("test", "fc1"),
                                 labels["test"], args)
    layer_families = [n for n, f in registry.PROBE_FAMILIES.items() if not f.needs_checkpoint]
    assert result["families"] == ",".join(layer_families)
    for name in layer_families:
        for fit_labels in ("corrupted", "true"):
            assert result[f"family_{name}_{fit_labels}_s"] >= 0
    assert result["families_ratio"] == pytest.approx(result["families_all_s"] / result["families_alone_s"])
    assert sum(v for k, v in result.items() if k.startswith("family_")) <= result["families_all_s"]
    assert 0.1 < result["accuracy_masc_true"] <= 1 and 0 <= result["accuracy_qda_true"] <= 1

    spec = {"width": 256, "n_train": 800, "n_test": 100, "families": "ncm,qda", "seed": 0, "device": "cpu",
            "fit_labels": ["corrupted"]}
    measured = bench.memory_child(spec)
    assert measured["peak_bytes"] >= measured["before_bytes"] > 0
    assert measured["nan_rows"] == 0  # QDA: 80 rows per class for 256 features, computed as the authors
