"""Activation dumps: HDF5 round trip against a direct forward, labels, attributes, refusal of
incomplete and truncated files, the authors' per-image BatchNorm (D9) for ResNet."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from latentgen.probing.activations import dump_activations, open_activations, per_sample_batchnorm
from latentgen.data.labels import corrupt_labels, write_label_file
from latentgen.models.forward import extract_activations
from latentgen.models.architectures import build_model
from latentgen.training.loop import train
from latentgen.training.hyperparameters import default_train_config
from latentgen.training.checkpoints import load_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("cnn") / "run"
    config = default_train_config("cnn", "digits", corruption=0.6, run=2, train_subset=400, max_epochs=2)
    train(config, out, dataset=digits, device="cpu", verbose=False)
    return out


@pytest.fixture(scope="module")
def cnn_dump(cnn_run, tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("h5") / "epoch2.h5"
    dump_activations(cnn_run / "checkpoints" / "epoch2.pt", path, batch_size=64, device="cpu")
    return path


def test_round_trip_equals_a_direct_forward(cnn_run, cnn_dump, digits):
    model, meta = load_checkpoint(cnn_run / "checkpoints" / "epoch2.pt")
    with torch.no_grad():
        train_acts = extract_activations(model.eval(), digits.train_x[:400])
        test_acts = extract_activations(model, digits.test_x)
    with open_activations(cnn_dump) as acts:
        assert acts.layers == ["input", "flatten", "fc1", "fc2", "fc3"]
        for layer in acts.layers:
            for split, direct in (("train", train_acts), ("test", test_acts)):
                stored = acts.array(split, layer)
                assert stored.dtype == np.float32 and stored.shape == tuple(direct[layer].shape)
                np.testing.assert_allclose(stored, direct[layer].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{split}/{layer}")
            ds = acts.dataset("train", layer)
            assert ds.chunks is not None and ds.compression == "lzf"
        np.testing.assert_array_equal(acts.array("train", "input"), digits.train_x[:400].flatten(1).numpy())
        true = digits.train_y.numpy()
        np.testing.assert_array_equal(acts.labels("train", "true"), true[:400])
        np.testing.assert_array_equal(acts.labels("train", "corrupted"), corrupt_labels(true, 0.6, 10, seed=42)[:400])
        np.testing.assert_array_equal(acts.labels("test"), digits.test_y.numpy())
        assert acts.labels("train", "corrupted").dtype == np.int64
        m = acts.meta
        assert (m["model"], m["dataset"], m["corruption"], m["run"], m["epoch"]) == ("cnn", "digits", 0.6, 2, 2)
        assert (m["last_hidden"], m["head"], m["complete"]) == ("fc3", "fc3", 1)
        assert m["config_hash"] == meta["config_hash"] and m["checkpoint"].endswith("epoch2.pt")
        assert "torch" in m["versions"] and m["checkpoint_meta"]["epoch"] == 2
        assert acts.sizes() == {"input": 64, "flatten": 32, "fc1": 128, "fc2": 128, "fc3": 128}
        with pytest.raises(ValueError, match="layer 'fc4' is not in"):
            acts.array("train", "fc4")
        with pytest.raises(ValueError, match="no 'corrupted' labels for split 'test'"):
            acts.labels("test", "corrupted")


def test_batch_size_does_not_change_the_dump(cnn_run, cnn_dump, tmp_path):
    other = dump_activations(cnn_run / "checkpoints" / "epoch2.pt", tmp_path / "b.h5", batch_size=1000,
                             layers=["fc3", "flatten"], compression="gzip", device="cpu")
    with open_activations(other) as a, open_activations(cnn_dump) as b:
        assert a.layers == ["fc3", "flatten"] and a.dataset("test", "fc3").compression == "gzip"
        for layer in a.layers:
            np.testing.assert_allclose(a.array("train", layer), b.array("train", layer), rtol=1e-5, atol=1e-6)


def test_compressions_store_the_same_values(cnn_run, cnn_dump, tmp_path):
    """``none`` (for GPUs, where HDF5's one-threaded lzf bounds the dump) and gzip store exactly
    lzf's values; each file says its filter."""
    from latentgen import registry

    assert registry.ACTIVATION_COMPRESSIONS[0] == "lzf"  # the default
    with open_activations(cnn_dump) as reference:
        for compression in ("none", "gzip"):
            path = dump_activations(cnn_run / "checkpoints" / "epoch2.pt", tmp_path / f"{compression}.h5",
                                    compression=compression, device="cpu")
            with open_activations(path) as acts:
                assert acts.layers == reference.layers
                for split in ("train", "test"):
                    for layer in acts.layers:
                        ds = acts.dataset(split, layer)
                        assert ds.compression == (None if compression == "none" else compression)
                        np.testing.assert_array_equal(acts.array(split, layer), reference.array(split, layer))


def test_truncated_and_incomplete_files_are_refused(cnn_dump, tmp_path):
    data = cnn_dump.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.h5 is truncated or not an HDF5 file"):
        open_activations(tmp_path / "truncated.h5")
    shutil.copy(cnn_dump, tmp_path / "incomplete.h5")
    with h5py.File(tmp_path / "incomplete.h5", "a") as h5:
        del h5.attrs["complete"]
    with pytest.raises(ValueError, match="incomplete.h5 is incomplete"):
        open_activations(tmp_path / "incomplete.h5")
    shutil.copy(cnn_dump, tmp_path / "short.h5")
    with h5py.File(tmp_path / "short.h5", "a") as h5:
        del h5["test/fc2"]
    with pytest.raises(ValueError, match="lacks dataset 'test/fc2'"):
        open_activations(tmp_path / "short.h5")
    with pytest.raises(FileNotFoundError):
        open_activations(tmp_path / "absent.h5")


def test_labels_are_checked_against_the_checkpoint(cnn_run, digits, tmp_path):
    true = digits.train_y.numpy()
    ckpt = cnn_run / "checkpoints" / "epoch1.pt"
    write_label_file(tmp_path / "same.npz", true, corrupt_labels(true, 0.6, 10, seed=42), seed=42, degree=0.6,
                     num_classes=10, dataset="digits")
    dump_activations(ckpt, tmp_path / "ok.h5", labels=tmp_path / "same.npz", layers=["fc3"], device="cpu")
    write_label_file(tmp_path / "other.npz", true, corrupt_labels(true, 0.6, 10, seed=1), seed=1, degree=0.6,
                     num_classes=10, dataset="digits")
    with pytest.raises(ValueError, match="labels_sha256 mismatch"):
        dump_activations(ckpt, tmp_path / "bad.h5", labels=tmp_path / "other.npz", device="cpu")
    assert not (tmp_path / "bad.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.h5", "other.npz", "same.npz"]  # no temp left


def test_label_file_recorded_in_the_checkpoint_is_used(tmp_path, digits):
    true = digits.train_y.numpy()
    corrupted = corrupt_labels(true, 0.2, 10, seed=5)
    write_label_file(tmp_path / "labels.npz", true, corrupted, seed=5, degree=0.2, num_classes=10, dataset="digits")
    config = default_train_config("mlp", "digits", corruption=0.2, train_subset=100, max_epochs=0)
    train(config, tmp_path / "run", dataset=digits, labels=tmp_path / "labels.npz", verbose=False)
    path = dump_activations(tmp_path / "run" / "checkpoints" / "epoch0.pt", tmp_path / "a.h5", layers=["fc4"])
    with open_activations(path) as acts:
        np.testing.assert_array_equal(acts.labels("train", "corrupted"), corrupted[:100])
    (tmp_path / "labels.npz").unlink()
    with pytest.raises(FileNotFoundError, match="pass it with --labels"):
        dump_activations(tmp_path / "run" / "checkpoints" / "epoch0.pt", tmp_path / "b.h5")


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("resnet") / "run"
    config = default_train_config("resnet18", "digits", corruption=0.0, train_subset=64, max_epochs=1, batch_size=16)
    train(config, out, dataset=digits, device="cpu", verbose=False)
    return out / "checkpoints" / "epoch1.pt"


RESNET_NODES = {"maxpool": "l0", "layer1.0.relu": "l0_1", "layer1.0.relu_1": "l0_2", "layer1.1.relu": "l0_3",
                "layer1.1.relu_1": "l1", "layer2.1.relu_1": "l2", "layer3.1.relu_1": "l3", "layer4.1.relu_1": "l4",
                "view": "bf_last"}


def test_resnet_dump_matches_the_authors_feature_extractor_in_eval_mode(resnet_run, tmp_path, digits):
    path = dump_activations(resnet_run, tmp_path / "r.h5", batch_size=40, device="cpu", batchnorm="eval")
    model, _ = load_checkpoint(resnet_run)
    extractor = create_feature_extractor(model, return_nodes=RESNET_NODES).eval()
    with torch.no_grad():
        expected = {k: v.flatten(1) for k, v in extractor(digits.test_x).items()}
    with open_activations(path) as acts:
        assert acts.meta["batchnorm"] == "eval" and acts.layers == list(RESNET_NODES.values())
        for layer in acts.layers:
            np.testing.assert_allclose(acts.array("test", layer), expected[layer].numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=layer)


def test_per_sample_batchnorm_is_the_authors_batch_size_1_train_mode():
    """D9: the authors extract ResNet features without eval(), one image at a time, through
    create_feature_extractor with the SPEC node names. Batched per-sample BN must match it."""
    model = build_model("resnet18", "cifar10", seed=3)
    with torch.no_grad():  # non-trivial BN affine parameters and running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad(), per_sample_batchnorm(model):
        ours = extract_activations(model, x)
    extractor = create_feature_extractor(model, return_nodes=RESNET_NODES).train()
    with torch.no_grad():
        rows = [extractor(x[i:i + 1]) for i in range(len(x))]
    for layer in RESNET_NODES.values():
        expected = torch.cat([r[layer].flatten(1) for r in rows])
        torch.testing.assert_close(ours[layer], expected, rtol=1e-3, atol=1e-3, msg=layer)  # 2×2 maps: float noise
    with torch.no_grad():
        plain = extract_activations(model, x, ["l4"])["l4"]  # hooks removed: eval-mode BN again
    assert not torch.allclose(plain, ours["l4"], atol=1e-3)


def test_resnet_dumps_default_to_the_authors_per_sample_batchnorm(resnet_run, cnn_run, tmp_path, digits):
    """The registry's one fact: ResNet-18 dumps use per-image BatchNorm unless told otherwise."""
    from latentgen import registry
    from latentgen.__main__ import main

    assert registry.activation_batchnorm("resnet18") == "per_sample"
    assert {registry.activation_batchnorm(a) for a in registry.ARCHITECTURES if a != "resnet18"} == {"eval"}
    assert registry.activation_batchnorm("resnet18", "eval") == "eval"
    with pytest.raises(ValueError, match="batchnorm must be one of eval, per_sample"):
        registry.activation_batchnorm("mlp", "train")
    default = dump_activations(resnet_run, tmp_path / "p.h5", layers=["l0", "bf_last"], device="cpu")
    explicit = dump_activations(resnet_run, tmp_path / "e.h5", layers=["l0", "bf_last"], device="cpu",
                                batchnorm="per_sample")
    evaluated = dump_activations(resnet_run, tmp_path / "v.h5", layers=["l0", "bf_last"], device="cpu",
                                 batchnorm="eval")
    with open_activations(default) as a, open_activations(explicit) as b, open_activations(evaluated) as c:
        assert a.meta["batchnorm"] == "per_sample" and c.meta["batchnorm"] == "eval"
        assert np.isfinite(a.array("train", "l0")).all()
        np.testing.assert_array_equal(a.array("test", "bf_last"), b.array("test", "bf_last"))
        assert not np.allclose(a.array("test", "bf_last"), c.array("test", "bf_last"), atol=1e-4)
    # the command: its default is the architecture's, --batchnorm eval the setting
    assert main(["activations", "--checkpoint", str(resnet_run), "--out", str(tmp_path / "cli.h5"), "--layers",
                 "bf_last", "--device", "cpu"]) == 0
    assert main(["activations", "--checkpoint", str(resnet_run), "--out", str(tmp_path / "cli_eval.h5"), "--layers",
                 "bf_last", "--device", "cpu", "--batchnorm", "eval"]) == 0
    with open_activations(tmp_path / "cli.h5") as a, open_activations(tmp_path / "cli_eval.h5") as c:
        assert (a.meta["batchnorm"], c.meta["batchnorm"]) == ("per_sample", "eval")
    cnn = dump_activations(cnn_run / "checkpoints" / "epoch1.pt", tmp_path / "cnn.h5", layers=["fc3"], device="cpu")
    with open_activations(cnn) as acts:
        assert acts.meta["batchnorm"] == "eval"


def test_bad_arguments(cnn_run, tmp_path):
    ckpt = cnn_run / "checkpoints" / "epoch1.pt"
    with pytest.raises(ValueError, match="unknown probe layer"):
        dump_activations(ckpt, tmp_path / "x.h5", layers=["l4"])
    with pytest.raises(ValueError, match="compression"):
        dump_activations(ckpt, tmp_path / "x.h5", compression="zstd")
    with pytest.raises(ValueError, match="batch size"):
        dump_activations(ckpt, tmp_path / "x.h5", batch_size=0)
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        dump_activations(ckpt, tmp_path / "x.h5", batchnorm="train")
    with pytest.raises(FileNotFoundError):
        dump_activations(tmp_path / "nope.pt", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
