"""Datasets: registry, every loader (digits and MNIST for real, the rest from small files in their
real formats), bitwise agreement with torchvision's per-item pipeline, downloads from local URLs,
safe extraction, prepared files, and the errors for missing data, no network and bad roots."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch

import fakedata
from latentgen import registry
from latentgen.data import raw_files
from latentgen.data.datasets import get_spec, load_dataset, prepare_dataset, read_prepared

DATASETS = {name: get_spec(name) for name in registry.DATASETS}  # every built-in dataset with its raw files

CONTRACT_NAMES = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet"]


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    fakedata.block_internet(monkeypatch)


def reference_normalize(x_uint8, mean, std, scale=255.0):
    """ToTensor + Normalize per item, through torchvision itself."""
    from torchvision.transforms import functional as F

    items = []
    for img in x_uint8:
        t = torch.from_numpy(np.ascontiguousarray(img)).to(torch.float32).div(scale)  # ToTensor on uint8 CHW
        items.append(F.normalize(t, list(mean), list(std)))
    return torch.stack(items)


def torchvision_items(ds, indices):
    """Items of a torchvision dataset built with the authors' transforms."""
    xs, ys = zip(*(ds[i] for i in indices))
    return torch.stack(xs), torch.tensor(ys)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_fields():
    assert list(DATASETS) == CONTRACT_NAMES
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert len(spec.mean) == len(spec.std) == spec.in_channels
        assert spec.train_size > 0 and spec.test_size > 0 and spec.num_classes >= 2
    assert [n for n, s in DATASETS.items() if s.strict_corruption_mask] == ["tiny_imagenet"]
    assert DATASETS["tiny_imagenet"].mean == (0.0,) * 3 and DATASETS["tiny_imagenet"].std == (1.0,) * 3  # ToTensor only


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet", tmp_path)
    for name in CONTRACT_NAMES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="data root"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------- digits (real)


def test_digits_split_and_normalisation():
    from sklearn.datasets import load_digits

    digits = load_digits()
    ds = load_dataset("digits")
    spec = DATASETS["digits"]
    assert ds.train_x.shape == (spec.train_size, 1, 8, 8) and ds.test_x.shape == (spec.test_size, 1, 8, 8)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64

    train, test = raw_files.digits_split(digits.target)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(digits.target)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # original order kept
    for k in range(10):  # stratified: round(20 %) of every class in test
        n_k = int(np.sum(digits.target == k))
        assert np.sum(digits.target[test] == k) == round(raw_files.DIGITS_TEST_FRACTION * n_k)
    assert np.array_equal(ds.train_y.numpy(), digits.target[train])
    assert np.array_equal(ds.test_y.numpy(), digits.target[test])
    # 0..16 -> [0, 1] -> Normalize(0.5, 0.5), computed independently in float64
    expected = (digits.images[test][:, None] / 16.0 - 0.5) / 0.5
    assert np.allclose(ds.test_x.numpy(), expected, atol=1e-6, rtol=0)
    assert ds.train_x.min() == -1 and ds.train_x.max() == 1

    again = load_dataset("digits")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)
    other_train, _ = raw_files.digits_split(digits.target, seed=1)
    assert not np.array_equal(other_train, train)  # the seed decides the split


# ----------------------------------------------------------------------------- MNIST (real)


def test_mnist_real_bitwise_equal_to_torchvision(mnist_root, tmp_path):
    import torchvision
    from torchvision import transforms

    ds = load_dataset("mnist", mnist_root)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    rng = np.random.RandomState(0)
    for train, x, y in ((True, ds.train_x, ds.train_y), (False, ds.test_x, ds.test_y)):
        ref = torchvision.datasets.MNIST(str(mnist_root), train=train, transform=tf, download=False)
        assert torch.equal(y, ref.targets)  # every label, in order
        idx = np.concatenate([[0, len(ref) - 1], rng.choice(len(ref), 300, replace=False)])
        ref_x, ref_y = torchvision_items(ref, idx)
        assert torch.equal(x[idx], ref_x)  # bitwise, not approximately
        assert torch.equal(y[idx], ref_y)

    # prepared file: uint8 + constants, written atomically into tmp (the shared root stays read-only)
    out = prepare_dataset("mnist", mnist_root, tmp_path / "data" / "mnist.npz", download=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist.npz"]
    raw = read_prepared(out, "mnist")
    assert raw.train_x.dtype == np.uint8 and raw.train_x.shape == (60000, 1, 28, 28)
    fast = load_dataset("mnist", prepared=out)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(fast, key), getattr(ds, key))


