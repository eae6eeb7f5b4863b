"""`latentgen train` and `latentgen activations`: help, end to end, bad arguments (one line, non-zero)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentgen.__main__ import main
from latentgen.probing.activations import open_activations
from latentgen.training.loop import read_train_log
from latentgen.training.checkpoints import read_checkpoint


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command,flags", [
    ("train", ["--arch", "--dataset", "--corruption", "--run", "--out", "--data-root", "--max-epochs",
               "--train-subset", "--device", "--labels", "--label-seed", "--prepared", "--seed", "--optimizer",
               "--lr", "--batch-size", "--target-acc", "--shuffle", "--grid-step", "--hparams"]),
    ("activations", ["--checkpoint", "--out", "--data-root", "--prepared", "--labels", "--batch-size", "--device"]),
])
def test_help_lists_the_flags(capsys, command, flags):
    code, out, _ = _run(capsys, command, "--help")
    assert code == 0
    for flag in flags:
        assert flag in out, flag


def test_train_then_activations_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _run(capsys, "train", "--arch", "cnn", "--dataset", "digits", "--corruption", "0.4", "--run", "1",
                          "--out", str(run), "--max-epochs", "3", "--train-subset", "200", "--device", "cpu",
                          "--grid-dense-until", "2", "--grid-step", "1", "--batch-size", "50", "--threads", "1")
    assert code == 0, err
    assert "epoch 3:" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["epochs"] == [0, 1, 2, 3] and manifest["checkpoints"]["3"] == "checkpoints/epoch3.pt"
    assert manifest["train_config"]["batch_size"] == 50 and manifest["train_config"]["optimizer"] == "adam"
    assert [r["epoch"] for r in read_train_log(run / "train_log.csv")] == [0, 1, 2, 3]
    meta = read_checkpoint(run / "checkpoints" / "epoch3.pt")["meta"]
    assert (meta["arch"], meta["dataset"], meta["corruption"], meta["run"], meta["epoch"]) == ("cnn", "digits", 0.4, 1, 3)

    h5 = tmp_path / "a.h5"
    code, out, err = _run(capsys, "activations", "--checkpoint", str(run / "checkpoints" / "epoch3.pt"),
                          "--out", str(h5), "--device", "cpu", "--layers", "input,fc3")
    assert code == 0, err
    with open_activations(h5) as acts:
        assert acts.layers == ["input", "fc3"] and acts.array("train", "fc3").shape == (200, 128)
        assert acts.meta["epoch"] == 3 and len(acts.labels("test")) == 359

    # rerunning a finished run does nothing and says so
    code, out, _ = _run(capsys, "train", "--arch", "cnn", "--dataset", "digits", "--corruption", "0.4", "--run", "1",
                        "--out", str(run), "--max-epochs", "3", "--train-subset", "200", "--device", "cpu",
                        "--grid-dense-until", "2", "--grid-step", "1", "--batch-size", "50", "--threads", "1")
    assert code == 0 and "already complete" in out


BASE = ["train", "--arch", "mlp", "--dataset", "digits", "--corruption", "0.2", "--run", "1"]


@pytest.mark.parametrize("argv,code,message", [
    (["train", "--arch", "vgg", "--dataset", "digits", "--corruption", "0", "--run", "1", "--out", "X"], 2, "unknown architecture 'vgg'"),
    (["train", "--arch", "mlp", "--dataset", "svhn", "--corruption", "0", "--run", "1", "--out", "X"], 2, "unknown dataset 'svhn'"),
    (["train", "--arch", "alexnet", "--dataset", "digits", "--corruption", "0", "--run", "1"], 2, "required: --out"),
    (["train", "--arch", "alexnet", "--dataset", "mnist", "--corruption", "0", "--run", "1", "--out", "X"], 1,
     "'alexnet' does not support dataset 'mnist'"),
    # ranges are checked by the parser (argtypes), so the workflow's config check refuses them too
    (BASE + ["--out", "X", "--corruption", "1.5"], 2, "argument --corruption: expected a number in [0, 1], got '1.5'"),
    (BASE + ["--out", "X", "--run", "0"], 2, "argument --run: expected an integer >= 1, got '0'"),
    (BASE + ["--out", "X", "--target-acc", "99.9"], 2, "argument --target-acc: expected a fraction in (0, 1]"),
    (BASE + ["--out", "X", "--lr", "-1"], 2, "argument --lr: expected a number > 0, got '-1'"),
    (BASE + ["--out", "X", "--shuffle", "maybe"], 2, "expected true or false"),
    (BASE + ["--out", "X", "--model-options", "{bad"], 2, "argument --model-options: expected a JSON object"),
    (BASE + ["--out", "X", "--model-options", '{"depth": 2}'], 1, "bad model option for 'mlp'"),
    (BASE + ["--out", "X", "--labels", "NOFILE.npz"], 1, "label file not found: NOFILE.npz"),
    (BASE + ["--out", "X", "--train-subset", "99999"], 1, "train subset 99999 exceeds the 1438 training images"),
    (BASE + ["--out", "X", "--threads", "0"], 2, "argument --threads: expected an integer >= 1, got '0'"),
    (["train", "--arch", "mlp", "--dataset", "mnist", "--corruption", "0", "--run", "1", "--out", "X",
      "--data-root", "NOWHERE"], 1, "NOWHERE"),
    (["activations", "--checkpoint", "NOFILE.pt", "--out", "X.h5"], 1, "checkpoint not found: NOFILE.pt"),
])
def test_bad_arguments_exit_non_zero_with_one_line(tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.chdir(tmp_path)
    got, out, err = _run(capsys, *argv)
    assert got == code
    assert message in err
    assert len(err.strip().splitlines()) == 1  # one line, for argparse errors too
    assert not (tmp_path / "X" / "manifest.json").exists() and not (tmp_path / "X.h5").exists()


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = _run(capsys, *BASE, "--out", str(tmp_path / "run"), "--device", "cuda")
    assert code == 1 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "epoch5.pt"
    bad.write_bytes(np.random.default_rng(1).bytes(1000))
    code, _, err = _run(capsys, "activations", "--checkpoint", str(bad), "--out", str(tmp_path / "a.h5"))
    assert code == 1 and "epoch5.pt is corrupt, truncated" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.h5").exists()


def test_dropout_and_weight_decay_reach_the_run(tmp_path, capsys):
    import json

    code, _, err = _run(capsys, *BASE, "--out", str(tmp_path / "run"), "--max-epochs", "1", "--dropout", "0.2",
                        "--weight-decay", "0.001", "--threads", "1", "--quiet")
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    config = manifest["train_config"]
    assert config["model_options"] == {"dropout": 0.2} and config["weight_decay"] == 0.001
    code, _, err = _run(capsys, *BASE, "--out", str(tmp_path / "x"), "--dropout", "1")
    assert code == 2 and "argument --dropout: expected a number in [0, 1), got '1'" in err
