"""External models in the workflow (issue 18): a torchvision network on an image folder written
in ImageFolder's on-disk layout (PNG files), trained, probed, tabled and repaired by a real
Snakemake run; the configuration's errors for such entries; a label-file model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from latentgen import config_entries as external
from latentgen.workflow.config import ConfigError, check_config

CLASSES = ("circle", "square", "stripes")
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def write_folder(root: Path, n_train: int = 20, n_test: int = 8, size: int = 16) -> Path:
    """PNG images, one folder per class: a bright disc, a bright square, horizontal stripes, each
    with pixel noise (distinct per class, so learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    shapes = {"circle": ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2,
              "square": (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4),
              "stripes": (yy // 2) % 2 == 0}
    for split, n in (("train", n_train), ("test", n_test)):
        for k, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(shapes[cls] * 200 + rng.normal(30, 20, (size, size)), 0, 255).astype(np.uint8)
                rgb = np.stack([img, np.roll(img, k, 0), img // 2], -1)
                Image.fromarray(rgb).save(root / split / cls / f"{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _forget_external():
    yield
    external.unregister_all()


def config(tmp_path, folder, **model) -> dict:
    entry = {"arch": "torchvision:resnet18", "dataset": f"imagefolder:{folder}", "layers": ["layer2", "layer3", "layer4"],
             "image_size": 16, "max_epochs": 3, "train_args": {"batch_size": 30}, **model}
    return {"outdir": str(tmp_path / "results"), "download": False, "device": "cpu", "prefork": False,
            "corruptions": [0.4], "runs": [1], "grid": {"dense_until": 2, "dense_step": 2, "step": 2},
            "threads": {k: 1 for k in ("download", "corrupt", "train", "probe", "metrics", "figure", "repair")},
            "models": {"shapes_resnet": {k: v for k, v in entry.items() if v is not None}},
            "figures": {"build": [], "groups": {}},
            "probes": {"families": ["masc", "velpic", "transfer"]},
            "tables": {"build": ["table_masc"], "claims": False},
            "repair": {"models": ["shapes_resnet"], "rhos": [1.0, 0.9], "methods": ["kfac"]}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("shapes") / "shapes")


# --------------------------------------------------------------------------------------------
# the configuration


def test_an_external_model_resolves_to_registry_entries(tmp_path, folder):
    from latentgen import registry

    cfg = check_config(config(tmp_path, folder), SCHEMA)
    model = cfg["models"]["shapes_resnet"]
    assert (model["arch"], model["dataset"], model["arch_source"]) == ("shapes_resnet", "shapes", "torchvision:resnet18")
    arch, data = registry.get_architecture("shapes_resnet"), registry.get_dataset("shapes")
    assert arch.probe_layers == ("layer2", "layer3", "layer4", "fc:input") and arch.head == "fc"
    assert arch.linear_layers == ("fc",) and registry.repair_layer_sets("shapes_resnet") == ["fc"]
    assert (data.num_classes, data.train_size, data.test_size, data.image_size) == (3, 60, 24, 16)
    # the jobs resolve the same names from the environment the workflow sets
    external.unregister_all()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(external.ENV_VAR, cfg["external"])
        assert registry.get_architecture("shapes_resnet") == arch and registry.get_dataset("shapes") == data


def test_the_timm_path_resolves_a_timm_model(tmp_path, folder):
    pytest.importorskip("timm")
    from latentgen import registry

    cfg = check_config(config(tmp_path, folder, arch="timm:test_vit", layers=["blocks.0", "norm"]), SCHEMA)
    arch = registry.get_architecture(cfg["models"]["shapes_resnet"]["arch"])
    assert arch.head == "head" and arch.probe_layers[-1] == "head:input" and "head" in arch.linear_layers


@pytest.mark.parametrize("change, key, words", [
    ({"arch": "torchvision:resnet81"}, "models.shapes_resnet.arch", "closest: resnet18"),
    ({"layers": None}, "models.shapes_resnet.layers", "needs `layers:`"),
    ({"layers": ["layer2", "layr4"]}, "models.shapes_resnet.layers", "closest: layer4"),
    ({"head": "layer4"}, "models.shapes_resnet.head", "not an nn.Linear"),
    ({"dataset": "imagefolder:/no/such/folder"}, "models.shapes_resnet.dataset", "does not exist"),
    ({"arch": "mlp"}, "models.shapes_resnet.layers", "only for an external architecture"),
    ({"labels": "/no/such.npy"}, "models.shapes_resnet.labels", "does not exist"),
])
def test_bad_external_entries_are_one_line_config_errors(tmp_path, folder, change, key, words):
    with pytest.raises(ConfigError) as info:
        check_config(config(tmp_path, folder, **change), SCHEMA)
    assert info.value.key == key and words in str(info.value) and "\n" not in str(info.value)


def test_a_class_missing_from_test_is_one_line(tmp_path):
    root = write_folder(tmp_path / "odd", n_train=2, n_test=2)
    (root / "train" / "extra").mkdir()
    with pytest.raises(ConfigError, match="class 'extra' is in .*train only") as info:
        check_config(config(tmp_path, root), SCHEMA)
    assert info.value.key == "models.shapes_resnet.dataset" and "\n" not in str(info.value)


def test_a_wrong_length_label_file_is_refused(tmp_path, folder):
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(ConfigError, match="holds 5 labels for 60 training images"):
        check_config(config(tmp_path, folder, labels=str(tmp_path / "short.npy")), SCHEMA)


# --------------------------------------------------------------------------------------------
# training on a label file


def test_a_label_file_model_trains_on_exactly_the_files_labels(tmp_path, folder):
    from latentgen.data.datasets import prepare_dataset
    from latentgen.data.labels import corrupt_dataset
    from latentgen.workflow.plan import JobPlan
    from latentgen.training.loop import train
    from latentgen.training.hyperparameters import default_train_config

    labels = np.random.default_rng(1).integers(0, 3, 60)
    path = tmp_path / "noisy.csv"
    path.write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    cfg = check_config(config(tmp_path, folder, labels=str(path), layers=["layer4"]), SCHEMA)
    model = cfg["models"]["shapes_resnet"]
    true = np.repeat(np.arange(3), 20)
    assert model["corruptions"] == [repr(round(float(np.mean(labels != true)), 4))]
    assert JobPlan(cfg).model_corruptions("shapes_resnet") == model["corruptions"]
    data = prepare_dataset("shapes", None, tmp_path / "shapes.npz")
    corrupt_dataset("shapes", float(model["corruptions"][0]), tmp_path / "labels.npz", prepared=data, noise="file",
                    noise_file=path)
    run = tmp_path / "run"
    config_ = default_train_config("shapes_resnet", "shapes", corruption=float(model["corruptions"][0]), max_epochs=0)
    train(config_, run, prepared=data, labels=tmp_path / "labels.npz", device="cpu", epoch_lines=False)
    manifest = json.loads((run / "manifest.json").read_text())
    with np.load(tmp_path / "labels.npz") as lf:
        np.testing.assert_array_equal(lf["corrupted"], labels)
        np.testing.assert_array_equal(lf["true"], true)
    assert manifest["final_epoch"] == 0


# --------------------------------------------------------------------------------------------
# a real Snakemake run


@pytest.mark.workflow
def test_torchvision_resnet_on_an_image_folder_trains_probes_tables_and_repairs(repo_root, tmp_path, folder):
    from test_workflow import snakemake

    cfg = config(tmp_path, folder)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = snakemake(repo_root, tmp_path, "--cores", "1", configfile=path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = Path(cfg["outdir"])
    run = out / "runs" / "shapes_resnet" / "shapes" / "c0.4" / "run1"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["final_epoch"] == 3
    final = pd.read_csv(out / "probes" / "shapes_resnet" / "shapes" / "c0.4" / "run1.final.csv")
    assert set(final["layer"]) >= {"layer2", "layer3", "layer4", "fc:input"}
    assert {"masc", "velpic", "transfer"} <= set(final["probe"])
    table = pd.read_csv(out / "table_masc.csv")
    assert "shapes_resnet" in table.to_csv()
    repair = pd.read_csv(out / "repair" / "shapes_resnet" / "shapes" / "c0.4" / "run1" / "epoch3.csv")
    assert {"none", "velpic", "kfac"} <= set(repair["repair"]) and (out / "fig_repair.pdf").is_file()