def test_present_files_never_touch_network(tmp_path, monkeypatch):
    def no_urlopen(*args, **kwargs):
        raise AssertionError("network touched although the files are present")

    monkeypatch.setattr("urllib.request.urlopen", no_urlopen)
    fakedata.write_mnist_family(tmp_path, "FashionMNIST", n_train=4, n_test=2)
    fakedata.write_cifar(tmp_path, "cifar100", n_per_batch=4, n_test=2)
    tmp_path.chmod(0o555)  # present files need no writable root
    try:
        assert len(load_dataset("fashion_mnist", tmp_path, download=True).train_y) == 4
        assert len(load_dataset("cifar100", tmp_path, download=True).test_y) == 2
    finally:
        tmp_path.chmod(0o755)


def test_prepared_load_needs_no_torchvision(tmp_path):
    out = prepare_dataset("digits", None, tmp_path / "digits.npz")
    code = ("import sys; from latentgen.data.datasets import load_dataset; "
            f"d = load_dataset('digits', prepared={str(out)!r}); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'; print(d.train_x.shape[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == DATASETS["digits"].train_size
    direct = load_dataset("digits")
    assert torch.equal(load_dataset("digits", prepared=out).test_x, direct.test_x)


def test_prepared_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_dataset("digits", prepared=tmp_path / "missing.npz")
    out = prepare_dataset("digits", None, tmp_path / "digits.npz")
    with pytest.raises(ValueError, match="holds 'digits', not 'mnist'"):
        load_dataset("mnist", prepared=out)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("digits", prepared=truncated)
    with np.load(out) as npz:
        arrays = dict(npz)
    arrays.pop("scale")
    np.savez(tmp_path / "no_scale.npz", **arrays)
    with pytest.raises(ValueError, match="lacks scale"):
        load_dataset("digits", prepared=tmp_path / "no_scale.npz")
    arrays.update(scale=np.float64(255.0))
    np.savez(tmp_path / "wrong_scale.npz", **arrays)
    with pytest.raises(ValueError, match="scale"):
        load_dataset("digits", prepared=tmp_path / "wrong_scale.npz")


# ----------------------------------------------------------------------------- Fashion-MNIST (fake files)


def test_fashion_mnist_from_idx_files(tmp_path):
    import torchvision
    from torchvision import transforms

    written = fakedata.write_mnist_family(tmp_path, "FashionMNIST", n_train=50, n_test=20, seed=3)
    ds = load_dataset("fashion_mnist", tmp_path)
    assert np.array_equal(ds.train_y.numpy(), written["train_y"])
    assert torch.equal(ds.test_x, reference_normalize(written["test_x"], (0.5,), (0.5,)))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    ref = torchvision.datasets.FashionMNIST(str(tmp_path), train=True, transform=tf)
    assert torch.equal(ds.train_x, torchvision_items(ref, range(len(ref)))[0])


def test_fashion_mnist_download_from_mirror(tmp_path, monkeypatch):
    """torchvision's own download (gzip files, md5 checks, extraction) against a local mirror."""
    import torchvision

    mirror = tmp_path / "mirror"
    written = fakedata.write_mnist_family(mirror, "FashionMNIST", n_train=30, n_test=10, seed=4, gz=True)
    gz_folder = mirror / "FashionMNIST" / "raw"
    resources = [(name, fakedata.md5(gz_folder / name)) for name, _ in torchvision.datasets.FashionMNIST.resources]
    root = tmp_path / "root"
    with fakedata.LocalHTTPServer(gz_folder) as server:
        monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [server.url])
        monkeypatch.setattr(torchvision.datasets.FashionMNIST, "resources", resources)
        with pytest.raises(FileNotFoundError, match="downloading is off"):
            load_dataset("fashion_mnist", root, download=False)
        ds = load_dataset("fashion_mnist", root, download=True)
    assert np.array_equal(ds.test_y.numpy(), written["test_y"])
    assert torch.equal(ds.train_x, reference_normalize(written["train_x"], (0.5,), (0.5,)))
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()

    bad_root = tmp_path / "bad"
    bad = [(name, "0" * 32) for name, _ in resources]
    with fakedata.LocalHTTPServer(gz_folder) as server:
        monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [server.url])
        monkeypatch.setattr(torchvision.datasets.FashionMNIST, "resources", bad)
        with pytest.raises(FileNotFoundError, match="download failed"):
            load_dataset("fashion_mnist", bad_root, download=True)


