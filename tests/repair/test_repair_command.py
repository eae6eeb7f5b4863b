"""`latentgen repair` end to end on a real checkpoint and label file, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from latentgen.models import forward
from latentgen import repair as cv
from latentgen.__main__ import main
from latentgen.data.labels import write_label_file
from latentgen.training.loop import labels_digest
from latentgen.training.checkpoints import save_checkpoint
from test_curvature import memorized_digits


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta(corrupted, **changes):
    meta = {"arch": "mlp", "dataset": "digits", "corruption": 0.6, "run": 1, "epoch": 150, "num_classes": 10,
            "labels_sha256": labels_digest(corrupted), "model_options": {}, "train_subset": None}
    meta.update(changes)
    return meta


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint of the memorized digits MLP and its label file, in the training stage's formats."""
    folder = tmp_path_factory.mktemp("repair")
    model, data, corrupted = memorized_digits()
    labels = folder / "c0.6.npz"
    write_label_file(labels, data.train_true.numpy(), corrupted, seed=42, degree=0.6, num_classes=10, dataset="digits")
    checkpoint = folder / "epoch150.pt"
    save_checkpoint(checkpoint, model, _meta(corrupted))
    return {"folder": folder, "checkpoint": checkpoint, "labels": labels}


def _repair(files, out, *extra):
    return main(["repair", "--checkpoint", str(files["checkpoint"]), "--labels", str(files["labels"]),
                 "--out", str(out), "--quiet", "--device", "cpu", *extra])


def test_repair_table(files):
    out = files["folder"] / "repair.csv"
    rhos = ["1.0", "0.9", "0.75"]
    assert _repair(files, out, "--layer-sets", "fc4", "fc1+fc4", "--rhos", *rhos,
                   "--methods", "kfac", "svd", "random", "--references", "none") == 0
    table = pd.read_csv(out, keep_default_na=True)
    assert len(table) == 1 + 3 * 2 * len(rhos)
    assert set(table["repair"]) == {"none", "kfac", "svd", "random"}
    assert (table[["model", "dataset", "run", "epoch"]].drop_duplicates().values.tolist() == [["mlp", "digits", 1, 150]])
    assert np.allclose(table["corruption"], 0.6)
    unedited = table[table["repair"] == "none"].iloc[0]
    for _, row in table[table["rho"] == 1.0].iterrows():  # ρ = 1 is the unedited model
        for metric in cv.METRICS:
            assert row[metric] == unedited[metric]
    # a row recomputed through the library: the command edits the layers and ρ it names
    model, data, corrupted = memorized_digits()
    factors = cv.collect_factors(model, data.train_x, ["fc1", "fc4"])
    edited, logs = cv.edit_model(model, ["fc1", "fc4"], 0.9, factors)
    expected, _ = cv.evaluate_repair(edited, data)
    row = table[(table["repair"] == "kfac") & (table["layer_set"] == "fc1+fc4") & (table["rho"] == 0.9)].iloc[0]
    for metric in cv.METRICS:
        assert row[metric] == pytest.approx(expected[metric], abs=1e-12)
    assert row["pairs_kept"] == sum(log["pairs_kept"] for log in logs)
    assert row["pairs_total"] == model.fc1.weight.numel() + model.fc4.weight.numel()
    n_changed = int((data.train_true != data.train_corrupted).sum())
    assert unedited["changed_acc_corrupted"] == pytest.approx(
        float((forward.predict(model, data.train_x)[data.changed] == data.train_corrupted[data.changed]).sum()) / n_changed)
    # per-layer rows and provenance
    layers = pd.read_csv(out.with_name("repair.layers.csv"))
    assert len(layers) == 3 * (1 + 2) * len(rhos)
    assert set(layers["layer"]) == {"fc1", "fc4"}
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert str(files["checkpoint"]) in sidecar["inputs"] and str(out) in sidecar["outputs"]
    assert sidecar["config"]["fisher"] == "exact" and sidecar["config"]["rhos"] == [1.0, 0.9, 0.75]
    assert sidecar["config"]["changed_examples"] == n_changed


