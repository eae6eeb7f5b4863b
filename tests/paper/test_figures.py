"""Figures and metrics from synthetic tidy CSVs (real files in the real formats).

The synthetic experiment: two models on digits, six corruption degrees, two runs whose
training stopped at different epochs (so their checkpoint lists differ in length), random
probe accuracies, and the transfer equal to VeLPIC on the last hidden layer.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from latentgen.paper import figures
from latentgen.paper import metrics as metrics_lib
from latentgen.commands import metrics as metrics_cmd
from latentgen.paper.figures import COLUMNS, FIGURES

LAYERS = {"mlp": ["input", "fc1", "fc2", "fc3", "fc4"], "cnn": ["input", "flatten", "fc1", "fc2", "fc3"]}
LAST = {"mlp": "fc4", "cnn": "fc3"}
CORRUPTIONS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
EPOCHS = {1: [0, 1, 2, 4, 6], 2: [0, 1, 2, 4, 6, 8]}  # run 2 trained longer
FINAL = {1: 7, 2: 9}


def _write_experiment(root, rng, models=("mlp", "cnn"), corruptions=CORRUPTIONS):
    """Probe CSVs and train logs laid out as the workflow writes them; returns metrics paths."""
    paths = []
    for arch in models:
        for c in corruptions:
            probe_paths, logs = [], []
            for run, epochs in EPOCHS.items():
                rundir = root / "runs" / arch / f"c{c}" / f"run{run}"
                rundir.mkdir(parents=True)
                log = pd.DataFrame({"epoch": range(FINAL[run] + 1)})
                log["loss"] = rng.random(len(log))
                for col in ("train_acc_corrupted", "train_acc_true", "test_acc"):
                    log[col] = rng.random(len(log)).round(4)
                log.loc[0, ["loss", "train_acc_corrupted", "train_acc_true"]] = np.nan
                log["seconds"] = 0.1
                log.to_csv(rundir / "train_log.csv", index=False)
                logs.append(f"{run}={rundir / 'train_log.csv'}")
                for e in epochs:
                    rows = []
                    for layer in LAYERS[arch]:
                        for probe in ("masc", "velpic"):
                            for split in ("test", "train_corrupted", "train_true"):
                                rows.append((arch, "digits", c, run, e, layer, probe, split, round(rng.random(), 4)))
                    frame = pd.DataFrame(rows, columns=COLUMNS)
                    vel = frame[(frame.probe == "velpic") & (frame.layer == LAST[arch])].copy()
                    vel["probe"] = "transfer"
                    frame = pd.concat([frame, vel])
                    path = root / "probes" / arch / f"c{c}" / f"run{run}" / f"epoch{e}.csv"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    frame.to_csv(path, index=False)
                    probe_paths.append(str(path))
            out = root / "metrics" / arch / "digits" / f"c{c}.csv"
            args = metrics_cmd_args(probe_paths, logs, out)
            assert metrics_cmd.run(args) == 0
            paths.append(out)
    return paths


def metrics_cmd_args(probes, logs, out, config=None):
    from latentgen.options import command_parser

    p = command_parser("metrics")
    argv = ["--probes", *map(str, probes), "--train-logs", *logs, "--out", str(out)]
    if config is not None:
        argv += ["--config-json", json.dumps(config), "--seeds", json.dumps({"labels": 42})]
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    paths = _write_experiment(root, np.random.default_rng(0))
    return root, paths, figures.read_metrics(paths)


def test_registry_matches_spec_table():
    assert list(FIGURES) == [f"fig{i}" for i in range(1, 15)]
    kinds = {n: (f.kind, f.group, f.corruptions) for n, f in FIGURES.items()}
    mid, ends = (0.2, 0.4, 0.6, 0.8), (0.0, 1.0)
    assert kinds["fig1"] == ("masc", "main", mid) and kinds["fig4"] == ("masc", "main", ends)
    assert kinds["fig2"] == ("velpic", "main", mid) and kinds["fig6"] == ("velpic", "main", ends)
    assert kinds["fig3"] == ("transfer", "main", mid) and kinds["fig11"] == ("transfer", "main", ends)
    assert kinds["fig8"] == ("diff", "main", mid) and kinds["fig9"] == ("diff", "main", ends)
    for name, kind in [("fig5", "masc"), ("fig7", "velpic"), ("fig10", "diff"), ("fig12", "transfer"),
                       ("fig14", "train-transfer")]:
        assert kinds[name] == (kind, "extra", None)
    assert kinds["fig13"] == ("train-transfer", "main", None)


def test_metrics_file_holds_probe_rows_and_model_rows(experiment):
    root, paths, _ = experiment
    frame = pd.read_csv(paths[1])  # mlp c0.2
    assert list(frame.columns) == COLUMNS
    probed = frame[frame.probe != "model"]
    for run, epochs in EPOCHS.items():
        assert sorted(probed[probed.run == run].epoch.unique()) == epochs
    model = frame[frame.probe == "model"]
    log = pd.read_csv(root / "runs" / "mlp" / "c0.2" / "run2" / "train_log.csv")
    test = model[(model.run == 2) & (model.split == "test")].set_index("epoch")["accuracy"]
    assert np.allclose(test.loc[log.epoch].to_numpy(), log.test_acc.to_numpy())
    train = model[(model.run == 2) & (model.split == "train_corrupted")]
    assert 0 not in set(train.epoch)  # the initial model has no running train accuracy
    assert (model.layer == "model").all()
    sidecar = json.loads(paths[1].with_suffix(".json").read_text())
    assert len(sidecar["inputs"]) == sum(len(v) for v in EPOCHS.values()) + len(EPOCHS)
    assert sidecar["probed_epochs"] == {str(k): v for k, v in EPOCHS.items()}


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_renders_with_its_rows_and_truncated_runs(experiment, tmp_path, name):
    _, _, frame = experiment
    spec = FIGURES[name]
    source = figures.make_figure(name, frame, tmp_path / f"{name}.pdf", csv=tmp_path / f"{name}.csv")
    assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    written = pd.read_csv(tmp_path / f"{name}.csv")
    assert list(written.columns) == COLUMNS and len(written) == len(source)
    expected_rows = CORRUPTIONS if spec.corruptions is None else list(spec.corruptions)
    assert sorted(written.corruption.unique()) == expected_rows
    shortest = min(len(v) for v in EPOCHS.values())
    for (model, c, run), g in written.groupby(["model", "corruption", "run"]):
        assert sorted(g.epoch.unique()) == EPOCHS[run][:shortest], (model, c, run)
    if spec.kind == "diff":
        assert set(written.probe) == {"velpic-masc"}
    else:
        assert written.accuracy.between(0, 1).all()
        assert set(written.probe) == {"model", "transfer" if "transfer" in spec.kind else spec.kind}


def test_transfer_equals_velpic_last_layer_and_model_epoch0(experiment, tmp_path):
    _, _, frame = experiment
    fig2 = figures.figure_source(FIGURES["fig2"], frame)
    fig3 = figures.figure_source(FIGURES["fig3"], frame)
    key = ["model", "corruption", "run", "epoch"]
    transfer = fig3[fig3.probe == "transfer"]
    velpic = fig2[(fig2.probe == "velpic") & (fig2.layer == fig2.model.map(LAST))]
    merged = transfer.merge(velpic, on=key, suffixes=("_t", "_v"))
    assert len(merged) == len(transfer) > 0
    assert (merged.accuracy_t == merged.accuracy_v).all()

    model = fig3[fig3.probe == "model"].set_index(key)["accuracy"]
    for (m, c, run, e), value in model.items():
        if e == 0:
            assert value == model[(m, c, run, 1)]  # authors' plot: epoch 0 repeats epoch 1
    measured = figures.figure_source(FIGURES["fig3"], frame, model_epoch0="measured")
    mm = measured[(measured.probe == "model") & (measured.epoch == 0)]
    truth = frame[(frame.probe == "model") & (frame.epoch == 0) & (frame.split == "test")]
    joined = mm.merge(truth, on=key, suffixes=("", "_log"))
    assert len(joined) == len(mm) > 0 and (joined.accuracy == joined.accuracy_log).all()


def test_diff_is_velpic_minus_masc(experiment):
    _, _, frame = experiment
    diff = figures.figure_source(FIGURES["fig8"], frame)
    test = frame[frame.split == "test"]
    key = ["model", "corruption", "run", "epoch", "layer"]
    both = test[test.probe == "masc"].merge(test[test.probe == "velpic"], on=key, suffixes=("_m", "_v"))
    joined = diff.merge(both, on=key)
    assert len(joined) == len(diff) > 0
    assert np.allclose(joined.accuracy, joined.accuracy_v - joined.accuracy_m)


def test_band_is_mean_min_max_over_runs_at_aligned_positions():
    rows = []
    for run, epochs, values in [(1, [0, 1, 2, 4], [0.1, 0.2, 0.3, 0.4]), (2, [0, 1, 2, 4, 6], [0.3, 0.0, 0.5, 0.9, 1.0]),
                                (3, [0, 1, 2, 5], [0.2, 0.4, 0.1, 0.5])]:
        for e, v in zip(epochs, values):
            rows.append(("mlp", "digits", 0.2, run, e, "fc1", "masc", "test", v))
    panel = pd.DataFrame(rows, columns=COLUMNS)
    positions, labels = figures._positions(panel)
    assert labels == ["0", "1", "2", "4–5"]
    stats = figures._band(panel, positions)
    by_pos = [[0.1, 0.3, 0.2], [0.2, 0.0, 0.4], [0.3, 0.5, 0.1], [0.4, 0.9, 0.5]]
    assert np.allclose(stats["mean"], [np.mean(v) for v in by_pos])
    assert np.allclose(stats["min"], [min(v) for v in by_pos])
    assert np.allclose(stats["max"], [max(v) for v in by_pos])


def test_bad_inputs_are_refused(experiment, tmp_path):
    _, paths, frame = experiment
    with pytest.raises(ValueError, match="unknown figure 'fig15'"):
        figures.get_figure("fig15")
    only_ends = frame[frame.corruption.isin([0.0, 1.0])]
    with pytest.raises(ValueError, match="fig1: none of its corruption degrees"):
        figures.figure_source(FIGURES["fig1"], only_ends)
    broken = frame.copy()
    broken.loc[broken.index[0], "accuracy"] = 97.5  # a percentage where a fraction belongs
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        figures.figure_source(FIGURES["fig4"], broken)
    with pytest.raises(ValueError, match="model_epoch0"):
        figures.figure_source(FIGURES["fig4"], frame, model_epoch0="chance")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("model,dataset\nmlp,digits\n")
    with pytest.raises(ValueError, match="lacks the columns corruption"):
        figures.read_metrics([bad_csv])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        figures.read_metrics([tmp_path / "nope.csv"])


def test_metrics_refuses_mixed_or_inconsistent_inputs(experiment, tmp_path):
    root, _, _ = experiment
    a = root / "probes" / "mlp" / "c0.2" / "run1" / "epoch0.csv"
    b = root / "probes" / "mlp" / "c0.4" / "run1" / "epoch0.csv"
    log = f"1={root / 'runs' / 'mlp' / 'c0.2' / 'run1' / 'train_log.csv'}"
    with pytest.raises(ValueError, match="mix several corruption"):
        metrics_lib.collect([str(a), str(b)], metrics_lib.parse_train_logs([log]))
    with pytest.raises(ValueError, match="train logs are given for runs \\[1, 2\\]"):
        metrics_lib.collect([str(a)], metrics_lib.parse_train_logs([log, f"2={tmp_path / 'x.csv'}"]))
    with pytest.raises(ValueError, match="not RUN=PATH"):
        metrics_lib.parse_train_logs(["train_log.csv"])
    with pytest.raises(ValueError, match="duplicate probe rows"):
        metrics_lib.collect([str(a), str(a)], metrics_lib.parse_train_logs([log]))


def test_metrics_from_per_epoch_files_equal_metrics_from_per_run_files(experiment, tmp_path):
    """The workflow may hand metrics every checkpoint's probe CSV (any order) or one CSV per run:
    the table is the same byte for byte, ordered by run, epoch, then each checkpoint's own rows."""
    root, _, _ = experiment
    rng = np.random.default_rng(5)
    per_epoch = {run: [root / "probes" / "mlp" / "c0.4" / f"run{run}" / f"epoch{e}.csv" for e in epochs]
                 for run, epochs in EPOCHS.items()}
    logs = [f"{run}={root / 'runs' / 'mlp' / 'c0.4' / f'run{run}' / 'train_log.csv'}" for run in EPOCHS]
    per_run = []
    for run, paths in per_epoch.items():  # one header, then every checkpoint's rows, as `latentgen concat`
        lines = [p.read_text().splitlines(keepends=True) for p in paths]
        per_run.append(tmp_path / f"run{run}.csv")
        per_run[-1].write_text("".join([lines[0][0], *(line for file in lines for line in file[1:])]))
    shuffled = [p for paths in per_epoch.values() for p in paths]
    shuffled = [shuffled[i] for i in rng.permutation(len(shuffled))]
    outs = {}
    for name, probes, train_logs in (("run", per_run, logs), ("run_reversed", per_run[::-1], logs[::-1]),
                                      ("epoch", shuffled, logs), ("epoch_reversed", shuffled[::-1], logs[::-1])):
        outs[name] = tmp_path / f"{name}.csv"
        assert metrics_cmd.run(metrics_cmd_args(probes, train_logs, outs[name])) == 0
    expected = (root / "metrics" / "mlp" / "digits" / "c0.4.csv").read_bytes()  # per-epoch files in order
    assert {name: out.read_bytes() == expected for name, out in outs.items()} == dict.fromkeys(outs, True)
    frame = pd.read_csv(outs["epoch"])
    probed = frame[frame.probe != "model"]
    assert list(zip(probed.run, probed.epoch)) == sorted(zip(probed.run, probed.epoch))
    assert (frame.probe == "model").to_numpy()[len(probed):].all()
    first = pd.read_csv(per_epoch[1][0])
    assert list(zip(probed.layer, probed.probe, probed.split))[:len(first)] == list(
        zip(first.layer, first.probe, first.split))