# ----------------------------------------------------------------------------- CIFAR (fake files)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_pickle_batches(tmp_path, name):
    written = fakedata.write_cifar(tmp_path, name, n_per_batch=6, n_test=7, seed=5)
    ds = load_dataset(name, tmp_path)
    spec = DATASETS[name]
    assert ds.num_classes == spec.num_classes
    assert np.array_equal(ds.train_y.numpy(), written["train_y"])
    assert np.array_equal(ds.test_y.numpy(), written["test_y"])
    assert torch.equal(ds.train_x, reference_normalize(written["train_x"], spec.mean, spec.std))
    assert torch.equal(ds.test_x, reference_normalize(written["test_x"], spec.mean, spec.std))
    # the channel-major pickle layout: the first 1024 bytes of a row are the red plane
    from PIL import Image
    from torchvision import transforms

    img = Image.fromarray(written["train_x"][0].transpose(1, 2, 0))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    assert torch.equal(ds.train_x[0], tf(img))


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    fakedata.write_cifar(tmp_path, "cifar10", n_per_batch=2, n_test=2)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_download_from_local_url(tmp_path, monkeypatch):
    """torchvision's download_url with its md5 check, then our safe tar extraction."""
    import torchvision

    src = tmp_path / "src"
    written = fakedata.write_cifar(src, "cifar10", n_per_batch=3, n_test=4, seed=6)
    served = tmp_path / "served"
    served.mkdir()
    archive = fakedata.tar_folder(src, "cifar-10-batches-py", served / "cifar-10-python.tar.gz")
    root = tmp_path / "root"
    with fakedata.LocalHTTPServer(served) as server:
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", server.url + archive.name)
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", fakedata.md5(archive))
        ds = load_dataset("cifar10", root, download=True)
    assert np.array_equal(ds.train_y.numpy(), written["train_y"])

    evil = fakedata.evil_tar(served / "evil.tar.gz")
    evil_root = tmp_path / "inner" / "root"
    with fakedata.LocalHTTPServer(served) as server:
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", server.url + evil.name)
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "filename", "evil.tar.gz")
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", fakedata.md5(evil))
        with pytest.raises(ValueError, match="outside"):
            load_dataset("cifar10", evil_root, download=True)
    assert not (tmp_path / "inner" / "evil.txt").exists()


# ----------------------------------------------------------------------------- Tiny ImageNet (fake zip)


def _imagefolder_reference(folder):
    import torchvision
    from torchvision import transforms

    ref = torchvision.datasets.ImageFolder(str(folder), transform=transforms.ToTensor())
    return ref, torchvision_items(ref, range(len(ref)))


@pytest.fixture
def tiny_zip(tmp_path, monkeypatch):
    archive = tmp_path / "served" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    info = fakedata.write_tiny_imagenet_zip(archive, n_train=3, n_val=4, seed=7)
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_URL", archive.as_uri())
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_MD5", fakedata.md5(archive))
    return archive, info


