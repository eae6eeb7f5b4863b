"""The model zoo (SPEC §3) with the probe layers named as in the papers.

``build_model(arch, dataset)`` returns an ``nn.Module`` that carries

- ``probe_layers``: the probed layers in order (``input`` is the flattened, normalised image;
  the authors' ``flattern`` is spelled ``flatten``);
- ``probe_points``: layer → (module name, call index): the layer's activation is that module's
  output on its n-th call in one forward pass (ResNet's shared ``relu`` is called twice per
  block: call 0 is torchvision's node ``layer1.0.relu``, call 1 is ``layer1.0.relu_1``);
- ``head``: module name of the pre-softmax ``nn.Linear``; ``last_hidden``: the probe layer that
  feeds it (the VeLPIC transfer's input).

Every model is ``forward_head(forward_features(x))`` (timm's convention): ``forward_features``
runs up to the input of the first ``nn.Linear`` (the flattened features), ``forward_head`` the
linear layers from there. A repair edits linear layers only, so its sweep computes the features
once and runs the head per edit (``latentgen.models.forward.FeatureBatches``).

Activations are read with forward hooks (``latentgen.models.forward``), never stashed inside
``forward``. Module names and parameter order follow the authors' classes, so state_dicts
have the authors' keys and the initial weights consume the RNG in the authors' order:

- MLP: fc1..fc4, output (bias everywhere).
- NgnCnn: conv1..conv6, fcs.0..2, fc3 (no bias); max-pool stride 2 as in the code (D1;
  ``pool_stride=1`` gives the paper's text). The authors reseed ``torch.manual_seed(0)`` in
  ``__init__``, so every CNN starts from the same weights (D5): the CNN's default init seed is 0.
- AlexNet: ``features``, the unused ``classifier`` (built and kept so init RNG and state_dict
  match; the Tiny ImageNet variant also builds and discards the authors' first
  ``Linear(256*6*6, 4096)`` classifier), fc1..fc3.
- ResNet-18 (CIFAR stem): conv1/bn1/relu/maxpool, layer1..4 of BasicBlocks with a shared
  inplace ``relu`` and a ``shortcut`` Sequential, avgpool, fc.

Init seeds are explicit. The authors' MLP runs share one ``torch.manual_seed(42)`` and differ by
loop order; here each run seeds its own model (``build_model(..., seed=s)``), and seeding
happens inside a forked RNG so building a model never disturbs the caller's random state.
``seed=None`` uses ``ARCHITECTURES[arch].default_seed``: the CNN's ``fixed_init_seed`` 0 (the
authors'), else 42 (the authors' script-level ``torch.manual_seed(42)``).

``digits`` (8×8×1) gets small variants of every architecture, chosen automatically, with the
same layer names and structure and widths small enough to train in seconds on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentgen import registry

# --------------------------------------------------------------------------------------------
# models


def _layout(arch: str) -> tuple[list[str], str, str]:
    """Probe layers, head and last hidden layer of ``arch``, as the registry has them."""
    spec = registry.get_architecture(arch)
    return list(spec.probe_layers), spec.head, spec.last_hidden


class MLP(nn.Module):
    """flatten → fc1..fc4 (ReLU after each) → output; probed after each ReLU.

    ``dropout`` > 0 (not the authors' models, which have none) drops hidden units after each ReLU
    while training; the probes read the activations before it (and dump them in eval mode)."""

    probe_layers, head, last_hidden = _layout("mlp")
    probe_points = {"fc1": ("act1", 0), "fc2": ("act2", 0), "fc3": ("act3", 0), "fc4": ("act4", 0)}

    def __init__(self, in_features: int, num_classes: int, widths=(128, 512, 2048, 2048), dropout: float = 0.0):
        super().__init__()
        w1, w2, w3, w4 = _widths(widths, 4, "widths")
        self.dropout = _dropout(dropout)
        self.fc1 = nn.Linear(in_features, w1)
        self.fc2 = nn.Linear(w1, w2)
        self.fc3 = nn.Linear(w2, w3)
        self.fc4 = nn.Linear(w3, w4)
        self.output = nn.Linear(w4, num_classes)
        # parameter-free activations as modules, so the post-ReLU outputs can be hooked
        self.act1, self.act2, self.act3, self.act4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        return torch.flatten(x, 1)

    def forward_head(self, x):
        for fc, act in ((self.fc1, self.act1), (self.fc2, self.act2), (self.fc3, self.act3), (self.fc4, self.act4)):
            x = act(fc(x))
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return self.output(x)


class NgnCnn(nn.Module):
    """The authors' NgnCnn without its unused options (no noise, no excitation).

    ``dropout`` > 0 drops hidden units after each fc ReLU while training (the authors' unused
    option also renormalised them, ``torch.renorm(x, 1, 1, 3)``; SPEC A2 leaves open whether any
    published model used dropout, so only the standard form is offered)."""

    probe_layers, head, last_hidden = _layout("cnn")
    probe_points = {"flatten": ("flatten", 0), "fc1": ("fc_acts.0", 0), "fc2": ("fc_acts.1", 0),
                    "fc3": ("fc_acts.2", 0)}

    def __init__(self, in_channels: int, image_size: int, num_classes: int, conv_channels=(16, 32, 64),
                 fc_width: int = 250, pool_stride: int = 2, dropout: float = 0.0):
        super().__init__()
        c1, c2, c3 = _widths(conv_channels, 3, "conv_channels")
        self.dropout = _dropout(dropout)
        if pool_stride not in (1, 2):
            raise ValueError(f"pool_stride must be 1 or 2, got {pool_stride!r}")
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c1, 3, padding=1)
        self.pool = nn.MaxPool2d(2, pool_stride)
        self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv4 = nn.Conv2d(c2, c2, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2, pool_stride)
        self.conv5 = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv6 = nn.Conv2d(c3, c3, 3, padding=1)
        self.pool3 = nn.MaxPool2d(2, pool_stride)
        self.pool4 = nn.AvgPool2d(kernel_size=1, stride=1)  # identity, kept as in the authors' class
        side = image_size
        for _ in range(3):
            side = (side - 2) // pool_stride + 1
        if side < 1:
            raise ValueError(f"image size {image_size} is too small for the CNN")
        self.flat_features = c3 * side * side  # 576 for 28×28, 1024 for 32×32
        self.flatten = nn.Flatten()
        self.fcs = nn.ModuleList([
            nn.Linear(self.flat_features, fc_width),
            nn.Linear(fc_width, fc_width),
            nn.Linear(fc_width, fc_width),
        ])
        self.fc_acts = nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.ReLU()])
        self.fc3 = nn.Linear(fc_width, num_classes, bias=False)  # the pre-softmax layer has no bias

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        x = self.pool2(F.relu(self.conv4(F.relu(self.conv3(x)))))
        x = self.pool4(self.pool3(F.relu(self.conv6(F.relu(self.conv5(x))))))
        return self.flatten(x)

    def forward_head(self, x):
        for fc, act in zip(self.fcs, self.fc_acts):
            x = act(fc(x))
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return self.fc3(x)


class AlexNet(nn.Module):
    """The authors' AlexNet: ``features`` → flatten → fc1 ReLU fc2 ReLU fc3 (no dropout in forward)."""

    probe_layers, head, last_hidden = _layout("alexnet")
    probe_points = {"flatten": ("flatten", 0), "fc1": ("act1", 0), "fc2": ("act2", 0)}
    unused_in_forward = ("classifier",)  # its Dropout never runs (training.graph_step may graph the step)

    def __init__(self, num_classes: int, variant: str = "cifar100", in_channels: int = 3,
                 conv_channels=(64, 192, 384, 256, 256), fc_width: int = 4096):
        super().__init__()
        c1, c2, c3, c4, c5 = _widths(conv_channels, 5, "conv_channels")
        if variant == "tiny_imagenet":  # 64×64 → 256×1×1
            first = [nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=2)]
            second = [nn.Conv2d(c1, c2, kernel_size=5, padding=2)]
            pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2)  # noqa: E731
        elif variant == "cifar100":  # 32×32 → 256×1×1
            first = [nn.Conv2d(in_channels, c1, kernel_size=3, stride=2, padding=1)]
            second = [nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1)]
            pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2)  # noqa: E731
        elif variant == "small":  # 8×8 digits → c5×1×1 (padded pools: an unpadded 3/2 pool cannot fit)
            first = [nn.Conv2d(in_channels, c1, kernel_size=3, stride=1, padding=1)]
            second = [nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1)]
            pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # noqa: E731
        else:
            raise ValueError(f"unknown AlexNet variant {variant!r}")
        self.variant = variant
        self.features = nn.Sequential(
            first[0], nn.ReLU(inplace=True), pool(),
            second[0], nn.ReLU(inplace=True), pool(),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True), pool(),
        )
        if variant == "tiny_imagenet":
            # The authors' Tiny ImageNet branch first builds a classifier for 256*6*6 features and
            # then overwrites it; building it here consumes the same init random numbers.
            nn.Sequential(nn.Linear(c5 * 6 * 6, fc_width), nn.ReLU(inplace=True), nn.Linear(fc_width, fc_width),
                          nn.ReLU(inplace=True), nn.Linear(fc_width, num_classes))
        # Unused in forward, but part of the authors' state_dict and init order.
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(c5, fc_width), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True),
            nn.Linear(fc_width, num_classes),
        )
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c5, fc_width)
        self.fc2 = nn.Linear(fc_width, fc_width)
        self.fc3 = nn.Linear(fc_width, num_classes)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        return self.flatten(self.features(x))

    def forward_head(self, x):
        x = self.act1(self.fc1(x))
        x = self.act2(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN (+ shortcut) → ReLU, with one shared inplace ``relu`` as the authors."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem (3×3 conv, stride 1) and a 3/2 max-pool."""

    probe_layers, head, last_hidden = _layout("resnet18")
    # torchvision feature-extraction nodes (SPEC §3) as (module, call): 'relu' is call 0, 'relu_1' call 1
    probe_points = {
        "l0": ("maxpool", 0),
        "l0_1": ("layer1.0.relu", 0),
        "l0_2": ("layer1.0.relu", 1),
        "l0_3": ("layer1.1.relu", 0),
        "l1": ("layer1.1.relu", 1),
        "l2": ("layer2.1.relu", 1),
        "l3": ("layer3.1.relu", 1),
        "l4": ("layer4.1.relu", 1),
        "bf_last": ("avgpool", 0),
    }
    # the same layers as torchvision.models.feature_extraction node names
    feature_nodes = {"l0": "maxpool", "l0_1": "layer1.0.relu", "l0_2": "layer1.0.relu_1",
                     "l0_3": "layer1.1.relu", "l1": "layer1.1.relu_1", "l2": "layer2.1.relu_1",
                     "l3": "layer3.1.relu_1", "l4": "layer4.1.relu_1", "bf_last": "view"}

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(64, 128, 256, 512)):
        super().__init__()
        w1, w2, w3, w4 = _widths(widths, 4, "widths")
        self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(w1, w1, 1), BasicBlock(w1, w1, 1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2, 1))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3, 1))
        self.layer4 = nn.Sequential(BasicBlock(w3, w4, 2), BasicBlock(w4, w4, 1))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.avgpool(out)
        return out.view(out.size(0), -1)

    def forward_head(self, x):
        return self.fc(x)


