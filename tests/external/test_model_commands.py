"""`latentgen probe-model` and `latentgen repair-model` end to end: a torchvision ResNet-18 and a
model from a Python file, on an image folder in the real ImageFolder layout (PNG files), labels
from .npy and .csv files; and their one-line refusals of bad input."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from latentgen.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("ant", "bee", "cow")
MODEL_FILE = '''
from torch import nn


def small(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, num_classes))
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 200, (16, 16, 3), dtype=np.uint8)
                pixels[..., k] += 55  # a class signal
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    noisy = np.array([k for k in range(3) for _ in range(30)])
    noisy[::4] = (noisy[::4] + 1) % 3
    np.save(root / "noisy.npy", noisy)
    samples = torchvision.datasets.ImageFolder(root / "train").samples  # the order .npy labels follow
    with open(root / "noisy.csv", "w", newline="") as fh:  # path,label rows, in another order
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for i in reversed(range(90)):
            writer.writerow([str(Path(samples[i][0]).relative_to(root / "train")), noisy[i]])
    (root / "model.py").write_text(MODEL_FILE)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), root / "resnet.pt")
    return root


def _probe(folder, tmp_path, *extra):
    return main(["probe-model", "--model", "torchvision:resnet18", "--weights", str(folder / "resnet.pt"),
                 "--data", f"imagefolder:{folder}", "--device", "cpu", *extra])


def test_probe_model_writes_rows_for_three_layers_and_a_figure(folder, tmp_path):
    out = tmp_path / "rows.csv"
    assert _probe(folder, tmp_path, "--labels", str(folder / "noisy.npy"), "--layers", "layer3,layer4,fc:input",
                  "--out", str(out), "--figure", str(tmp_path / "rows.pdf")) == 0
    rows = pd.read_csv(out)
    assert set(rows.layer) == {"layer3", "layer4", "fc:input"} and set(rows.probe) == {"masc", "velpic"}
    assert len(rows) == 3 * 2 * 3 and rows.accuracy.between(0, 1).all()
    assert rows.corruption.isna().all()  # no --true-labels: the noise is not known
    assert (tmp_path / "rows.pdf").read_bytes()[:5] == b"%PDF-"


def test_true_labels_give_the_measured_noise(folder, tmp_path):
    np.save(tmp_path / "true.npy", np.repeat([0, 1, 2], 30))
    out = tmp_path / "rows.csv"
    assert _probe(folder, tmp_path, "--labels", str(folder / "noisy.npy"), "--true-labels", str(tmp_path / "true.npy"),
                  "--layers", "fc:input", "--fit-labels", "corrupted,true", "--out", str(out)) == 0
    rows = pd.read_csv(out)
    assert set(rows.corruption) == {np.mean(np.load(folder / "noisy.npy") != np.repeat([0, 1, 2], 30))} == {23 / 90}
    assert set(rows.fit_labels) == {"corrupted", "true"}


def test_labels_from_csv_paths_equal_labels_from_npy(folder, tmp_path):
    for name in ("noisy.npy", "noisy.csv"):
        assert _probe(folder, tmp_path, "--labels", str(folder / name), "--layers", "fc:input",
                      "--out", str(tmp_path / f"{name}.csv")) == 0
    assert (tmp_path / "noisy.npy.csv").read_text() == (tmp_path / "noisy.csv.csv").read_text()


def test_list_layers_and_a_model_from_a_python_file(folder, tmp_path, capsys):
    assert main(["probe-model", "--model", f"{folder / 'model.py'}:small", "--data", f"imagefolder:{folder}",
                 "--list-layers"]) == 0
    assert capsys.readouterr().out.split() == ["input", "0", "1", "2", "3"]
    out = tmp_path / "small.csv"
    assert main(["probe-model", "--model", f"{folder / 'model.py'}:small", "--data", f"imagefolder:{folder}",
                 "--layers", "input,2", "--out", str(out), "--device", "cpu"]) == 0
    assert set(pd.read_csv(out).layer) == {"input", "2"}


def test_repair_model_writes_a_state_dict_torchvision_loads_back(folder, tmp_path, capsys):
    out = tmp_path / "repaired.pt"
    assert main(["repair-model", "--model", "torchvision:resnet18", "--weights", str(folder / "resnet.pt"),
                 "--data", f"imagefolder:{folder}", "--labels", str(folder / "noisy.npy"), "--head", "fc",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "after the VeLPIC transfer into 'fc'" in capsys.readouterr().out
    repaired = torchvision.models.resnet18(weights=None, num_classes=3)
    repaired.load_state_dict(torch.load(out, weights_only=True))
    original = torch.load(folder / "resnet.pt", weights_only=True)
    assert not torch.equal(repaired.fc.weight, original["fc.weight"])
    assert torch.equal(repaired.layer4[1].conv2.weight, original["layer4.1.conv2.weight"])  # only the head changed


def test_the_repaired_file_probes_like_the_original_up_to_the_head(folder, tmp_path):
    out = tmp_path / "repaired.pt"
    assert main(["repair-model", "--model", "torchvision:resnet18", "--weights", str(folder / "resnet.pt"),
                 "--data", f"imagefolder:{folder}", "--labels", str(folder / "noisy.npy"), "--head", "fc",
                 "--out", str(out), "--device", "cpu"]) == 0
    for weights, rows in ((folder / "resnet.pt", "a.csv"), (out, "b.csv")):
        assert main(["probe-model", "--model", "torchvision:resnet18", "--weights", str(weights), "--data",
                     f"imagefolder:{folder}", "--labels", str(folder / "noisy.npy"), "--layers", "fc:input",
                     "--out", str(tmp_path / rows), "--device", "cpu"]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("change, message", [
    (("--layers", "layer5"), "no module 'layer5'; closest: layer4"),
    (("--labels", "short.npy"), "90 training images"),
    (("--labels", "outside.npy"), "label 7 is outside the classes 0..2"),
    (("--weights", "evil.pt"), "not a plain state dict"),
    (("--model", "torchvision:resnet19"), "torchvision has no model 'resnet19'; closest: resnet18"),
    (("--head", "layer4"), "head 'layer4' is a Sequential"),
])
def test_bad_input_is_one_line_and_exit_1(folder, tmp_path, capsys, change, message):
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    np.save(tmp_path / "outside.npy", np.full(90, 7))
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh)
    options = {"--model": "torchvision:resnet18", "--weights": str(folder / "resnet.pt"), "--layers": "layer4",
               "--labels": str(folder / "noisy.npy"), "--head": "fc"}
    key, value = change
    options[key] = str(tmp_path / value) if value.endswith((".npy", ".pt")) else value
    command = "repair-model" if key == "--head" else "probe-model"
    argv = [command, "--data", f"imagefolder:{folder}", "--device", "cpu", "--out", str(tmp_path / "x")]
    for flag in ("--model", "--weights", "--labels", "--head" if command == "repair-model" else "--layers"):
        argv += [flag, options[flag]]
    assert main(argv) == 1
    err = capsys.readouterr()
    assert message in err.err and len(err.err.strip().splitlines()) == 1, err.err
    assert "this must never run" not in err.out


def test_a_class_missing_from_the_test_folder_is_refused(folder, tmp_path, capsys):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(folder / "train", copy / "train")
    shutil.copytree(folder / "test", copy / "test")
    shutil.rmtree(copy / "test" / "cow")
    assert main(["probe-model", "--model", "torchvision:resnet18", "--data", f"imagefolder:{copy}", "--layers",
                 "layer4", "--out", str(tmp_path / "x.csv"), "--device", "cpu"]) == 1
    assert "class 'cow' is in one split only" in capsys.readouterr().err


def test_a_timm_model_is_probed_and_repaired(folder, tmp_path):
    timm = pytest.importorskip("timm")
    out = tmp_path / "rows.csv"
    assert main(["probe-model", "--model", "timm:resnet10t", "--data", f"imagefolder:{folder}", "--labels",
                 str(folder / "noisy.npy"), "--layers", "layer3,layer4,fc:input", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert set(pd.read_csv(out).layer) == {"layer3", "layer4", "fc:input"}
    repaired = tmp_path / "repaired.pt"
    assert main(["repair-model", "--model", "timm:resnet10t", "--data", f"imagefolder:{folder}", "--labels",
                 str(folder / "noisy.npy"), "--head", "fc", "--out", str(repaired), "--device", "cpu"]) == 0
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    model.load_state_dict(torch.load(repaired, weights_only=True))