def test_tiny_imagenet_download_checksum_relayout(tmp_path, tiny_zip):
    archive, info = tiny_zip
    root = tmp_path / "root"
    ds = load_dataset("tiny_imagenet", root, download=True)
    base = root / "tiny-imagenet-200"
    assert (root / archive.name).is_file()  # the verified archive is kept
    assert not (base / "val" / "images").exists()
    assert sorted(p.name for p in (base / "val").iterdir() if p.is_dir()) == sorted(info["wnids"])
    for filename, wnid in info["val_labels"].items():
        assert (base / "val" / wnid / "images" / filename).is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no scratch left

    wnids = sorted(info["wnids"])
    assert ds.num_classes == 200 and ds.train_x.shape[1:] == (3, 64, 64)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("val", ds.test_x, ds.test_y)):
        ref, (ref_x, ref_y) = _imagefolder_reference(base / split)
        assert ref.classes == wnids
        assert torch.equal(x, ref_x) and torch.equal(y, ref_y)  # same order, same pixels (ToTensor only)
    expected_val = sorted((wnids.index(w), f) for f, w in info["val_labels"].items())
    assert ds.test_y.tolist() == [k for k, _ in expected_val]
    assert ds.train_x.min() >= 0 and ds.train_x.max() <= 1


def test_tiny_imagenet_wrong_checksum(tmp_path, tiny_zip, monkeypatch):
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_MD5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_dataset("tiny_imagenet", root, download=True)
    assert not (root / "tiny-imagenet-200").exists() and not (root / "tiny-imagenet-200.zip").exists()


def test_tiny_imagenet_zip_escaping_member_refused(tmp_path, monkeypatch):
    archive = tmp_path / "served" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    fakedata.write_tiny_imagenet_zip(archive, n_train=1, n_val=1, evil_member="../evil.txt")
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_URL", archive.as_uri())
    monkeypatch.setattr(raw_files, "TINY_IMAGENET_MD5", fakedata.md5(archive))
    root = tmp_path / "a" / "root"
    with pytest.raises(ValueError, match="outside"):
        load_dataset("tiny_imagenet", root, download=True)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (root / "tiny-imagenet-200").exists()


def test_tiny_imagenet_extracted_by_hand_is_relaid(tmp_path, tiny_zip):
    import zipfile

    archive, info = tiny_zip
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "root")
    ds = load_dataset("tiny_imagenet", tmp_path / "root", download=False)
    assert len(ds.test_y) == len(info["val_labels"])
    assert not (tmp_path / "root" / "tiny-imagenet-200" / "val" / "images").exists()


# ----------------------------------------------------------------------------- missing data, no network, bad roots


@pytest.mark.parametrize("name", [n for n in CONTRACT_NAMES if DATASETS[n].needs_root])
def test_missing_files_named_without_download(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, tmp_path, download=False)
    message = str(err.value)
    for path in DATASETS[name].expected_files(tmp_path):
        assert str(path) in message or "more)" in message
    assert str(tmp_path) in message and "latentgen download" in message
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("name", [n for n in CONTRACT_NAMES if DATASETS[n].needs_root])
def test_missing_files_and_no_network(tmp_path, name, monkeypatch):
    # torchvision's mirrors and the Tiny ImageNet URL are real internet addresses; block_internet refuses them
    root = tmp_path / "root"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, root, download=True)
    message = str(err.value)
    assert "download failed" in message and str(DATASETS[name].expected_files(root)[0]) in message


def test_unwritable_root_when_download_needed(read_only_dir):
    root = read_only_dir
    with pytest.raises(PermissionError, match=str(root)):
        load_dataset("cifar10", root / "sub", download=True)
    with pytest.raises(PermissionError, match=str(root)):
        load_dataset("tiny_imagenet", root, download=True)


def test_network_errors_are_reported(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    with pytest.raises(FileNotFoundError, match="no route to host"):
        load_dataset("tiny_imagenet", tmp_path, download=True)
