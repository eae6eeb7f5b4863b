"""Relabel-and-retrain (SPEC §10) on the real digits data: the layer choice and the relabelled
labels against MASC fit independently per layer (corrupted and true labels), the early-stopping
rule on constructed accuracy sequences (stop epoch and chosen model), bitwise resume after real
SIGKILLs at every stage, a result CSV that never exists half-written, and refused inputs."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from latentgen.data.datasets import load_dataset, prepare_dataset
from latentgen.models.forward import extract_activations
from latentgen.data.labels import corrupt_dataset, read_label_file
from latentgen.probing.masc_velpic import MASC
from latentgen.provenance import verify_sidecar
from latentgen.repair.relabel import (LOG_COLUMNS, RESULT_COLUMNS, SUBSPACES, EarlyStopping, read_result,
                               relabel_and_retrain)
from latentgen.repair.evaluation import split_test_set
from latentgen.training.runs import KILL_ENV
from latentgen.training.loop import resolve_labels, train
from latentgen.training.hyperparameters import default_train_config
from latentgen.training.checkpoints import load_checkpoint, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_TRAIN = 300


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """digits prepared and corrupted (c = 0.4) through the library, and a 6-epoch MLP run on its
    first 300 training images, shuffled (so a resumed retraining must also restore the order's
    generator)."""
    root = tmp_path_factory.mktemp("relabel")
    npz = prepare_dataset("digits", None, root / "digits.npz")
    labels = root / "c0.4.npz"
    corrupt_dataset("digits", 0.4, labels, prepared=npz)
    data = load_dataset("digits", prepared=npz)
    config = default_train_config("mlp", "digits", corruption=0.4, run=1, train_subset=N_TRAIN, max_epochs=6,
                                  shuffle=True)
    manifest = train(config, root / "run", labels=labels, dataset=data, device="cpu", verbose=False)
    checkpoint = root / "run" / "checkpoints" / f"epoch{manifest['final_epoch']}.pt"
    return {"root": root, "npz": npz, "labels": labels, "data": data, "checkpoint": checkpoint, "config": config}


def _relabel(base, out, **kwargs):
    kwargs.setdefault("subspaces", "corrupted")
    return relabel_and_retrain(base["checkpoint"], base["labels"], out, dataset=base["data"], device="cpu",
                               threads=1, verbose=False, **kwargs)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------
# layer choice and relabelling


@pytest.mark.parametrize("subspaces", SUBSPACES)
def test_layer_and_labels_equal_an_independent_masc(base, tmp_path, subspaces):
    """The chosen layer is the first argmax of MASC's 20 %-split accuracy over the probe layers
    (input included), each MASC fit here on the trained images with the corrupted or the true
    labels; labels.npz holds that MASC's predictions for every training image."""
    out = tmp_path / "out"
    row = _relabel(base, out, subspaces=subspaces, max_epochs=0)
    model, _ = load_checkpoint(base["checkpoint"])
    data, lf = base["data"], read_label_file(base["labels"])
    fit_labels = (lf.corrupted if subspaces == "corrupted" else lf.true)[:N_TRAIN]
    select, heldout = split_test_set(len(data.test_y))
    assert len(select) == round(0.2 * len(data.test_y)) and not set(select) & set(heldout)
    with torch.no_grad():
        train_acts = extract_activations(model, data.train_x)
        test_acts = extract_activations(model, data.test_x)
    accs, fitted = [], {}
    for layer in model.probe_layers:
        masc = MASC(variance=0.99).fit(train_acts[layer][:N_TRAIN].numpy(), fit_labels)
        fitted[layer] = masc
        accs.append(np.mean(masc.predict(test_acts[layer][select].numpy()) == data.test_y[select].numpy()))
    chosen = list(model.probe_layers)[int(np.argmax(accs))]
    assert row["layer"] == chosen and row["layer_select_acc"] == pytest.approx(max(accs), abs=0)

    table = _rows(out / "layers.csv")
    assert [r["layer"] for r in table] == list(model.probe_layers)
    assert [float(r["select_acc"]) for r in table] == pytest.approx(accs, abs=1e-12)
    assert [r["chosen"] for r in table] == [str(layer == chosen) for layer in model.probe_layers]

    relabelled = read_label_file(out / "labels.npz")
    expected = fitted[chosen].predict(train_acts[chosen].numpy())
    assert len(relabelled.corrupted) == len(data.train_y)  # every training image, not only the trained ones
    np.testing.assert_array_equal(relabelled.corrupted, expected)
    np.testing.assert_array_equal(relabelled.true, lf.true)
    assert (relabelled.degree, relabelled.seed, relabelled.dataset) == (lf.degree, lf.seed, "digits")
    assert row["relabel_agreement_true"] == np.mean(expected[:N_TRAIN] == lf.true[:N_TRAIN])
    assert row["relabel_agreement_corrupted"] == np.mean(expected[:N_TRAIN] == lf.corrupted[:N_TRAIN])
    # the training code reads the relabelled file as a label file of this run's degree
    labels, _ = resolve_labels(base["config"].resolved(), data.train_y.numpy(), out / "labels.npz")
    np.testing.assert_array_equal(labels, expected)

    # no retraining: before == after, and the 80 % numbers are the model's own on the held-out split
    from latentgen.models.forward import predict

    pred = predict(model, data.test_x).numpy()
    heldout_acc = np.mean(pred[heldout] == data.test_y[heldout].numpy())
    assert row["test_acc_80_before"] == row["test_acc_80_after"] == heldout_acc
    assert row["test_acc_20_before"] == np.mean(pred[select] == data.test_y[select].numpy())
    assert (row["epochs_trained"], row["best_epoch"], row["stopped_early"]) == (0, 0, False)


