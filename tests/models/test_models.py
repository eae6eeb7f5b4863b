"""Model zoo: shapes and probe layers against SPEC §3, hooks against hand-written forwards and
torchvision's feature extraction, init order against the authors' construction order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from latentgen.registry import DATASETS
from latentgen.models.forward import extract_activations, layer_sizes
from latentgen.models.architectures import ARCHITECTURES, build_model

# SPEC §3: probe layers and their widths
SPEC_SIZES = {
    ("mlp", "mnist"): {"input": 784, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
    ("mlp", "fashion_mnist"): {"input": 784, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
    ("mlp", "cifar10"): {"input": 3072, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
    ("mlp", "cifar100"): {"input": 3072, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
    ("cnn", "mnist"): {"input": 784, "flatten": 576, "fc1": 250, "fc2": 250, "fc3": 250},
    ("cnn", "fashion_mnist"): {"input": 784, "flatten": 576, "fc1": 250, "fc2": 250, "fc3": 250},
    ("cnn", "cifar10"): {"input": 3072, "flatten": 1024, "fc1": 250, "fc2": 250, "fc3": 250},
    ("cnn", "cifar100"): {"input": 3072, "flatten": 1024, "fc1": 250, "fc2": 250, "fc3": 250},
    ("alexnet", "cifar100"): {"flatten": 256, "fc1": 4096, "fc2": 4096},
    ("alexnet", "tiny_imagenet"): {"flatten": 256, "fc1": 4096, "fc2": 4096},
    ("resnet18", "cifar10"): {"l0": 16384, "l0_1": 16384, "l0_2": 16384, "l0_3": 16384, "l1": 16384,
                              "l2": 8192, "l3": 4096, "l4": 2048, "bf_last": 512},
}
PROBE_NAMES = {"mlp": ["input", "fc1", "fc2", "fc3", "fc4"], "cnn": ["input", "flatten", "fc1", "fc2", "fc3"],
               "alexnet": ["flatten", "fc1", "fc2"],
               "resnet18": ["l0", "l0_1", "l0_2", "l0_3", "l1", "l2", "l3", "l4", "bf_last"]}
HEADS = {"mlp": ("output", "fc4", True), "cnn": ("fc3", "fc3", False), "alexnet": ("fc3", "fc2", True),
         "resnet18": ("fc", "bf_last", True)}
PAIRS = [(arch, ds) for arch, spec in ARCHITECTURES.items() for ds in spec.datasets]
FULL_VARIANT = {"mlp": "mnist", "cnn": "mnist", "alexnet": "cifar100", "resnet18": "cifar10"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(dataset: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    spec = DATASETS[dataset]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, spec.in_channels, spec.image_size, spec.image_size, generator=g)


def test_every_spec_pair_is_registered():
    assert set(SPEC_SIZES) <= set(PAIRS)
    assert {ds for arch, ds in PAIRS if ds == "digits"} == {"digits"}
    assert all((arch, "digits") in PAIRS for arch in ARCHITECTURES)


@pytest.mark.parametrize("arch,dataset", PAIRS)
def test_shapes_probe_layers_and_head(arch, dataset):
    model = build_model(arch, dataset).eval()
    spec = DATASETS[dataset]
    x = _batch(dataset)
    with torch.no_grad():
        acts, logits = extract_activations(model, x, return_logits=True)
    assert logits.shape == (2, spec.num_classes)
    assert model.probe_layers == PROBE_NAMES[arch]
    assert list(acts) == PROBE_NAMES[arch]
    sizes = {name: a.shape[1] for name, a in acts.items()}
    assert all(a.shape[0] == 2 and a.dtype == torch.float32 for a in acts.values())
    if (arch, dataset) in SPEC_SIZES:
        assert sizes == SPEC_SIZES[(arch, dataset)]
    if "input" in acts:
        assert sizes["input"] == spec.in_channels * spec.image_size ** 2
        assert torch.equal(acts["input"], x.flatten(1))
    head_name, last_hidden, has_bias = HEADS[arch]
    assert (model.head, model.last_hidden) == (head_name, last_hidden)
    head = dict(model.named_modules())[head_name]
    assert isinstance(head, nn.Linear)
    assert head.out_features == spec.num_classes and head.in_features == sizes[last_hidden]
    assert (head.bias is not None) == has_bias
    # the last hidden layer really is the head's input: logits = head(last_hidden)
    torch.testing.assert_close(head(acts[last_hidden]), logits)
    assert layer_sizes(model) == sizes


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_digits_variant_is_small_with_the_same_structure(arch):
    small = build_model(arch, "digits")
    full = build_model(arch, FULL_VARIANT[arch])
    assert [(n, type(m)) for n, m in small.named_modules()] == [(n, type(m)) for n, m in full.named_modules()]
    assert list(small.state_dict()) == list(full.state_dict())
    assert sum(p.numel() for p in small.parameters()) < 1_000_000


def test_mlp_hooks_equal_a_handwritten_forward():
    model = build_model("mlp", "mnist", seed=3)
    x = _batch("mnist", 4)
    with torch.no_grad():
        acts = extract_activations(model, x)
        h = x.flatten(1)
        for name in ("fc1", "fc2", "fc3", "fc4"):
            h = F.relu(getattr(model, name)(h))
            assert torch.equal(acts[name], h), name


def test_cnn_hooks_equal_a_handwritten_forward():
    model = build_model("cnn", "cifar10")
    x = _batch("cifar10", 3)
    with torch.no_grad():
        acts = extract_activations(model, x)
        h = x
        for i, conv in enumerate([model.conv1, model.conv2, model.conv3, model.conv4, model.conv5, model.conv6]):
            h = F.relu(conv(h))
            if i % 2 == 1:
                h = F.max_pool2d(h, 2, 2)
        h = h.reshape(len(x), -1)
        assert torch.equal(acts["flatten"], h)
        for i in range(3):
            h = F.relu(model.fcs[i](h))
            assert torch.equal(acts[f"fc{i + 1}"], h)


def test_alexnet_hooks_equal_a_handwritten_forward():
    model = build_model("alexnet", "cifar100")
    x = _batch("cifar100", 2)
    with torch.no_grad():
        acts = extract_activations(model, x)
        flat = torch.flatten(model.features(x), 1)
        fc1 = F.relu(model.fc1(flat))
        fc2 = F.relu(model.fc2(fc1))
    assert torch.equal(acts["flatten"], flat) and torch.equal(acts["fc1"], fc1) and torch.equal(acts["fc2"], fc2)


@pytest.mark.parametrize("dataset,mode", [("cifar10", "eval"), ("digits", "train")])
def test_resnet_hooks_equal_torchvision_feature_extraction(dataset, mode):
    """SPEC §3 names the ResNet nodes as torchvision's create_feature_extractor sees them."""
    model = build_model("resnet18", dataset, seed=5)
    nodes = {"maxpool": "l0", "layer1.0.relu": "l0_1", "layer1.0.relu_1": "l0_2", "layer1.1.relu": "l0_3",
             "layer1.1.relu_1": "l1", "layer2.1.relu_1": "l2", "layer3.1.relu_1": "l3", "layer4.1.relu_1": "l4",
             "view": "bf_last"}
    model.train(mode == "train")
    extractor = create_feature_extractor(model, return_nodes=nodes)
    extractor.train(mode == "train")
    x = _batch(dataset, 3)
    with torch.no_grad():
        ours = extract_activations(model, x)
        theirs = extractor(x)
    for name in model.probe_layers:
        torch.testing.assert_close(ours[name], theirs[name].flatten(1), rtol=0, atol=0, msg=name)