def _dropout(p) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")
    return p


def _widths(values, n: int, what: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) != n or min(values) < 1:
        raise ValueError(f"{what} must be {n} positive integers, got {values!r}")
    return values


# --------------------------------------------------------------------------------------------
# builders (named by the registry's ``Architecture.builder``)


def build_mlp(ds: registry.Dataset, **kw) -> MLP:
    return MLP(ds.in_channels * ds.image_size ** 2, ds.num_classes, **kw)


def build_cnn(ds: registry.Dataset, **kw) -> NgnCnn:
    return NgnCnn(ds.in_channels, ds.image_size, ds.num_classes, **kw)


def build_alexnet(ds: registry.Dataset, **kw) -> AlexNet:
    return AlexNet(ds.num_classes, in_channels=ds.in_channels, **kw)


def build_resnet18(ds: registry.Dataset, **kw) -> ResNet18:
    return ResNet18(ds.num_classes, in_channels=ds.in_channels, **kw)


# the registry's architectures (facts: latentgen.registry.ARCHITECTURES)
ARCHITECTURES = registry.ARCHITECTURES
get_arch = registry.get_architecture


def build_model(arch: str, dataset: str, seed: int | None = None, **overrides) -> nn.Module:
    """Build ``arch`` for ``dataset`` with its initial weights drawn from ``seed``.

    ``overrides`` change the architecture's keyword arguments (e.g. ``pool_stride=1`` for the
    CNN as the paper's text, ``widths=...``); they apply on top of the registry's options for
    the dataset (digits: the small variant). The caller's global RNG state is left untouched.
    """
    spec = registry.get_architecture(arch)
    ds = registry.get_dataset(dataset)
    if dataset not in spec.datasets:
        raise ValueError(f"architecture {arch!r} does not support dataset {dataset!r}; "
                         f"supported: {', '.join(spec.datasets)}")
    kwargs = registry.model_options(arch, dataset)
    kwargs.update(overrides)
    seed = spec.default_seed if seed is None else int(seed)
    build = registry.load(spec.builder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = build(ds, **kwargs)
        except TypeError as exc:  # an override the architecture does not take
            raise ValueError(f"bad model option for {arch!r}: {exc}") from None
    model.arch = arch
    model.dataset = dataset
    model.input_shape = (ds.in_channels, ds.image_size, ds.image_size)
    model.model_options = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    return model
