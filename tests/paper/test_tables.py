"""The 2025 paper's tables from small hand-made probe tables with known answers.

The fixture: an MLP on digits at c = 0 and 0.4, two runs that ended at different epochs (7 and 9),
with rows at an earlier probed epoch that must be ignored, an input layer better than every
hidden layer (never a best layer), and a best single run on another layer than the best mean
(SPEC D14).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from latentgen.paper import table_files, table_inputs, tables
from latentgen.__main__ import main
from latentgen.provenance import verify_sidecar

LAYERS = ["input", "fc1", "fc2", "fc3", "fc4"]
FINAL = {1: 7, 2: 9}
# per (probe, fit_labels): per run, test accuracy per layer at the final epoch
MASC_C04 = {1: [0.99, 0.50, 0.90, 0.70, 0.60], 2: [0.99, 0.50, 0.40, 0.70, 0.60]}  # best mean: fc3 0.70; best run: fc2
TIE = {1: [0.10, 0.60, 0.60, 0.20, 0.20], 2: [0.10, 0.60, 0.60, 0.20, 0.20]}  # fc1 = fc2: the earlier, fc1
VELPIC = {1: [0.99, 0.30, 0.50, 0.80, 0.95], 2: [0.99, 0.30, 0.50, 0.80, 0.55]}  # fc3 0.80 (fc4: 0.75)
VELPIC_TRUE = {1: [0.2, 0.3, 0.4, 0.5, 0.9], 2: [0.2, 0.3, 0.4, 0.5, 0.7]}  # fc4 0.80
MODEL_TEST = {1: 0.30, 2: 0.40}  # at the final epoch (earlier epochs 0.95)
HEADER = ["model", "dataset", "corruption", "run", "epoch", "layer", "probe", "fit_labels", "split", "accuracy"]


def _rows(c, run, epoch, probe, labels, values, split="test"):
    return [("mlp", "digits", c, run, epoch, layer, probe, labels, split, v) for layer, v in zip(LAYERS, values)]


def _write_run(root: Path, c: float, run: int, extra=()) -> tuple[Path, Path]:
    """The probe table and train log of one run; returns their paths."""
    rows = []
    for probe, labels, table in (("masc", "corrupted", MASC_C04), ("masc", "true", TIE),
                                 ("velpic", "corrupted", VELPIC), ("velpic", "true", VELPIC_TRUE)):
        rows += _rows(c, run, FINAL[run], probe, labels, table[run])
        rows += _rows(c, run, FINAL[run], probe, labels, [0.5] * 5, split="train_corrupted")
        rows += _rows(c, run, 4, probe, labels, [1.0] * 5)  # an earlier checkpoint: ignored
    for family, value in (("logistic", 0.55), ("ncm", 0.45)):
        for labels in ("corrupted", "true"):
            rows += _rows(c, run, FINAL[run], family, labels, [value + 0.01 * i for i in range(5)])[1:]
    for probe, _ in tables.SENSITIVITY[:-2]:
        rows += _rows(c, run, FINAL[run], probe, "corrupted", [0.9, 0.2, 0.3, 0.1, 0.1])
    rows += _rows(c, run, FINAL[run], "masc_1pc", "corrupted", [0.9, 0.1, 0.1, 0.1, 0.35])
    rows += list(extra)
    probes = root / "probes" / f"c{c}" / f"run{run}.csv"
    probes.parent.mkdir(parents=True, exist_ok=True)
    with open(probes, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    log = root / "runs" / "mlp" / "digits" / f"c{c}" / f"run{run}" / "train_log.csv"
    log.parent.mkdir(parents=True, exist_ok=True)
    epochs = range(FINAL[run] + 1)
    pd.DataFrame({"epoch": epochs, "loss": 0.1, "train_acc_corrupted": 0.5, "train_acc_true": 0.5,
                  "test_acc": [0.95] * FINAL[run] + [MODEL_TEST[run]], "seconds": 0.1}).to_csv(log, index=False)
    return probes, log


@pytest.fixture
def inputs(tmp_path):
    probes, logs = [], []
    for c in (0.0, 0.4):
        for run in (1, 2):
            clean = _rows(0.0, run, FINAL[run], "masc", "corrupted@0.4", [0.9, 0.1, 0.2, 0.3, 0.66]) if c == 0 else ()
            p, log = _write_run(tmp_path, c, run, extra=clean)
            probes.append(str(p))
            logs.append(str(log))
    return tmp_path, probes, logs


def _independent_best(paths, probe, labels, c):
    """Best layer recomputed from the CSV rows with plain Python: per run its final epoch, per
    layer the mean over runs, the max over non-input layers (first layer on ties)."""
    rows = [r for p in paths for r in csv.DictReader(open(p))]
    rows = [r for r in rows if float(r["corruption"]) == c and r["split"] == "test"]
    final = {}
    for r in rows:
        final[r["run"]] = max(final.get(r["run"], 0), int(r["epoch"]))
    per_layer = {}
    for r in rows:
        if r["probe"] == probe and r["fit_labels"] == labels and int(r["epoch"]) == final[r["run"]]:
            per_layer.setdefault(r["layer"], []).append(float(r["accuracy"]))
    means = [(sum(v) / len(v), layer) for layer, v in per_layer.items() if layer != "input"]
    best = max(v for v, _ in means)
    return best, next(layer for v, layer in sorted(means, key=lambda x: LAYERS.index(x[1])) if v == best)


def test_table_masc_best_layer_is_the_best_mean_not_the_best_run(inputs):
    _, probes, logs = inputs
    table = tables.build_table("table_masc", probes=probes, train_logs=logs)
    row = table[table["corruption"] == 0.4].iloc[0]
    assert (row["masc_corrupted"], row["masc_corrupted_layer"]) == pytest.approx((0.70, "fc3"))  # best run: fc2 0.90
    assert row["masc_true_layer"] == "fc1" and row["masc_true"] == pytest.approx(0.60)  # tie fc1 = fc2 -> fc1
    assert (row["velpic_corrupted"], row["velpic_corrupted_layer"]) == pytest.approx((0.80, "fc3"))
    assert (row["velpic_true"], row["velpic_true_layer"]) == pytest.approx((0.80, "fc4"))
    assert row["model_test"] == pytest.approx(0.35)  # each run's final epoch, not the earlier 0.95
    for probe, labels in tables.MASC_PAIRS:
        value, layer = _independent_best(probes, probe, labels, 0.4)
        assert row[f"{probe}_{labels}"] == pytest.approx(value) and row[f"{probe}_{labels}_layer"] == layer
        assert "input" not in set(table[f"{probe}_{labels}_layer"])  # input is 0.99 everywhere
    assert list(table.columns[:12]) == ["model", "dataset", "corruption", "model_test", "masc_corrupted",
                                        "masc_corrupted_layer", "masc_true", "masc_true_layer", "velpic_corrupted",
                                        "velpic_corrupted_layer", "velpic_true", "velpic_true_layer"]
    # the clean model probed with the 0.4 subspaces sits in the 0.4 row; none for c = 0
    assert (row["masc_clean"], row["masc_clean_layer"]) == pytest.approx((0.66, "fc4"))
    assert table.loc[table["corruption"] == 0.0, "masc_clean"].isna().all()


def test_latex_and_markdown_content(inputs, tmp_path):
    _, probes, logs = inputs
    table = tables.build_table("table_masc", probes=probes, train_logs=logs)
    csv_path, tex, md = table_files.write_table("table_masc", table, tmp_path / "out" / "table_masc")
    latex = Path(tex).read_text()
    lines = latex.splitlines()
    assert lines[0].startswith("% table\\_masc")
    assert lines[1].startswith(r"\begin{tabular}{l") and lines[2] == r"\toprule" and lines[4] == r"\midrule"
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert r"Model & c (\%) & Model test & MASC corr. & MASC true & VeLPIC corr. & VeLPIC true" in lines[3]
    assert r"MLP-Digits & 40 & 35.0 & 70.0 (FC3) & 60.0 (FC1) & 80.0 (FC3) & 80.0 (FC4) & 66.0 (FC4) \\" in lines
    assert r"MLP-Digits & 0 & 35.0 & 70.0 (FC3) & 60.0 (FC1) & 80.0 (FC3) & 80.0 (FC4) & -- \\" in lines
    assert sum(line.endswith(r"\\") for line in lines) == 3  # header + 2 rows
    markdown = Path(md).read_text().splitlines()
    assert markdown[0].startswith("| Model | c (%) | Model test |") and markdown[1].startswith("|---|---:|")
    assert "| MLP-Digits | 40 | 35.0 | 70.0 (FC3) | 60.0 (FC1) | 80.0 (FC3) | 80.0 (FC4) | 66.0 (FC4) |" in markdown
    written = pd.read_csv(csv_path)
    assert written.loc[written["corruption"] == 0.4, "masc_corrupted"].iloc[0] == pytest.approx(0.70)  # a fraction


def test_latex_escaping():
    assert table_files.latex_escape("a_b & 50% #1 {x} $") == r"a\_b \& 50\% \#1 \{x\} \$"
    text = table_files.to_latex(["l_0", "acc"], [["l0_1", "12.3"], ["x", ""]])
    assert r"l\_0 & acc \\" in text and r"l0\_1 & 12.3 \\" in text and r"x & -- \\" in text
    assert r"\begin{tabular}{lr}" in text
    assert "| a\\|b |" in table_files.to_markdown(["h"], [["a|b"]])


def test_baselines_and_sensitivity(inputs):
    _, probes, logs = inputs
    base = tables.build_table("table_baselines", probes=probes, train_logs=logs)
    logistic = base[(base["probe"] == "logistic") & (base["fit_labels"] == "true") & (base["corruption"] == 0.4)]
    assert (logistic["accuracy"].iloc[0], logistic["layer"].iloc[0]) == pytest.approx((0.59, "fc4"))
    assert set(base["probe"]) == {"masc", "velpic", "logistic", "ncm"} and "input" not in set(base["layer"])
    assert list(base["model_test"].unique()) == pytest.approx([0.35])
    sens = tables.build_table("table_sensitivity", probes=probes)
    row = sens[sens["corruption"] == 0.4].iloc[0]
    assert (row["masc_var0.25"], row["masc_var0.25_layer"]) == pytest.approx((0.3, "fc2"))  # not input's 0.9
    assert (row["masc_1pc"], row["masc_1pc_layer"]) == pytest.approx((0.35, "fc4"))
    assert (row["masc_var0.99"], row["masc_var0.99_layer"]) == pytest.approx((0.70, "fc3"))  # falls back to masc


def test_relabel_table_reports_the_last_epoch_as_the_authors_and_the_best_beside_it(tmp_path):
    paths = []
    for run, (layer, before, best, last, epochs, early) in enumerate(
            [("fc2", 0.50, 0.56, 0.53, 5, True), ("fc3", 0.52, 0.54, 0.51, 30, False)], start=1):
        path = tmp_path / f"relabel{run}.csv"
        pd.DataFrame([dict(model="cnn", dataset="digits", corruption=0.6, run=run, subspaces="corrupted", layer=layer,
                           layer_select_acc=0.7, epochs_trained=epochs, stopped_early=early, best_epoch=epochs - 3,
                           test_acc_80_before=before, test_acc_80_after=best, test_acc_20_before=0.5,
                           test_acc_20_after=0.6, relabel_agreement_true=0.8, relabel_agreement_corrupted=0.5,
                           test_acc_80_last=last, test_acc_20_last=0.58)]).to_csv(path, index=False)
        paths.append(str(path))
    table = tables.build_table("table_relabel", relabel=paths)
    row = table.iloc[0]
    assert row["test_acc_80_before"] == pytest.approx(0.51) and row["test_acc_80_after"] == pytest.approx(0.52)
    assert row["gain_80"] == pytest.approx(0.01)  # the last epoch's
    assert row["test_acc_80_best"] == pytest.approx(0.55) and row["test_acc_20_best"] == pytest.approx(0.6)
    assert row["test_acc_20_after"] == pytest.approx(0.58)
    assert (row["layer"], row["epochs_trained"], row["stopped_early"], row["runs"]) == ("fc2;fc3", "5;30", 1, 2)
    heads, rows = table_files._CELLS["table_relabel"](table)
    assert heads[5:8] == ["After, last epoch (80 %)", "Gain", "Best epoch (80 %)"]
    assert rows[0][4:11] == ["51.0", "52.0", "1.0", "55.0", "FC2, FC3", "5, 30", "1/2"]
    # a result file without the last epoch's columns is refused, naming them
    pd.read_csv(paths[0]).drop(columns=["test_acc_80_last"]).to_csv(paths[0], index=False)
    with pytest.raises(ValueError, match="lacks the columns test_acc_80_last"):
        tables.build_table("table_relabel", relabel=paths)


def test_the_cnns_best_layer_may_be_its_input_layer_as_the_authors_table(tmp_path):
    """The authors' Table_values.ipynb: max over input, flattern, fc1-fc3 for the CNN; hidden layers
    only for the others (registry.Architecture.best_layer_includes_input)."""
    from latentgen import registry

    assert [a for a, spec in registry.ARCHITECTURES.items() if spec.best_layer_includes_input] == ["cnn"]
    layers = registry.get_architecture("cnn").probe_layers
    rows = [("cnn", "digits", 0.4, 1, 3, layer, "masc", "corrupted", "test", v)
            for layer, v in zip(layers, [0.9, 0.5, 0.6, 0.7, 0.4])]
    rows += [("mlp", "digits", 0.4, 1, 3, layer, "masc", "corrupted", "test", v)
             for layer, v in zip(LAYERS, [0.9, 0.5, 0.6, 0.7, 0.4])]
    pd.DataFrame(rows, columns=HEADER).to_csv(tmp_path / "p.csv", index=False)
    frame = table_inputs.read_probe_tables([tmp_path / "p.csv"])  # string columns, as every build reads them
    best = tables.best_layers(frame, "masc", "corrupted").set_index("model")
    assert (best.loc["cnn", "layer"], best.loc["cnn", "accuracy"]) == ("input", 0.9)
    assert (best.loc["mlp", "layer"], best.loc["mlp", "accuracy"]) == ("fc3", 0.7)
    assert tables.best_layers(frame.iloc[:0], "masc", "corrupted").empty  # no rows: no best layer, no error
    hidden = tables.best_layers(frame, "masc", "corrupted", with_input=False).set_index("model")  # table_sensitivity's
    assert hidden.loc["cnn", "layer"] == "fc2" and hidden.loc["mlp", "layer"] == "fc3"


def test_missing_and_inconsistent_inputs_name_the_file(inputs, tmp_path):
    _, probes, logs = inputs
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        tables.build_table("table_masc", probes=[*probes, str(tmp_path / "nowhere.csv")], train_logs=logs)
    with pytest.raises(FileNotFoundError, match="train log .*gone"):
        tables.build_table("table_masc", probes=probes, train_logs=[*logs[:-1], str(tmp_path / "gone" / "x.csv")])
    with pytest.raises(ValueError, match="needs train logs"):
        tables.build_table("table_masc", probes=probes)
    with pytest.raises(ValueError, match="no train log given for mlp-digits c=0.4 run 2"):
        tables.build_table("table_masc", probes=probes, train_logs=logs[:-1])
    bad = tmp_path / "bad.csv"
    pd.read_csv(probes[0]).drop(columns="fit_labels").to_csv(bad, index=False)
    with pytest.raises(ValueError, match=re.escape(f"{bad} lacks the columns fit_labels")):
        tables.build_table("table_masc", probes=[str(bad)], train_logs=logs)
    # a stale train log: it ends at another epoch than the probe table's final one
    stale = pd.read_csv(logs[-1])
    stale.iloc[:-1].to_csv(logs[-1], index=False)
    with pytest.raises(ValueError, match="ends at epoch 8 but the probe tables' final epoch of that run is 9"):
        tables.build_table("table_masc", probes=probes, train_logs=logs)


def test_incomplete_runs_are_refused(inputs):
    _, probes, logs = inputs
    frame = pd.read_csv(probes[-1])
    frame[~((frame["layer"] == "fc3") & (frame["probe"] == "masc"))].to_csv(probes[-1], index=False)
    with pytest.raises(ValueError, match=r"masc \(corrupted\) for mlp-digits c=0.4: the layers have different"):
        tables.build_table("table_masc", probes=probes, train_logs=logs)


def test_missing_probe_rows_are_refused_naming_the_files(inputs):
    _, probes, logs = inputs
    for p in probes:
        frame = pd.read_csv(p)
        frame[~((frame["probe"] == "velpic") & (frame["fit_labels"] == "true"))].to_csv(p, index=False)
    with pytest.raises(ValueError, match="no velpic test rows of a table layer with fit_labels=true for mlp-digits c=0.0 "
                                         f"in {re.escape(probes[0])}, {re.escape(probes[1])}$"):
        tables.build_table("table_masc", probes=probes, train_logs=logs)


def test_command_writes_three_files_pdf_and_sidecar(inputs, tmp_path, capsys):
    _, probes, logs = inputs
    prefix = tmp_path / "results" / "table_masc"
    pdf = tmp_path / "results" / "fig_table_masc.pdf"
    code = main(["table", "--name", "table_masc", "--probes", *probes, "--train-logs", *logs,
                 "--out-prefix", str(prefix), "--pdf", str(pdf), "--config-json", json.dumps({"a": 1})])
    assert code == 0
    for suffix in (".csv", ".tex", ".md"):
        assert Path(f"{prefix}{suffix}").is_file()
    assert pdf.read_bytes()[:4] == b"%PDF"
    sidecar = prefix.with_suffix(".json")
    assert verify_sidecar(sidecar) == []
    record = json.loads(sidecar.read_text())
    assert set(record["outputs"]) == {f"{prefix}.csv", f"{prefix}.tex", f"{prefix}.md", str(pdf)}
    assert set(record["inputs"]) == {*probes, *logs} and record["table"] == "table_masc"
    base_pdf = tmp_path / "results" / "fig_table_baselines.pdf"
    assert main(["table", "--name", "table_baselines", "--probes", *probes, "--train-logs", *logs,
                 "--out-prefix", str(tmp_path / "results" / "table_baselines"), "--pdf", str(base_pdf)]) == 0
    assert base_pdf.read_bytes()[:4] == b"%PDF"
    assert main(["table", "--name", "table_sensitivity", "--probes", *probes, "--out-prefix",
                 str(tmp_path / "s"), "--pdf", str(tmp_path / "s.pdf")]) == 1
    assert "has no bar chart" in capsys.readouterr().err
    assert main(["table", "--name", "table_nope", "--out-prefix", str(tmp_path / "n")]) == 1
    assert "unknown table 'table_nope'" in capsys.readouterr().err


def test_registry_states_inputs_outputs_and_captions(repo_root):
    assert set(tables.TABLES) == {"table_masc", "table_baselines", "table_relabel", "table_sensitivity"}
    for name, spec in tables.TABLES.items():
        assert spec.needs and set(spec.needs) <= set(tables.INPUT_KINDS)
        assert spec.outputs("results/" + name) == [f"results/{name}.csv", f"results/{name}.tex", f"results/{name}.md"]
        assert (repo_root / "workflow" / "report" / f"{name}.rst").is_file()
        if spec.figure:
            assert (repo_root / "workflow" / "report" / f"{spec.figure}.rst").is_file()
    assert tables.TABLES["table_relabel"].needs == ("relabel",)
    with pytest.raises(ValueError, match="unknown input kind"):
        tables.TableSpec("t", "t", needs=("logs",))


def test_a_probe_that_could_not_be_fit_is_never_a_best_layer_nor_a_silent_number():
    """NaN rows (the probe job logged why, e.g. QDA on a singular class) make that layer's mean NaN;
    a key with no layer fit keeps an empty cell."""
    rows = []
    for run in (1, 2):
        rows += _rows(0.4, run, 9, "qda", "corrupted", [0.1, 0.9 if run == 1 else float("nan"), 0.3, 0.2, 0.25])
        rows += _rows(0.4, run, 9, "lda", "corrupted", [float("nan")] * 5)
    final = pd.DataFrame(rows, columns=HEADER)
    qda = tables.best_layers(final, "qda", "corrupted")
    assert (qda["layer"].tolist(), qda["accuracy"].tolist()) == (["fc2"], [0.3])  # fc1 (0.9 in run 1) is unfit in run 2
    lda = tables.best_layers(final, "lda", "corrupted")
    assert lda["layer"].tolist() == [""] and lda["accuracy"].isna().all()
    assert table_files.percent(lda["accuracy"].iloc[0]) == ""