def test_state_dict_keys_follow_the_authors_classes():
    cnn = build_model("cnn", "mnist").state_dict()
    assert "fcs.0.weight" in cnn and "fc3.weight" in cnn and "fc3.bias" not in cnn and "conv6.bias" in cnn
    alex = build_model("alexnet", "cifar100").state_dict()
    assert {"classifier.1.weight", "classifier.4.weight", "classifier.6.weight", "fc3.bias"} <= set(alex)
    assert alex["classifier.1.weight"].shape == (4096, 256)
    res = build_model("resnet18", "cifar10").state_dict()
    assert "layer2.0.shortcut.0.weight" in res and "layer1.0.shortcut.0.weight" not in res
    assert "conv1.bias" not in res and res["conv1.weight"].shape == (64, 3, 3, 3)


def test_cnn_init_is_seed_0_in_the_authors_order():
    torch.manual_seed(0)
    ref = [nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1),
           nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1),
           nn.Linear(576, 250), nn.Linear(250, 250), nn.Linear(250, 250), nn.Linear(250, 10, bias=False)]
    ref_params = [p for m in ref for p in m.parameters()]
    model = build_model("cnn", "mnist")
    ours = list(model.parameters())
    assert len(ours) == len(ref_params)
    for a, b in zip(ours, ref_params):
        assert torch.equal(a, b)
    again = build_model("cnn", "mnist")  # every CNN starts from the same weights (D5)
    assert all(torch.equal(a, b) for a, b in zip(ours, again.parameters()))