def test_exclude_input_drops_only_the_input_layer(base, tmp_path):
    _relabel(base, tmp_path / "out", max_epochs=0, exclude_input=True)
    assert [r["layer"] for r in _rows(tmp_path / "out" / "layers.csv")] == ["fc1", "fc2", "fc3", "fc4"]


# ------------------------------------------------------------------------------------------
# early stopping


@pytest.mark.parametrize("scores, patience, stop_epoch, best_epoch", [
    ([0.5, 0.6, 0.6, 0.55, 0.6, 0.9], 3, 5, 2),  # ties are no improvement
    ([0.0, 0.0, 0.0, 0.0], 3, 4, 1),  # the first epoch counts as the best, even at 0
    ([0.1, 0.2, 0.3, 0.2, 0.4, 0.3], 2, None, 5),  # never 2 in a row without a new best
    ([0.3, 0.2], 1, 2, 1),
])
def test_early_stopping_rule(scores, patience, stop_epoch, best_epoch):
    stopper, stopped = EarlyStopping(patience), None
    for epoch, score in enumerate(scores, start=1):
        if stopper.update(epoch, score):
            stopped = epoch
            break
    assert (stopped, stopper.best_epoch) == (stop_epoch, best_epoch)


def _scripted(sequence, states):
    """An epoch evaluation that returns ``sequence[epoch]`` and keeps a copy of each epoch's weights."""
    def evaluate(model, epoch):
        states[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return sequence[epoch]
    return evaluate


def test_early_stopping_stops_at_the_right_epoch_and_reports_the_best_model(base, tmp_path):
    # (20 % split, 80 % split) per epoch; epoch 0 is the model before retraining
    sequence = {0: (0.90, 0.80), 1: (0.30, 0.31), 2: (0.50, 0.52), 3: (0.50, 0.53), 4: (0.70, 0.71),
                5: (0.69, 0.90), 6: (0.70, 0.95), 7: (0.65, 0.66), 8: (0.99, 0.99)}
    states = {}
    out = tmp_path / "out"
    row = _relabel(base, out, max_epochs=30, patience=3, save_model=True, evaluate=_scripted(sequence, states))
    # epoch 4 is the best (epoch 6 only ties it); epochs 5, 6, 7 bring nothing better: stop after 7
    assert (row["epochs_trained"], row["stopped_early"], row["best_epoch"]) == (7, True, 4)
    assert (row["test_acc_20_before"], row["test_acc_80_before"]) == (0.90, 0.80)
    assert (row["test_acc_20_after"], row["test_acc_80_after"]) == (0.70, 0.71)
    assert (row["test_acc_20_last"], row["test_acc_80_last"]) == (0.65, 0.66)
    log = _rows(out / "train_log.csv")
    assert list(log[0]) == LOG_COLUMNS and [int(r["epoch"]) for r in log] == list(range(8))
    assert [float(r["select_acc"]) for r in log] == [sequence[e][0] for e in range(8)]
    assert [r["best_epoch"] for r in log] == ["", "1", "2", "2", "4", "4", "4", "4"]
    # model.pt is the model after epoch 4, as a training checkpoint
    saved = read_checkpoint(out / "model.pt")
    assert saved["meta"]["epoch"] == 6 + 4 and saved["meta"]["relabel"]["retrain_epoch"] == 4
    assert all(torch.equal(saved["model_state"][k], states[4][k]) for k in states[4])
    assert not all(torch.equal(saved["model_state"][k], states[7][k]) for k in states[7])
    assert not (out / "resume.pt").exists()


def test_without_early_stop_training_ends_at_max_epochs(base, tmp_path):
    sequence = {e: (0.1 * e, 0.1 * e + 0.05) for e in range(5)}
    row = _relabel(base, tmp_path / "out", max_epochs=4, patience=3, evaluate=_scripted(sequence, {}))
    assert (row["epochs_trained"], row["stopped_early"], row["best_epoch"]) == (4, False, 4)
    assert row["test_acc_80_after"] == row["test_acc_80_last"] == pytest.approx(0.45)


# ------------------------------------------------------------------------------------------
# resume after real kills; outputs complete or absent


# One driver process imports what the command needs once (torch._dynamo: creating an optimizer
# imports it, 2-3 s), then runs each attempt of the command in a forked child (the driver itself
# runs no torch op, so forking is safe): every attempt is a real process that the hook really
# SIGKILLs, without paying the imports per attempt. After each attempt it prints the attempt, how
# the child ended and the output folder's files; with a copy path it also keeps a copy of the folder.
DRIVER = """
import json, os, shutil, sys
from latentgen.__main__ import main
import torch._dynamo, sklearn.model_selection
import latentgen.repair.relabel, latentgen.probing.subspaces, latentgen.data.datasets, latentgen.data.labels, latentgen.provenance
import latentgen.repair.evaluation
argv, attempts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = argv[argv.index("--out") + 1]
for kill_at, copy_to in attempts:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.environ.pop("{kill}", None)
        if kill_at:
            os.environ["{kill}"] = kill_at
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    ended = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    if copy_to:
        shutil.copytree(out, copy_to)
    files = sorted(p for p in os.listdir(out) if not p.startswith("."))
    print("ATTEMPT " + json.dumps([kill_at, ended, files]), flush=True)
""".replace("{kill}", KILL_ENV)


def _attempts(base, out, attempts):
    argv = ["relabel", "--checkpoint", str(base["checkpoint"]), "--labels", str(base["labels"]), "--prepared",
            str(base["npz"]), "--subspaces", "corrupted", "--out", str(out), "--max-epochs", "4", "--patience", "10",
            "--save-model", "--threads", "1", "--device", "cpu", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argv), json.dumps(attempts)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ends = [json.loads(line[len("ATTEMPT "):]) for line in done.stdout.splitlines() if line.startswith("ATTEMPT ")]
    return ends, done.stdout


def _label_file(path):
    lf = read_label_file(path)
    return {**vars(lf), "true": lf.true.tolist(), "corrupted": lf.corrupted.tolist()}


def _without_seconds(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(path)]


def test_resume_after_sigkill_is_bitwise_identical(base, tmp_path):
    """Killed after the labels (before any resume state), after epoch 2's resume state and after
    the provenance (before result.csv), then finished: every output equals an uninterrupted run's;
    until then no result.csv exists."""
    reference = tmp_path / "reference"
    _relabel(base, reference, max_epochs=4, patience=10, save_model=True)
    out, at_epoch2 = tmp_path / "out", tmp_path / "at_epoch2"
    ends, stdout = _attempts(base, out, [["0:labels", None], ["2:resume", str(at_epoch2)], ["4:sidecar", None],
                                         [None, None]])
    kill = -signal.SIGKILL
    assert ends == [["0:labels", kill, ["labels.npz", "layers.csv"]],
                    ["2:resume", kill, ["labels.npz", "layers.csv", "resume.pt", "train_log.csv"]],
                    ["4:sidecar", kill, ["labels.npz", "layers.csv", "model.pt", "result.json", "resume.pt",
                                         "train_log.csv"]],
                    [None, 0, ["labels.npz", "layers.csv", "model.pt", "result.csv", "result.json", "train_log.csv"]]]
    assert "resuming after epoch 2" in stdout and "resuming after epoch 4" in stdout
    for name in ("result.csv", "layers.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert _label_file(out / "labels.npz") == _label_file(reference / "labels.npz")  # its bytes hold a write time
    saved, expected = read_checkpoint(out / "model.pt"), read_checkpoint(reference / "model.pt")
    assert all(torch.equal(saved["model_state"][k], v) for k, v in expected["model_state"].items())
    assert saved["meta"]["labels"] == str((out / "labels.npz").resolve())  # the rest of meta is equal
    assert {**saved["meta"], "labels": None} == {**expected["meta"], "labels": None}
    assert _without_seconds(out / "train_log.csv") == _without_seconds(reference / "train_log.csv")
    assert not list(out.glob(".*.tmp"))
    assert verify_sidecar(out / "result.json") == []
    stamp = (out / "result.csv").stat().st_mtime_ns
    again = relabel_and_retrain(base["checkpoint"], base["labels"], out, subspaces="corrupted", prepared=base["npz"],
                                max_epochs=4, patience=10, save_model=True, device="cpu", verbose=False)
    assert again == read_result(reference / "result.csv") and (out / "result.csv").stat().st_mtime_ns == stamp

    # the declared outputs deleted (as Snakemake does for a failed job): rewritten from resume.pt
    deleted = tmp_path / "deleted"
    shutil.copytree(at_epoch2, deleted)
    for name in ("labels.npz", "layers.csv", "train_log.csv"):
        (deleted / name).unlink()
    relabel_and_retrain(base["checkpoint"], base["labels"], deleted, subspaces="corrupted", prepared=base["npz"],
                        max_epochs=4, patience=10, save_model=True, device="cpu", verbose=False)
    for name in ("result.csv", "layers.csv"):
        assert (deleted / name).read_bytes() == (reference / name).read_bytes(), name
    assert _label_file(deleted / "labels.npz") == _label_file(reference / "labels.npz")

    # a relabelled label file changed behind the run's back is refused, not retrained on
    from latentgen.data.labels import write_label_file

    lf = read_label_file(at_epoch2 / "labels.npz")
    write_label_file(at_epoch2 / "labels.npz", lf.true, lf.true, seed=lf.seed, degree=lf.degree,
                     num_classes=lf.num_classes, dataset=lf.dataset)
    with pytest.raises(ValueError, match="not the relabelled label file this run wrote"):
        relabel_and_retrain(base["checkpoint"], base["labels"], at_epoch2, subspaces="corrupted", prepared=base["npz"],
                            max_epochs=4, patience=10, save_model=True, device="cpu", verbose=False)


def test_result_csv_is_never_half_written(base, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_write = pathlib.Path.write_text

    def failing_write(self, text, *args, **kwargs):
        if self.name.startswith(".result.csv."):  # the temporary file behind result.csv
            real_write(self, text[:len(text) // 2], *args, **kwargs)
            raise OSError("disk full")
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _relabel(base, out, max_epochs=1)
    assert not (out / "result.csv").exists() and not list(out.glob(".*.tmp"))
    assert (out / "resume.pt").exists()
    monkeypatch.undo()
    row = _relabel(base, out, max_epochs=1)
    assert read_result(out / "result.csv") == row and list(row) == RESULT_COLUMNS
    assert verify_sidecar(out / "result.json") == []


# ------------------------------------------------------------------------------------------
# refusals


def test_label_file_of_another_run_is_refused_naming_both(base, tmp_path, capsys):
    from latentgen.__main__ import main

    other = tmp_path / "c0.8.npz"
    corrupt_dataset("digits", 0.8, other, prepared=base["npz"])
    with pytest.raises(ValueError, match="is not the one checkpoint") as err:
        relabel_and_retrain(base["checkpoint"], other, tmp_path / "out", subspaces="corrupted",
                            dataset=base["data"], device="cpu", verbose=False)
    assert str(other) in str(err.value) and str(base["checkpoint"]) in str(err.value)
    code = main(["relabel", "--checkpoint", str(base["checkpoint"]), "--labels", str(other), "--out",
                 str(tmp_path / "out"), "--subspaces", "true", "--prepared", str(base["npz"]), "--device", "cpu"])
    message = capsys.readouterr().err
    assert code == 1 and str(other) in message and str(base["checkpoint"]) in message
    assert not (tmp_path / "out").exists()


def test_other_configurations_and_bad_settings_are_refused(base, tmp_path):
    out = tmp_path / "out"
    _relabel(base, out, max_epochs=0)
    with pytest.raises(ValueError, match="another configuration"):
        _relabel(base, out, max_epochs=0, subspaces="true")
    with pytest.raises(ValueError, match="subspaces must be one of corrupted, true"):
        _relabel(base, tmp_path / "x", subspaces="clean")
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        _relabel(base, tmp_path / "x", patience=0)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        relabel_and_retrain(tmp_path / "missing.pt", base["labels"], tmp_path / "x", subspaces="true")


def test_command_choices_follow_the_library():
    from latentgen.options import command_parser

    subspaces = next(a for a in command_parser("relabel")._actions if a.dest == "subspaces")
    assert tuple(subspaces.choices) == SUBSPACES
    args = command_parser("relabel").parse_args(["--checkpoint", "c", "--labels", "l", "--out", "o",
                                                 "--subspaces", "true"])
    assert (args.max_epochs, args.patience, args.variance, args.exclude_input) == (30, 3, 0.99, False)
