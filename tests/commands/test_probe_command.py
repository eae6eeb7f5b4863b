"""`latentgen probe` end to end: a real training run, a real activations file, a real CSV."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from latentgen.__main__ import main
from latentgen.probing.activations import dump_activations, open_activations
from latentgen.probing.masc_velpic import fit_probes
from latentgen.contracts import PROBE_COLUMNS as PROBING_COLUMNS
from latentgen.probing.checkpoint import probe_checkpoint, write_probe_csv
from latentgen.training.loop import train
from latentgen.training.hyperparameters import default_train_config
from latentgen.training.checkpoints import load_checkpoint
from latentgen.probing.velpic_transfer import transfer_velpic

COLUMNS = ["model", "dataset", "corruption", "run", "epoch", "layer", "probe", "fit_labels", "split", "accuracy"]
SPLITS = ["test", "train_corrupted", "train_true"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path_factory, digits, arch):
    folder = tmp_path_factory.mktemp(arch)
    config = default_train_config(arch, "digits", corruption=0.4, run=1, train_subset=600, max_epochs=2,
                                  grid_dense_until=2, grid_step=1)
    train(config, folder / "run", dataset=digits, device="cpu", verbose=False)
    h5 = dump_activations(folder / "run" / "checkpoints" / "epoch2.pt", folder / "epoch2.h5", dataset=digits,
                          device="cpu")
    return folder, h5


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory, digits):
    return _run(tmp_path_factory, digits, "mlp")


@pytest.fixture(scope="module")
def mlp_csv(mlp_files):
    folder, h5 = mlp_files
    out = folder / "probes.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu"]) == 0
    return pd.read_csv(out)


def test_csv_has_every_layer_probe_and_split(mlp_csv, mlp_files):
    _, h5 = mlp_files
    assert list(mlp_csv.columns) == COLUMNS
    with open_activations(h5) as acts:
        layers, meta = acts.layers, acts.meta
    expected = {(layer, probe, split) for layer in layers for probe in ("masc", "velpic") for split in SPLITS}
    expected |= {("fc4", probe, split) for probe in ("transfer", "transfer_bias") for split in SPLITS}
    assert set(zip(mlp_csv.layer, mlp_csv.probe, mlp_csv.split)) == expected
    assert len(mlp_csv) == len(expected)
    assert set(mlp_csv.model) == {"mlp"} and set(mlp_csv.dataset) == {"digits"}
    assert set(mlp_csv.corruption) == {0.4} and set(mlp_csv.run) == {1} and set(mlp_csv.epoch) == {meta["epoch"]} == {2}
    assert mlp_csv.accuracy.between(0, 1).all()


def _lookup(frame, layer, probe, split):
    (value,) = frame.loc[(frame.layer == layer) & (frame.probe == probe) & (frame.split == split), "accuracy"]
    return value


def test_probe_accuracies_match_the_probes_on_the_file(mlp_csv, mlp_files):
    _, h5 = mlp_files
    with open_activations(h5) as acts:
        y = {"test": acts.labels("test"), "train_corrupted": acts.labels("train", "corrupted"),
             "train_true": acts.labels("train", "true")}
        for layer in ("input", "fc2", "fc4"):
            train, test = acts.array("train", layer), acts.array("test", layer)
            masc, velpic = fit_probes(train, y["train_corrupted"], classes=np.arange(10), device="cpu")
            for name, probe in (("masc", masc), ("velpic", velpic)):
                assert _lookup(mlp_csv, layer, name, "test") == np.mean(probe.predict(test) == y["test"])
                for split in ("train_corrupted", "train_true"):
                    assert _lookup(mlp_csv, layer, name, split) == np.mean(probe.predict(train) == y[split])


def test_transfer_rows_are_the_edited_network(mlp_csv, mlp_files, digits):
    _, h5 = mlp_files
    with open_activations(h5) as acts:
        checkpoint, y_corrupted = acts.meta["checkpoint"], acts.labels("train", "corrupted")
        hidden_test = acts.array("test", "fc4")
        _, velpic = fit_probes(acts.array("train", "fc4"), y_corrupted, classes=np.arange(10), device="cpu")
    model, _ = load_checkpoint(checkpoint)
    x_train, y_train = digits.train_x[:600], digits.train_y[:600].numpy()
    with torch.no_grad():
        for name, keep_bias in (("transfer", False), ("transfer_bias", True)):
            edited = transfer_velpic(model, "output", velpic, keep_bias=keep_bias)
            assert _lookup(mlp_csv, "fc4", name, "test") == np.mean(
                edited(digits.test_x).argmax(1).numpy() == digits.test_y.numpy())
            predicted = edited(x_train).argmax(1).numpy()
            assert _lookup(mlp_csv, "fc4", name, "train_corrupted") == np.mean(predicted == y_corrupted)
            assert _lookup(mlp_csv, "fc4", name, "train_true") == np.mean(predicted == y_train)
    # zero-bias transfer reproduces VeLPIC on the last hidden layer
    assert _lookup(mlp_csv, "fc4", "transfer", "test") == np.mean(velpic.predict(hidden_test) == digits.test_y.numpy())
    assert _lookup(mlp_csv, "fc4", "transfer", "test") == _lookup(mlp_csv, "fc4", "velpic", "test")


def test_cnn_head_without_bias_has_no_bias_variant(tmp_path_factory, digits):
    folder, h5 = _run(tmp_path_factory, digits, "cnn")
    out = folder / "probes.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--sign", "class"]) == 0
    frame = pd.read_csv(out)
    assert set(frame.probe) == {"masc", "velpic", "transfer"}
    assert set(frame.loc[frame.probe == "transfer", "layer"]) == {"fc3"}
    assert _lookup(frame, "fc3", "transfer", "test") == _lookup(frame, "fc3", "velpic", "test")


def test_checkpoint_override_and_no_transfer(mlp_files, tmp_path, capsys):
    folder, h5 = mlp_files
    moved = tmp_path / "elsewhere.pt"
    shutil.copy(folder / "run" / "checkpoints" / "epoch2.pt", moved)
    out = tmp_path / "a.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--checkpoint",
                 str(moved), "--variance", "0.9"]) == 0
    assert "transfer" in set(pd.read_csv(out).probe)
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--no-transfer",
                 "--threads", "1", "--checkpoint", str(tmp_path / "not-needed.pt")]) == 0
    assert set(pd.read_csv(out).probe) == {"masc", "velpic"}


def test_refusals_leave_no_output(mlp_files, tmp_path, capsys):
    folder, h5 = mlp_files
    out = tmp_path / "out.csv"
    args = ["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu"]

    assert main(args + ["--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "checkpoint for the transfer not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser (argtypes.fraction)
        main(args + ["--variance", "1.5"])
    assert exit_info.value.code == 2
    assert "argument --variance: expected a fraction in (0, 1], got '1.5'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"variance must be in \(0, 1\]"):  # and by the library
        probe_checkpoint(h5, variance=1.5, device="cpu")
    other = tmp_path / "epoch1.pt"
    shutil.copy(folder / "run" / "checkpoints" / "epoch1.pt", other)
    assert main(args + ["--checkpoint", str(other)]) == 1
    assert "has epoch 1 but the activations file has 2" in capsys.readouterr().err

    incomplete = tmp_path / "incomplete.h5"
    shutil.copy(h5, incomplete)
    with h5py.File(incomplete, "r+") as f:
        del f.attrs["complete"]
    assert main(["probe", "--activations", str(incomplete), "--out", str(out), "--device", "cpu"]) == 1
    assert "incomplete" in capsys.readouterr().err
    assert main(["probe", "--activations", str(tmp_path / "none.h5"), "--out", str(out)]) == 1
    assert "activations file not found" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.csv.*"))


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--help"])
    assert exit_info.value.code == 0
    assert "tidy CSV" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--activations", "x.h5"])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_probe_checkpoint_returns_the_rows_the_cli_writes(mlp_csv, mlp_files, tmp_path):
    folder, h5 = mlp_files
    assert list(PROBING_COLUMNS) == COLUMNS
    rows = probe_checkpoint(h5, device="cpu")
    assert [r.values() for r in rows] == list(mlp_csv.itertuples(index=False, name=None))
    write_probe_csv(rows, tmp_path / "library.csv")
    assert (tmp_path / "library.csv").read_bytes() == (folder / "probes.csv").read_bytes()
    # row order: per layer MASC then VeLPIC (splits in order), then the transfer on the last hidden layer
    assert [(r.layer, r.probe, r.split) for r in rows[:6]] == [
        ("input", probe, split) for probe in ("masc", "velpic") for split in SPLITS]
    assert [r.probe for r in rows[-6:]] == ["transfer"] * 3 + ["transfer_bias"] * 3


def test_unknown_family_is_refused_by_name(mlp_files, capsys):
    folder, h5 = mlp_files
    with pytest.raises(ValueError, match="unknown probe family 'svm'.*known: masc, velpic, transfer, logistic"):
        probe_checkpoint(h5, families=["masc", "svm"], device="cpu")
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--activations", str(h5), "--out", str(folder / "x.csv"), "--families", "masc,svm"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown probe family 'svm'" in err and "known: masc, velpic, transfer" in err
    assert not (folder / "x.csv").exists()


def test_families_choose_the_rows(mlp_csv, mlp_files, tmp_path):
    _, h5 = mlp_files
    out = tmp_path / "masc.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--families", "masc"]) == 0
    masc = pd.read_csv(out)
    assert set(masc.probe) == {"masc"}
    pd.testing.assert_frame_equal(masc, mlp_csv[mlp_csv.probe == "masc"].reset_index(drop=True))
    # the transfer alone fits VeLPIC on the last hidden layer itself; spellings and order do not matter
    rows = probe_checkpoint(h5, families="transfer", device="cpu")
    full = mlp_csv[mlp_csv.probe.isin(["transfer", "transfer_bias"])]
    assert [r.values() for r in rows] == list(full.itertuples(index=False, name=None))
    both = probe_checkpoint(h5, families=["velpic", "masc"], device="cpu")
    assert [r.values() for r in both] == list(mlp_csv[mlp_csv.probe.isin(["masc", "velpic"])]
                                              .itertuples(index=False, name=None))
    out = tmp_path / "nt.csv"
    assert main(["probe", "--activations", str(h5), "--out", str(out), "--device", "cpu", "--families",
                 "velpic", "transfer", "--no-transfer"]) == 0
    assert set(pd.read_csv(out).probe) == {"velpic"}


def test_delete_activations_only_after_success(mlp_files, tmp_path):
    _, h5 = mlp_files
    copy = tmp_path / "copy.h5"
    shutil.copy(h5, copy)
    out = tmp_path / "out.csv"
    args = ["probe", "--activations", str(copy), "--out", str(out), "--device", "cpu", "--no-transfer",
            "--delete-activations"]
    assert main(args + ["--checkpoint", str(tmp_path / "unused.pt")]) == 0
    assert out.is_file() and not copy.exists()
    shutil.copy(h5, copy)
    out.unlink()
    assert main(args[:-2] + ["--delete-activations", "--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert copy.exists() and not out.exists()