def test_one_factor_controls_through_the_command(files):
    out = files["folder"] / "factor_controls.csv"
    assert _repair(files, out, "--layer-sets", "fc4", "--rhos", "1.0", "0.8",
                   "--methods", "a_only", "g_only", "--references", "none") == 0
    table = pd.read_csv(out)
    assert sorted(table["repair"]) == ["a_only", "a_only", "g_only", "g_only", "none"]
    unedited = table[table["repair"] == "none"].iloc[0]
    model, data, _ = memorized_digits()
    factors = cv.collect_factors(model, data.train_x, ["fc4"])
    for method in ("a_only", "g_only"):
        rows = table[table["repair"] == method].set_index("rho")
        assert all(rows.loc[1.0, metric] == unedited[metric] for metric in cv.METRICS)
        edited, logs = cv.edit_model(model, ["fc4"], 0.8, factors, method=method)
        expected, _ = cv.evaluate_repair(edited, data)
        assert rows.loc[0.8, "test_acc"] == pytest.approx(expected["test_acc"], abs=1e-12)
        assert rows.loc[0.8, "pairs_kept"] == logs[0]["pairs_kept"] < logs[0]["pairs_total"]


def test_fisher_true_is_a_deprecated_alias_of_exact(files, capsys):
    outputs = {}
    for fisher in ("exact", "true"):
        out = files["folder"] / f"fisher_{fisher}.csv"
        assert _repair(files, out, "--layer-sets", "fc4", "--rhos", "0.9", "--methods", "kfac",
                       "--references", "none", "--fisher", fisher) == 0
        err = capsys.readouterr().err
        assert ("deprecated" in err) == (fisher == "true")
        outputs[fisher] = out
    assert "--fisher true is deprecated; use --fisher exact" in err and err.count("deprecated") == 1
    exact, alias = (pd.read_csv(outputs[f]) for f in ("exact", "true"))
    pd.testing.assert_frame_equal(alias, exact)  # the same rows, the canonical name in the fisher column
    assert list(alias.set_index("repair").loc[["kfac"], "fisher"]) == ["exact"]
    assert json.loads(outputs["true"].with_suffix(".json").read_text())["config"]["fisher"] == "exact"


