"""`latentgen download` and `latentgen corrupt` end to end (in process through the CLI entry point,
plus one real subprocess), including their one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import fakedata
from latentgen import registry
from latentgen.data import raw_files
from latentgen.__main__ import main
from latentgen.data.datasets import load_dataset, read_prepared
from latentgen.data.labels import corrupt_dataset, corrupt_labels, read_label_file


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    fakedata.block_internet(monkeypatch)


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"latentgen {command}: error:") and "\n" not in err
    return err


def test_download_digits_then_corrupt(tmp_path, capsys):
    prepared = tmp_path / "data" / "digits.npz"
    assert main(["download", "--dataset", "digits", "--out", str(prepared)]) == 0
    raw = read_prepared(prepared, "digits")
    assert raw.train_x.dtype == np.float32 and raw.train_x.max() == 16  # stored as scikit-learn gives it
    assert torch.equal(load_dataset("digits", prepared=prepared).train_x, load_dataset("digits").train_x)

    out = tmp_path / "labels" / "digits" / "c0.4.npz"
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--seed", "3",
                 "--prepared", str(prepared), "--out", str(out)]) == 0
    labels = read_label_file(out)
    train_y = load_dataset("digits").train_y.numpy()
    assert len(labels.true) == registry.DATASETS["digits"].train_size  # training labels only: test labels stay true
    assert np.array_equal(labels.true, train_y)
    assert np.array_equal(labels.corrupted, corrupt_labels(train_y, 0.4, 10, seed=3))
    assert (labels.seed, labels.degree, labels.num_classes, labels.dataset) == (3, 0.4, 10, "digits")
    assert labels.fraction_unchanged == np.mean(labels.true == labels.corrupted)
    assert f"{labels.fraction_unchanged:.4f}" in capsys.readouterr().out

    # without a prepared file (digits needs no root) the result is the same file content
    out2 = tmp_path / "again.npz"
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--seed", "3", "--out", str(out2)]) == 0
    assert np.array_equal(read_label_file(out2).corrupted, labels.corrupted)


def test_download_mnist_no_download_and_corrupt_from_root(mnist_root, tmp_path):
    prepared = tmp_path / "mnist.npz"
    assert main(["download", "--dataset", "mnist", "--data-root", str(mnist_root), "--out", str(prepared),
                 "--no-download"]) == 0
    raw = read_prepared(prepared, "mnist")
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    out = tmp_path / "c1.0.npz"
    assert main(["corrupt", "--dataset", "mnist", "--corruption", "1.0", "--data-root", str(mnist_root),
                 "--out", str(out)]) == 0
    labels = read_label_file(out)
    assert np.array_equal(labels.true, raw.train_y)
    assert np.array_equal(labels.corrupted, corrupt_labels(raw.train_y, 1.0, 10, seed=42))
    n = len(labels.true)  # at c = 1 a label survives only by chance, 1/K
    assert abs(labels.fraction_unchanged - 0.1) < 5 * (0.1 * 0.9 / n) ** 0.5


def test_tiny_imagenet_corrupt_uses_strict_mask(tmp_path, monkeypatch):
    archive = tmp_path / "tiny-imagenet-200.zip"
    fakedata.write_tiny_imagenet_zip(archive, n_train=2, n_val=1)
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_URL", archive.as_uri())
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_MD5", fakedata.md5(archive))
    root, prepared = tmp_path / "root", tmp_path / "tiny.npz"
    assert main(["download", "--dataset", "tiny_imagenet", "--data-root", str(root), "--out", str(prepared)]) == 0
    out = tmp_path / "c.npz"
    assert main(["corrupt", "--dataset", "tiny_imagenet", "--corruption", "0.5", "--prepared", str(prepared),
                 "--out", str(out)]) == 0
    labels = read_label_file(out)
    assert labels.strict and labels.num_classes == 200
    assert np.array_equal(labels.corrupted, corrupt_labels(labels.true, 0.5, 200, strict=True))


def test_download_missing_data_no_network(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["download", "--dataset", "fashion_mnist", "--data-root", str(root), "--out",
                 str(tmp_path / "f.npz"), "--no-download"]) == 1
    err = one_line_error(capsys, "download")
    assert str(root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in err
    assert main(["download", "--dataset", "cifar100", "--data-root", str(root), "--out", str(tmp_path / "c.npz")]) == 1
    err = one_line_error(capsys, "download")
    assert "download failed" in err and str(root / "cifar-100-python" / "train") in err
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "c.npz").exists()


def test_download_unwritable_root(read_only_dir, tmp_path, capsys):
    root = read_only_dir
    assert main(["download", "--dataset", "mnist", "--data-root", str(root), "--out", str(tmp_path / "m.npz")]) == 1
    err = one_line_error(capsys, "download")
    assert "not writable" in err and str(root) in err


def test_bad_arguments(tmp_path, capsys):
    out = tmp_path / "x.npz"
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser (argtypes.unit_interval)
        main(["corrupt", "--dataset", "digits", "--corruption", "1.2", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "[0, 1]" in one_line_error(capsys, "corrupt")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # and by the library
        corrupt_dataset("digits", 1.2, out)
    assert main(["corrupt", "--dataset", "mnist", "--corruption", "0.2", "--out", str(out)]) == 1
    assert "data root" in one_line_error(capsys, "corrupt")
    assert main(["corrupt", "--dataset", "mnist", "--corruption", "0.2", "--out", str(out),
                 "--prepared", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz" in one_line_error(capsys, "corrupt")
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["download", "--dataset", "imagenet", "--out", str(out)])
    assert exit_info.value.code == 2 and "unknown dataset 'imagenet'" in capsys.readouterr().err


def test_help(capsys):
    for command, flag in (("download", "--no-download"), ("corrupt", "--corruption")):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and flag in capsys.readouterr().out


def test_cli_subprocess(tmp_path):
    result = subprocess.run([sys.executable, "-m", "latentgen", "download", "--dataset", "digits", "--out",
                             str(tmp_path / "d.npz")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_prepared(tmp_path / "d.npz", "digits").test_y.shape == (registry.DATASETS["digits"].test_size,)