def test_alexnet_tiny_init_consumes_the_discarded_classifier():
    seed = 11
    torch.manual_seed(seed)
    nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.Conv2d(64, 192, 5, padding=2), nn.Conv2d(192, 384, 3, padding=1),
                  nn.Conv2d(384, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1))
    nn.Linear(256 * 6 * 6, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 200)  # built, then overwritten
    nn.Linear(256, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 200)  # the kept, unused classifier
    fc1 = nn.Linear(256, 4096)
    model = build_model("alexnet", "tiny_imagenet", seed=seed)
    assert torch.equal(model.fc1.weight, fc1.weight) and torch.equal(model.fc1.bias, fc1.bias)


def test_seeds_are_explicit_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("mlp", "digits", seed=1)
    b = build_model("mlp", "digits", seed=1)
    c = build_model("mlp", "digits", seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)
    torch.manual_seed(1)
    assert torch.equal(nn.Linear(64, 64).weight, a.fc1.weight)


def test_paper_pool_stride_is_an_override():
    model = build_model("cnn", "mnist", pool_stride=1)  # the paper's text (D1): 28 → 27 → 26 → 25
    assert layer_sizes(model, ["flatten"]) == {"flatten": 64 * 25 * 25}


@pytest.mark.parametrize("args,match", [
    (("vgg", "mnist"), "unknown architecture 'vgg'"),
    (("mlp", "imagenet"), "unknown dataset 'imagenet'"),
    (("alexnet", "mnist"), "'alexnet' does not support dataset 'mnist'"),
    (("resnet18", "tiny_imagenet"), "'resnet18' does not support dataset 'tiny_imagenet'"),
])
def test_bad_names_raise_value_errors_naming_them(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)


def test_bad_override_and_layer_raise():
    with pytest.raises(ValueError, match="bad model option"):
        build_model("mlp", "digits", depth=3)
    with pytest.raises(ValueError, match="widths"):
        build_model("mlp", "digits", widths=(1, 2))
    model = build_model("mlp", "digits")
    with pytest.raises(ValueError, match="unknown probe layer.*'fc9'"):
        extract_activations(model, _batch("digits"), ["fc1", "fc9"])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_dropout_acts_in_training_only_and_zero_changes_nothing(arch):
    x = torch.randn(16, 1, 8, 8)
    plain, zero, half = (build_model(arch, "digits", seed=3, **kw) for kw in ({}, {"dropout": 0.0}, {"dropout": 0.5}))
    for m in (plain, zero, half):
        m.train()
    torch.manual_seed(0)
    assert torch.equal(plain(x), zero(x))
    half.eval()
    assert torch.equal(plain.eval()(x), half(x))  # eval: identity
    half.train()
    torch.manual_seed(0)
    assert not torch.allclose(half(x), plain.train()(x))  # training: units dropped
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        build_model(arch, "digits", dropout=1.0)
    with pytest.raises(ValueError, match="bad model option for 'resnet18'"):
        build_model("resnet18", "digits", dropout=0.5)