@pytest.mark.parametrize("args, message", [
    # rho is range-checked by its argument type (argtypes.fraction), so the workflow's config
    # check refuses it before any job; the library's check_rho still guards direct callers
    (["--rhos", "0"], "argument --rhos: expected a fraction in (0, 1]"),
    (["--rhos", "1.5"], "argument --rhos: expected a fraction in (0, 1]"),
    (["--fisher", "exakt"], "invalid choice 'exakt' (choose from exact, empirical, sampled; did you mean 'exact'?)"),
    (["--samples", "0"], "expected an integer >= 1"),
    (["--factor-subset", "-3"], "expected an integer >= 1"),
    (["--seed", "-1"], "expected an integer >= 0"),
    (["--device", "gpu"], "invalid device 'gpu'"),
])
def test_argument_types_refuse_bad_values_at_parse_time(files, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        _repair(files, files["folder"] / "never.csv", *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (files["folder"] / "never.csv").exists()


def test_empirical_fisher_on_a_factor_subset_uses_those_rows_labels(files):
    out = files["folder"] / "subset.csv"
    assert _repair(files, out, "--layer-sets", "fc4", "--rhos", "0.9", "--methods", "kfac",
                   "--references", "none", "--fisher", "empirical", "--factor-subset", "300", "--seed", "4") == 0
    row = pd.read_csv(out).set_index("repair").loc["kfac"]
    model, data, _ = memorized_digits()
    rows = np.sort(np.random.RandomState(4).choice(len(data.train_x), 300, replace=False))
    picked = torch.from_numpy(rows)
    factors = cv.collect_factors(model, data.train_x[picked], ["fc4"], fisher="empirical",
                                 labels=data.train_corrupted[picked])
    edited, _ = cv.edit_model(model, ["fc4"], 0.9, factors)
    assert row["test_acc"] == pytest.approx(cv.evaluate_repair(edited, data)[0]["test_acc"], abs=1e-12)
    assert row["fisher"] == "empirical"


def test_band_diagnostic_through_the_command(files):
    out = files["folder"] / "bands.csv"
    assert _repair(files, out, "--layer-sets", "fc4", "fc1+fc4", "--rhos", "0.9", "--methods", "kfac",
                   "--references", "none", "--bands") == 0
    bands = pd.read_csv(out.with_name("bands.bands.csv"))
    assert list(bands["layer"]) == ["fc1"] * 4 + ["fc4"] * 4
    assert bands[["model", "epoch"]].drop_duplicates().values.tolist() == [["mlp", 150]]
    model, data, _ = memorized_digits()
    factors = cv.collect_factors(model, data.train_x, ["fc4"])
    expected = cv.band_activation_ratios(model, "fc4", factors["fc4"], data.train_x, data.changed)
    np.testing.assert_allclose(bands[bands["layer"] == "fc4"]["ratio"], [r["ratio"] for r in expected], rtol=1e-9)
    # the sweep used the same factors: its row equals the library's edit
    row = pd.read_csv(out).set_index(["repair", "layer_set"]).loc[("kfac", "fc4")]
    edited, _ = cv.edit_model(model, ["fc4"], 0.9, factors)
    assert row["test_acc"] == pytest.approx(cv.evaluate_repair(edited, data)[0]["test_acc"], abs=1e-12)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert str(out.with_name("bands.bands.csv")) in sidecar["outputs"]


@pytest.mark.parametrize("args, message", [
    (["--layer-sets", "act4"], "'act4' of MLP is a ReLU, not an nn.Linear"),
    (["--layer-sets", "fc9"], "'fc9' of MLP is not a module"),
    (["--layer-sets", ""], "empty layer set"),
    (["--layer-sets", "fc4+fc4"], "names a layer twice"),
    (["--out", "table.txt"], "must name a .csv file"),
])
def test_bad_arguments_name_the_problem(files, capsys, args, message):
    defaults = {"--out": str(files["folder"] / "bad.csv")}
    extra = list(args)
    if "--out" in extra:
        defaults["--out"] = str(files["folder"] / extra.pop(extra.index("--out") + 1))
        extra.remove("--out")
    code = main(["repair", "--checkpoint", str(files["checkpoint"]), "--labels", str(files["labels"]),
                 "--out", defaults["--out"], "--quiet", "--device", "cpu", "--methods", "kfac", *extra])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (files["folder"] / "bad.csv").exists()


def test_mismatched_inputs_are_refused(files, capsys, tmp_path):
    model, data, corrupted = memorized_digits()
    # a checkpoint whose weights do not fit its architecture
    wrong_arch = tmp_path / "cnn.pt"
    save_checkpoint(wrong_arch, model, _meta(corrupted, arch="cnn"))
    # labels other than those the checkpoint was trained on
    other = tmp_path / "c0.4.npz"
    from latentgen.data.labels import corrupt_labels

    write_label_file(other, data.train_true.numpy(), corrupt_labels(data.train_true.numpy(), 0.4, 10, seed=42),
                     seed=42, degree=0.4, num_classes=10, dataset="digits")
    cases = [
        ([str(wrong_arch), str(files["labels"])], "does not fit cnn on digits"),
        ([str(files["checkpoint"]), str(other)], "is not the one checkpoint"),
        ([str(tmp_path / "missing.pt"), str(files["labels"])], "checkpoint not found"),
    ]
    for (checkpoint, labels), message in cases:
        code = main(["repair", "--checkpoint", checkpoint, "--labels", labels, "--out", str(tmp_path / "r.csv"),
                     "--quiet", "--device", "cpu", "--layer-sets", "fc4", "--rhos", "0.9"])
        assert code == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "r.csv").exists()


def _table(run, rng):
    """A repair table in the command's format with random accuracies (two layer sets × three ρ)."""
    rows = [{"repair": "none", "layer_set": "", "rho": float("nan")},
            {"repair": "velpic", "layer_set": "output", "rho": float("nan")}]
    rows += [{"repair": method, "layer_set": layer_set, "rho": rho}
             for method in ("kfac", "random") for layer_set in ("fc4", "fc1+fc4") for rho in (1.0, 0.75, 0.5)]
    table = pd.DataFrame(rows)
    for metric in cv.METRICS + ("fraction_kept", "rel_change"):
        table[metric] = rng.random(len(table))
    for key, value in {"model": "mlp", "dataset": "digits", "corruption": 0.6, "run": run, "epoch": 10}.items():
        table[key] = value
    return table


def test_summary_selections_and_figure(tmp_path):
    from latentgen.paper import repair_figures

    rng = np.random.default_rng(0)
    paths = []
    for run in (1, 2):
        path = tmp_path / f"run{run}.csv"
        _table(run, rng).to_csv(path, index=False)
        paths.append(path)
    outputs = repair_figures.build(paths, tmp_path / "fig_repair.pdf", tmp_path / "fig_repair.csv",
                                   tmp_path / "repair_summary.csv", tmp_path / "fig_repair.json")
    assert (tmp_path / "fig_repair.pdf").read_bytes()[:5] == b"%PDF-" and len(outputs) == 3
    summary = pd.read_csv(tmp_path / "repair_summary.csv")
    for run, path in zip((1, 2), paths):
        table = pd.read_csv(path)
        kfac = table[table["repair"] == "kfac"]
        got = summary[(summary["run"] == str(run)) & (summary["repair"] == "kfac")].set_index("selection")
        fixed = kfac[(kfac["layer_set"] == "fc1+fc4") & (kfac["rho"] == 0.75)].iloc[0]
        assert got.loc["a_priori", "score"] == pytest.approx(fixed["test_acc_heldout"])
        chosen = kfac.loc[kfac["test_acc_select"].idxmax()]  # chosen on the 20 % split ...
        assert got.loc["selected_on_split", "score"] == pytest.approx(chosen["test_acc_heldout"])  # ... scored on 80 %
        assert got.loc["selected_on_split", "layer_set"] == chosen["layer_set"]
        assert got.loc["best_on_test", "score"] == pytest.approx(kfac["test_acc"].max())
        ref = summary[(summary["run"] == str(run)) & (summary["selection"] == "reference")]
        assert set(ref["repair"]) == {"unedited", "velpic"}
    mean = summary[(summary["run"] == "mean") & (summary["repair"] == "kfac") & (summary["selection"] == "best_on_test")]
    per_run = summary[(summary["run"] != "mean") & (summary["repair"] == "kfac") & (summary["selection"] == "best_on_test")]
    assert float(mean["score"].iloc[0]) == pytest.approx(per_run["score"].mean())
    with pytest.raises(ValueError, match="not a `latentgen repair` table"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"a": [1]}).to_csv(bad, index=False)
        repair_figures.build([bad], tmp_path / "x.pdf", tmp_path / "x.csv")