def test_figure_cli_writes_pdf_csv_and_provenance(experiment, tmp_path):
    _, paths, _ = experiment
    main_paths = [str(p) for p in paths if "/mlp/" in str(p)]
    out = tmp_path / "fig3.pdf"
    done = subprocess.run([sys.executable, "-m", "latentgen", "figure", "--name", "fig3", "--metrics", *main_paths,
                           "--out", str(out), "--csv", str(tmp_path / "fig3.csv"),
                           "--config-json", json.dumps({"a": 1})], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "fig3.json").read_text())
    assert set(record["inputs"]) == set(main_paths)
    assert set(record["outputs"]) == {str(out), str(tmp_path / "fig3.csv")}
    assert record["figure"] == "fig3" and record["config_hash"]
    done = subprocess.run([sys.executable, "-m", "latentgen", "figure", "--name", "fig1", "--metrics",
                           str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.pdf")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "missing.csv" in done.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_runs_ending_at_their_own_final_epoch_keep_it():
    rows = []
    for run, epochs in [(1, [0, 1, 2, 4, 10, 17]), (2, [0, 1, 2, 4, 10, 20, 23])]:
        for e in epochs:
            rows.append(("alexnet", "tiny_imagenet", 0.2, run, e, "fc2", "velpic", "test", 0.5))
            rows.append(("alexnet", "tiny_imagenet", 0.2, run, e, "fc2", "transfer", "test", 0.5))
        for e in range(epochs[-1] + 1):
            rows.append(("alexnet", "tiny_imagenet", 0.2, run, e, "model", "model", "test", e / 100))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    plain = figures.figure_source(FIGURES["fig3"], frame)
    assert sorted(plain[plain.run == 2].epoch.unique()) == [0, 1, 2, 4, 10, 20]  # zip: position-wise
    anchored = figures.figure_source(FIGURES["fig3"], frame, own_final=[("alexnet", "tiny_imagenet")])
    assert sorted(anchored[anchored.run == 1].epoch.unique()) == [0, 1, 2, 4, 10, 17]
    assert sorted(anchored[anchored.run == 2].epoch.unique()) == [0, 1, 2, 4, 10, 23]
    model = anchored[(anchored.probe == "model") & (anchored.run == 2)].set_index("epoch")["accuracy"]
    assert model.loc[23] == 0.23 and model.loc[0] == 0.01
    positions, labels = figures._positions(anchored[anchored.probe != "model"])
    assert labels[-1] == "17–23" and positions[2][23] == positions[1][17] == 5


def test_a_rebuilt_figure_is_byte_identical(experiment, tmp_path):
    """No creation date in the PDF: the same inputs give the same bytes (a rebuild can be checked by hash)."""
    import time

    _, _, frame = experiment
    figures.make_figure("fig3", frame, tmp_path / "a.pdf")
    time.sleep(1.1)  # a creation date would now differ by a second
    figures.make_figure("fig3", frame, tmp_path / "b.pdf")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
