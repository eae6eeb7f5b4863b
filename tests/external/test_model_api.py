"""latentgen.probe / latentgen.transfer on networks latentgen did not build: a torchvision ResNet-18
(random weights) on a tiny image folder in the real ImageFolder layout (PNG files read by
torchvision's ImageFolder), with torchvision's own feature extractor as the oracle for the
activations; and on one of the workflow's own checkpoints, against the workflow's probing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models.feature_extraction import create_feature_extractor

import latentgen
from latentgen.external.api import tappable_layers
from latentgen.models.external import load_weights
from latentgen.probing.masc_velpic import fit_probes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("cat", "dog", "fox")


def _image_folder(root, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            pixels[..., k] = np.clip(pixels[..., k].astype(int) + 60, 0, 255).astype(np.uint8)  # a class signal
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    _image_folder(root / "train", 40, 0)
    _image_folder(root / "test", 20, 1)
    transform = torchvision.transforms.ToTensor()
    train = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    test = torchvision.datasets.ImageFolder(root / "test", transform=transform)
    true = np.array(train.targets)
    noisy = true.copy()
    noisy[::3] = (noisy[::3] + 1) % 3  # a third of the labels flipped to the next class
    return {"train": train, "test": test, "true": true, "noisy": noisy, "root": root}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=3).eval()


LAYERS = ["layer2", "layer4", "fc:input"]


def test_probe_rows_of_three_layers_equal_the_probes_on_torchvisions_own_features(folder, resnet):
    rows = latentgen.probe(resnet, LAYERS, folder["train"], folder["test"], labels=folder["noisy"],
                           true_labels=folder["true"], device="cpu", name="resnet18", dataset="folder")
    assert {(r.layer, r.probe, r.split) for r in rows} == {
        (layer, probe, split) for layer in LAYERS for probe in ("masc", "velpic")
        for split in ("test", "train_corrupted", "train_true")}
    assert {r.model for r in rows} == {"resnet18"}
    assert {r.corruption for r in rows} == {np.mean(folder["noisy"] != folder["true"])} == {40 / 120}
    # the oracle: torchvision's feature extractor on the same images, probes fit by hand
    extractor = create_feature_extractor(resnet, {"layer2": "layer2", "layer4": "layer4", "flatten": "fc:input"})
    x_train = torch.stack([x for x, _ in folder["train"]])
    x_test = torch.stack([x for x, _ in folder["test"]])
    with torch.no_grad():
        feats = {split: {k: v.flatten(1).numpy() for k, v in extractor(x).items()}
                 for split, x in (("train", x_train), ("test", x_test))}
    test_y = np.array(folder["test"].targets)
    got = {(r.layer, r.probe, r.split): r.accuracy for r in rows}
    for layer in LAYERS:
        masc, velpic = fit_probes(feats["train"][layer], folder["noisy"], classes=np.arange(3), device="cpu")
        for probe_name, probe in (("masc", masc), ("velpic", velpic)):
            assert got[layer, probe_name, "test"] == np.mean(probe.predict(feats["test"][layer]) == test_y)
            assert got[layer, probe_name, "train_true"] == np.mean(probe.predict(feats["train"][layer]) == folder["true"])


def test_the_transferred_model_predicts_as_velpic_and_the_original_is_untouched(folder, resnet):
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    edited = latentgen.transfer(resnet, head="fc", train=folder["train"], labels=folder["noisy"], layer="avgpool",
                                device="cpu")
    assert all(torch.equal(v, before[k]) for k, v in resnet.state_dict().items())
    assert edited is not resnet and not torch.equal(edited.fc.weight, resnet.fc.weight)
    x_train = torch.stack([x for x, _ in folder["train"]])
    x_test = torch.stack([x for x, _ in folder["test"]])
    extractor = create_feature_extractor(resnet, {"flatten": "h"})
    with torch.no_grad():
        h_train, h_test = (extractor(x)["h"].numpy() for x in (x_train, x_test))
        predicted = edited(x_test).argmax(1).numpy()
    _, velpic = fit_probes(h_train, folder["noisy"], classes=np.arange(3), device="cpu")
    agree = np.mean(predicted == velpic.predict(h_test))
    assert agree >= 0.9999, agree


def test_a_repaired_checkpoint_loads_back_into_torchvision(folder, resnet, tmp_path):
    edited = latentgen.transfer(resnet, head="fc", train=folder["train"], labels=folder["noisy"], device="cpu")
    torch.save(edited.state_dict(), tmp_path / "repaired.pt")
    fresh = load_weights(torchvision.models.resnet18(weights=None, num_classes=3), tmp_path / "repaired.pt")
    assert torch.equal(fresh.fc.weight, edited.fc.weight)


def test_on_a_workflow_checkpoint_the_api_gives_the_workflows_rows(tmp_path, digits):
    from latentgen.probing.checkpoint_activations import CheckpointActivations
    from latentgen.probing.checkpoint import probe_checkpoint
    from latentgen.training.loop import train
    from latentgen.training.hyperparameters import default_train_config
    from latentgen.training.checkpoints import load_checkpoint

    config = default_train_config("mlp", "digits", corruption=0.4, run=1, train_subset=600, max_epochs=2)
    manifest = train(config, tmp_path / "run", dataset=digits, device="cpu", verbose=False)
    checkpoint = tmp_path / "run" / manifest["checkpoints"][str(manifest["final_epoch"])]
    with CheckpointActivations.load(checkpoint, device="cpu") as acts:
        workflow = probe_checkpoint(acts, families=["masc", "velpic"], device="cpu")
        noisy, true = acts.labels("train", "corrupted"), acts.labels("train", "true")
        train_x, test_x = acts.images()
        test_y = acts.labels("test")
    model, _ = load_checkpoint(checkpoint)
    layers = {"fc1": "act1", "fc2": "act2", "fc3": "act3", "fc4": "act4"}  # latentgen's names -> module names
    rows = latentgen.probe(model, list(layers.values()), train_x, test_x, labels=noisy, true_labels=true,
                           test_labels=test_y, device="cpu")
    mine = {(r.layer, r.probe, r.split): r.accuracy for r in rows}
    theirs = {(layers[r.layer], r.probe, r.split): r.accuracy for r in workflow if r.layer in layers}
    assert mine == theirs and len(mine) == 4 * 2 * 3


def test_an_unknown_layer_lists_the_closest_names(folder, resnet):
    with pytest.raises(ValueError, match=r"no module 'layer5'; closest: layer4, layer3, layer2"):
        latentgen.probe(resnet, ["layer5"], folder["train"], folder["test"], labels=folder["noisy"], device="cpu")
    assert {"input", "layer4", "layer4.1.conv2", "fc"} <= set(tappable_layers(resnet))


@pytest.mark.parametrize("labels, message", [
    (np.zeros(5, dtype=int), r"labels: 5 labels for 120 images"),
    (np.full(120, 3), r"labels: label 3 is outside the classes 0..2"),
])
def test_bad_labels_are_refused(folder, resnet, labels, message):
    with pytest.raises(ValueError, match=message):
        latentgen.probe(resnet, ["layer4"], folder["train"], folder["test"], labels=labels, num_classes=3,
                        device="cpu")


def test_a_class_missing_from_the_test_split_is_refused(folder, resnet):
    test = [(x, y) for x, y in folder["test"] if y != 2]
    loader = torch.utils.data.DataLoader(test, batch_size=16)
    with pytest.raises(ValueError, match="class 2 has training images but none in the test split"):
        latentgen.probe(resnet, ["layer4"], folder["train"], loader, labels=folder["noisy"], device="cpu")


def test_a_head_that_is_not_linear_is_refused_with_the_reason(folder, resnet):
    with pytest.raises(ValueError, match="head 'layer4' is a Sequential: the transfer replaces the weights of an "
                                         "nn.Linear"):
        latentgen.transfer(resnet, head="layer4", train=folder["train"], labels=folder["noisy"], device="cpu")
    with pytest.raises(ValueError, match="the output of 'layer3' is not the input of head 'fc'"):
        latentgen.transfer(resnet, head="fc", train=folder["train"], labels=folder["noisy"], layer="layer3",
                           device="cpu")
    with pytest.raises(ValueError, match="the output of 'layer4.1.conv2' is not the input of head 'fc'"):
        latentgen.transfer(resnet, head="fc", train=folder["train"], labels=folder["noisy"], layer="layer4.1.conv2",
                           device="cpu")  # the same width (512 × 1 × 1 on 32-pixel images), other values


class Payload:  # pickled with the file: loading it would run code
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_weights_file_that_is_not_a_plain_state_dict_is_refused_and_nothing_runs(tmp_path, resnet, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh)
    with pytest.raises(ValueError, match="not a plain state dict"):
        load_weights(resnet, path)
    assert "this must never run" not in capsys.readouterr().out
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(ValueError, match="not a plain state dict|not a state dict of tensors"):
        load_weights(resnet, tmp_path / "module.pt")


def test_the_readmes_example_runs(repo_root):
    text = (repo_root / "README.md").read_text()
    start = text.index("## Your own model")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert len(namespace["rows"]) == 3 * 2 * 3
    assert not torch.equal(namespace["repaired"].fc.weight, namespace["model"].fc.weight)