def test_over_training_figure_and_its_bad_arguments(tmp_path, capsys):
    from latentgen.__main__ import main

    rng = np.random.default_rng(1)
    paths = []
    for epoch in (0, 4, 10):
        table = _table(1, rng)
        table["epoch"] = epoch
        paths.append(tmp_path / f"epoch{epoch}.csv")
        table.to_csv(paths[-1], index=False)
    args = ["figure", "--name", "fig_repair_epochs", "--inputs", *map(str, paths), "--out", str(tmp_path / "e.pdf"),
            "--csv", str(tmp_path / "e.csv")]
    assert main(args) == 0
    assert (tmp_path / "e.json").exists()  # the provenance sidecar, as every figure's
    stats = pd.read_csv(tmp_path / "e.csv")
    assert sorted(stats["epoch"].unique()) == [0, 4, 10]
    assert set(stats["line"]) == {"unedited", "velpic", "kfac (selected)", "random (selected)"}
    for epoch, path in zip((0, 4, 10), paths):
        table = pd.read_csv(path)
        kfac = table[table["repair"] == "kfac"]
        chosen = kfac.loc[kfac["test_acc_select"].idxmax()]
        got = stats[(stats["epoch"] == epoch) & (stats["line"] == "kfac (selected)")]["test_acc_heldout"]
        assert float(got.iloc[0]) == pytest.approx(chosen["test_acc_heldout"])
    assert main(args + ["--summary", str(tmp_path / "s.csv")]) == 1
    assert "--summary belongs to fig_repair" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    # a repair figure from metrics, or a TMLR figure from repair tables: one line each, exit 1
    assert main(["figure", "--name", "fig_repair", "--metrics", str(paths[0]), "--out", str(tmp_path / "x.pdf"),
                 "--csv", str(tmp_path / "x.csv")]) == 1
    assert "fig_repair is drawn from --inputs" in capsys.readouterr().err
    assert main(["figure", "--name", "fig3", "--inputs", str(paths[0]), "--out", str(tmp_path / "y.pdf")]) == 1
    assert "fig3 is drawn from --metrics" in capsys.readouterr().err


def test_the_outputs_registry_names_every_figure_and_table_once():
    from latentgen.paper import outputs
    from latentgen.paper.figures import FIGURES
    from latentgen.paper.outputs import REPAIR_FIGURES
    from latentgen.paper.tables import TABLES

    every = outputs.outputs()
    assert list(every) == [*FIGURES, *REPAIR_FIGURES, *TABLES, "claims"]
    assert outputs.names("repair_figure") == list(REPAIR_FIGURES)
    assert outputs.kind("table_masc") == "table" and outputs.kind("fig_repair") == "repair_figure"
    with pytest.raises(ValueError, match="did you mean 'fig3'"):
        outputs.kind("fig33")
