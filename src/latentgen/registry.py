"""The one place for latentgen's names and facts: datasets, architectures, the checkpoint grid,
probe families and repair methods.

Everything else reads this module — the library, the commands, the workflow (the Snakefile
imports it at parse time, once per cluster job too), the config checks and the README's tables —
so it imports nothing heavy: no torch, numpy or pandas. An implementation is named by its
import path (``"module:attribute"``) and loaded on demand with :func:`load`.

Adding a dataset, an architecture, a probe family or a repair method is one entry here (plus its
implementation where it has one) and one test; :func:`check_registry` runs at import and refuses
an inconsistent entry (an architecture claiming an unknown dataset, a layer set naming a layer
the architecture does not have, ...) with an error naming it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from latentgen.registry_check import RegistryError, check_registry


def load(path: str) -> Any:
    """The object an import path ``"package.module:attribute"`` names."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise RegistryError(f"implementation path {path!r} must look like 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


# --------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Dataset:
    """One dataset. ``x -> (x / scale - mean) / std`` per channel gives the model input."""

    name: str
    label: str  # display name in figures and tables
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float
    train_size: int
    test_size: int
    files: str  # import path of its ``DatasetFiles`` (how raw files are found, fetched and read)
    # the authors' per-dataset training facts (SPEC §4): running train accuracy on the corrupted
    # labels at which the CNN, AlexNet and ResNet stop (their ``traget_train``), and their batch
    # size for the CNN and AlexNet; ``paper_cnn_batch`` is the paper's text (D2) where it differs
    target_acc: float = 1.0
    batch_size: int = 32
    paper_cnn_batch: int | None = None
    needs_root: bool = True  # raw files under data_root (digits ships with scikit-learn)
    # the authors' Tiny ImageNet code builds the corruption mask with '<' instead of '<=' (SPEC §2)
    strict_corruption_mask: bool = False
    source: str = ""


DATASETS: Mapping[str, Dataset] = _frozen({d.name: d for d in [
    Dataset("digits", "Digits", 10, 1, 8, (0.5,), (0.5,), 16.0, 1438, 359, "latentgen.data.raw_files:DIGITS_RAW",
            target_acc=1.0, batch_size=32, needs_root=False, source="scikit-learn digits"),
    Dataset("mnist", "MNIST", 10, 1, 28, (0.5,), (0.5,), 255.0, 60000, 10000, "latentgen.data.raw_files:MNIST_RAW",
            target_acc=0.999, batch_size=128, paper_cnn_batch=32, source="MNIST (torchvision MNIST/raw)"),
    Dataset("fashion_mnist", "Fashion-MNIST", 10, 1, 28, (0.5,), (0.5,), 255.0, 60000, 10000,
            "latentgen.data.raw_files:FASHION_MNIST_RAW", target_acc=0.991, batch_size=128, paper_cnn_batch=32,
            source="Fashion-MNIST (torchvision FashionMNIST/raw)"),
    Dataset("cifar10", "CIFAR-10", 10, 3, 32, (0.5,) * 3, (0.5,) * 3, 255.0, 50000, 10000,
            "latentgen.data.raw_files:CIFAR10_RAW", target_acc=1.0, batch_size=32, paper_cnn_batch=128,
            source="CIFAR-10 python (cifar-10-python.tar.gz, extracted)"),
    Dataset("cifar100", "CIFAR-100", 100, 3, 32, (0.5,) * 3, (0.5,) * 3, 255.0, 50000, 10000,
            "latentgen.data.raw_files:CIFAR100_RAW", target_acc=0.991, batch_size=128,
            source="CIFAR-100 python (cifar-100-python.tar.gz, extracted)"),
    # ToTensor only (SPEC §1, D3): mean 0, std 1
    Dataset("tiny_imagenet", "Tiny ImageNet", 200, 3, 64, (0.0,) * 3, (1.0,) * 3, 255.0, 100000, 10000,
            "latentgen.data.raw_files:TINY_IMAGENET_RAW", target_acc=0.999, batch_size=500,
            strict_corruption_mask=True, source="Tiny ImageNet (the official tiny-imagenet-200.zip, extracted)"),
]})


# --------------------------------------------------------------------------------------------
# the checkpoint grid (SPEC §5)

GRID_DEFAULT: Mapping[str, int] = _frozen({"dense_until": 20, "dense_step": 2, "step": 5})


def on_grid(epoch: int, dense_until: int = 20, dense_step: int = 2, step: int = 5) -> bool:
    """Epoch 0 (the initial model), 1, every ``dense_step`` up to ``dense_until``, then every ``step``."""
    if epoch in (0, 1):
        return True
    if epoch <= dense_until:
        return epoch % dense_step == 0
    return (epoch - dense_until) % step == 0


def probed_epochs(saved, final: int, grid: dict, probe_final: bool = False) -> list[int]:
    """The probed checkpoints of a run that saved ``saved`` and ended at ``final``: those on its
    ``grid`` (``on_grid``'s keywords), and the final one too with ``probe_final``."""
    return [e for e in sorted(int(e) for e in saved) if on_grid(e, **grid) or (e == final and probe_final)]


def checkpoint_grid(last_epoch: int, dense_until: int = 20, dense_step: int = 2, step: int = 5) -> list[int]:
    """The grid epochs up to ``last_epoch``: 0, 1, 2, 4, …, 20, 25, 30, … by default."""
    return [e for e in range(0, int(last_epoch) + 1) if on_grid(e, dense_until, dense_step, step)]


# --------------------------------------------------------------------------------------------
# architectures

FROM_DATASET = "dataset"  # a training default taken from the dataset's entry (target_acc, batch_size)


@dataclass(frozen=True)
class Architecture:
    """One architecture: its builder, the datasets it supports, its layers and training defaults.

    ``probe_layers`` are the probed layers in order (``input`` is the flattened image), ``head``
    the module name of the pre-softmax ``nn.Linear`` and ``last_hidden`` the probe layer feeding it
    (the VeLPIC transfer's input); ``linear_layers`` every ``nn.Linear`` module in forward order
    (what the curvature repair can edit). ``train`` holds the authors' hyper-parameters (SPEC §4);
    a value ``FROM_DATASET`` is the dataset's own. ``model_options`` are builder keywords per
    dataset (digits gets small widths), ``train_by_dataset`` training overrides per dataset.
    """

    name: str
    label: str
    builder: str  # import path of ``build(dataset: Dataset, **options) -> nn.Module``
    datasets: tuple[str, ...]
    probe_layers: tuple[str, ...]
    head: str
    last_hidden: str
    linear_layers: tuple[str, ...]
    train: Mapping[str, Any]
    # an init seed every run shares (the authors' NgnCnn reseeds with 0); None: seeded per run
    fixed_init_seed: int | None = None
    model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    train_by_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # layer sets the curvature repair sweeps (CURVATURE.md §5.4); None: each nn.Linear, hidden, all
    repair_layer_sets: tuple[str, ...] | None = None
    # the set fixed a priori (the ViT's "first and last MLP blocks at rho = 0.75", [P] §5)
    a_priori_layer_set: str | None = None
    description: str = ""
    # BatchNorm when activations are dumped (BATCHNORM_MODES): the authors' ResNet-18 passes ran
    # without model.eval() at batch size 1, so each image is normalised by its own statistics (D9)
    activation_batchnorm: str = "eval"
    # whether the 2025 tables' best layer may be the input layer: the authors' Table_values.ipynb
    # takes the max over input, flattern, fc1-fc3 for the CNN, over the hidden layers otherwise
    best_layer_includes_input: bool = False
    # whether its training step replays as a CUDA graph by default on a GPU (training.graph_step):
    # set once tests/gpu has found the graphed run bitwise equal to the eager one on a real GPU
    cuda_graph: bool = False

    @property
    def default_seed(self) -> int:
        """The init seed when none is given: the fixed one, else the authors' script-level 42."""
        return 42 if self.fixed_init_seed is None else self.fixed_init_seed


# digits is our offline demo, not the authors': with ~45 steps per epoch instead of ~1900 the
# authors' learning rates need hundreds of epochs, so the demo uses 10x (MLP/ResNet) and 5x
# (CNN/AlexNet) larger ones; the non-MLP models stop at 99 % (a small CNN takes long to fit the
# last few random labels)
ARCHITECTURES: Mapping[str, Architecture] = _frozen({a.name: a for a in [
    Architecture(
        "mlp", "MLP", "latentgen.models.architectures:build_mlp", ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100"),
        probe_layers=("input", "fc1", "fc2", "fc3", "fc4"), head="output", last_hidden="fc4",
        linear_layers=("fc1", "fc2", "fc3", "fc4", "output"),
        # the MLP always trains to exactly 100 % (D7)
        train={"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32, "target_acc": 1.0},
        model_options={"digits": {"widths": (64, 128, 256, 256)}},
        train_by_dataset={"digits": {"lr": 1e-2}},
        repair_layer_sets=("fc1", "fc2", "fc3", "fc4", "output", "fc1+fc4", "fc3+fc4", "fc4+output", "hidden", "all"),
        a_priori_layer_set="fc1+fc4", description="MLP 784|3072-128-512-2048-2048-K",
        cuda_graph=True),  # bitwise equal on an H200 (2026-12-04); 5.5x the eager step's samples/s
    Architecture(
        "cnn", "CNN", "latentgen.models.architectures:build_cnn", ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100"),
        probe_layers=("input", "flatten", "fc1", "fc2", "fc3"), head="fc3", last_hidden="fc3",
        linear_layers=("fcs.0", "fcs.1", "fcs.2", "fc3"),
        train={"optimizer": "adam", "lr": 2e-4, "batch_size": FROM_DATASET, "target_acc": FROM_DATASET},
        fixed_init_seed=0,
        model_options={"digits": {"conv_channels": (8, 16, 32), "fc_width": 128}},
        train_by_dataset={"digits": {"lr": 1e-3, "target_acc": 0.99}},
        repair_layer_sets=("fcs.0", "fcs.1", "fcs.2", "fc3", "fcs.0+fcs.2", "fcs.1+fcs.2", "all"),
        a_priori_layer_set="fcs.0+fcs.2", description="NgnCnn (Tran et al. 2022), 6 conv + 3 fc",
        best_layer_includes_input=True),
    Architecture(
        "alexnet", "AlexNet", "latentgen.models.architectures:build_alexnet", ("digits", "cifar100", "tiny_imagenet"),
        probe_layers=("flatten", "fc1", "fc2"), head="fc3", last_hidden="fc2",
        linear_layers=("classifier.1", "classifier.4", "classifier.6", "fc1", "fc2", "fc3"),
        train={"optimizer": "adam", "lr": 1e-4, "batch_size": FROM_DATASET, "target_acc": FROM_DATASET},
        model_options={"digits": {"variant": "small", "conv_channels": (16, 32, 64, 64, 64), "fc_width": 128},
                       "cifar100": {"variant": "cifar100"}, "tiny_imagenet": {"variant": "tiny_imagenet"}},
        # every 10 epochs after 20 on Tiny ImageNet, as the authors
        train_by_dataset={"digits": {"lr": 1e-3, "target_acc": 0.99}, "tiny_imagenet": {"grid_step": 10}},
        description="AlexNet, Tiny ImageNet / CIFAR-100 variants"),
    Architecture(
        "resnet18", "ResNet-18", "latentgen.models.architectures:build_resnet18", ("digits", "cifar10"),
        probe_layers=("l0", "l0_1", "l0_2", "l0_3", "l1", "l2", "l3", "l4", "bf_last"), head="fc",
        last_hidden="bf_last", linear_layers=("fc",),
        train={"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32, "target_acc": FROM_DATASET},
        model_options={"digits": {"widths": (16, 32, 64, 128)}},
        train_by_dataset={"digits": {"lr": 1e-2, "target_acc": 0.99}},
        description="ResNet-18, CIFAR stem", activation_batchnorm="per_sample"),
]})

HPARAM_SOURCES = ("code", "paper")  # the authors' code (default) or the paper's text (D2)
OPTIMIZERS = ("sgd", "adam")


def train_defaults(arch: str, dataset: str, hparams: str = "code") -> dict[str, Any]:
    """The authors' training settings for ``arch`` on ``dataset`` (SPEC §4), as TrainConfig fields."""
    if hparams not in HPARAM_SOURCES:
        raise ValueError(f"hparams must be one of {', '.join(HPARAM_SOURCES)}, got {hparams!r}")
    spec, data = get_architecture(arch), get_dataset(dataset)
    settings = dict(spec.train)
    if settings.get("batch_size") == FROM_DATASET:
        settings["batch_size"] = data.batch_size
        if hparams == "paper" and arch == "cnn" and data.paper_cnn_batch is not None:
            settings["batch_size"] = data.paper_cnn_batch
    if settings.get("target_acc") == FROM_DATASET:
        settings["target_acc"] = data.target_acc
    settings.update(spec.train_by_dataset.get(dataset, {}))
    return settings


def model_options(arch: str, dataset: str) -> dict[str, Any]:
    """Builder keywords of ``arch`` for ``dataset`` before any user override."""
    return dict(get_architecture(arch).model_options.get(dataset, {}))


def repair_layer_sets(arch: str) -> list[str]:
    """The layer sets the repair sweeps by default for ``arch``."""
    spec = get_architecture(arch)
    if spec.repair_layer_sets is not None:
        return list(spec.repair_layer_sets)
    return list(spec.linear_layers) + ["hidden", "all"]


def expand_layer_set(arch: str, text: str) -> list[str]:
    """``"fc1+fc4"`` → its layers; ``"hidden"``: every nn.Linear but the head; ``"all"``: every one.
    Raises ValueError naming a layer ``arch`` does not have."""
    spec = get_architecture(arch)
    text = str(text).strip()
    if text == "all":
        return list(spec.linear_layers)
    if text == "hidden":
        return [n for n in spec.linear_layers if n != spec.head]
    names = [part.strip() for part in text.split("+")]
    if not text or any(not n for n in names):
        raise ValueError(f"empty layer name in layer set {text!r}")
    unknown = [n for n in names if n not in spec.linear_layers]
    if unknown:
        raise ValueError(f"layer set {text!r}: {arch} has no nn.Linear layer {', '.join(map(repr, unknown))} "
                         f"(its layers: {', '.join(spec.linear_layers)}; or 'hidden', 'all')")
    return names


# --------------------------------------------------------------------------------------------
# probe families (one checkpoint's activation file -> tidy rows)


@dataclass(frozen=True)
class ProbeFamily:
    """A probe the per-checkpoint probing runs: ``impl`` yields its tidy rows (latentgen.probing.checkpoint).

    ``probes``: the ``probe`` values its rows carry (empty: its own name). ``skip_input``: it
    does not run on the ``input`` layer (the authors' baselines, SPEC §10). ``extra_labels``: it
    is also fit on the label sets of other label files (``corrupted@C``, the 2025 paper's -exp3);
    every family is fit on each of the ``fit_labels`` asked for (:data:`FIT_LABEL_SETS`).
    ``test_only``: it scores the test split only (the authors' baselines). ``shares_fit``: it
    reads the layer's shared MASC / VeLPIC decomposition (these run first on each label set, and
    the decomposition is released before the others run, so that two never coexist).
    ``fit_many``: an ``impl`` that fits the family on many (layer, label set) at once,
    ``fn(views: list[LayerContext]) -> None``, each fit kept in its layer's ``shared`` for ``impl``
    to score; the driver calls it once per group of layers held in memory together.
    """

    name: str
    summary: str
    impl: str
    label: str  # display name in tables and figures
    default: bool = True  # run when no families are asked for
    needs_checkpoint: bool = False  # evaluates the network itself (needs the checkpoint and images)
    probes: tuple[str, ...] = ()
    skip_input: bool = False
    extra_labels: bool = False
    test_only: bool = False
    shares_fit: bool = False
    tables: tuple[str, ...] = ()  # the 2025 paper's tables that show it (latentgen.paper.tables)
    fit_many: str = ""

    @property
    def probe_names(self) -> tuple[str, ...]:
        return self.probes or (self.name,)


# the training labels a probe is fit on: the corrupted labels the model was trained with, or the
# true ones (SPEC §6.7 -exp2); a label file's corrupted labels add ``corrupted@C`` (-exp3)
FIT_LABEL_SETS = ("corrupted", "true")
# MASC's and VeLPIC's subspace variance threshold: the authors' 99 % (SPEC §6)
MASC_VARIANCE = 0.99
DEFAULT_FIT_LABELS = ("corrupted",)
EXTRA_LABEL_PREFIX = "corrupted@"
INPUT_LAYER = "input"  # the flattened image (no baseline runs on it)
LOGISTIC_SEED = 0  # seed of the logistic-regression probe's initial weights and batch order
# MASC sensitivity (SPEC §10): (probe name, variance threshold, fixed component count)
MASC_SENSITIVITY = (("masc_var0.25", 0.25, None), ("masc_var0.5", 0.5, None), ("masc_var0.75", 0.75, None),
                    ("masc_var0.99", 0.99, None), ("masc_1pc", None, 1))

PROBE_FAMILIES: Mapping[str, ProbeFamily] = _frozen({p.name: p for p in [
    ProbeFamily("masc", "MASC: quadratic class-subspace probe (uncentered ± PCA at variance 0.99)",
                "latentgen.probing.families:masc_rows", label="MASC", tables=("table_masc", "table_baselines"), extra_labels=True, shares_fit=True),
    ProbeFamily("velpic", "VeLPIC: linear probe, one signed principal vector per class",
                "latentgen.probing.families:velpic_rows", label="VeLPIC", tables=("table_masc", "table_baselines"), extra_labels=True, shares_fit=True),
    ProbeFamily("transfer", "the network with VeLPIC's class vectors as its head (bias zeroed; "
                "transfer_bias rows keep the trained bias)", "latentgen.probing.families:transfer_rows", label="VeLPIC transfer",
                needs_checkpoint=True, probes=("transfer", "transfer_bias")),
    ProbeFamily("logistic", "logistic regression: nn.Linear(d, K), Adam 1e-3, 20 epochs, batch 128, shuffled, "
                "seeded (the authors' baseline)", "latentgen.probing.families:logistic_rows", label="Logistic", tables=("table_baselines",), default=False,
                fit_many="latentgen.probing.families:fit_logistic_together",
                skip_input=True, test_only=True),
    ProbeFamily("ncm", "nearest class mean, cosine similarity to the raw class means (the authors' baseline)",
                "latentgen.probing.families:ncm_rows", label="NCM", tables=("table_baselines",), default=False, skip_input=True, test_only=True),
    ProbeFamily("knn", "5 nearest neighbours, cosine distance, majority vote (scikit-learn's brute force, the "
                "authors' baseline)", "latentgen.probing.families:knn_rows", label="5-NN", tables=("table_baselines",), default=False, skip_input=True, test_only=True),
    ProbeFamily("lda", "linear discriminant analysis as the authors' scikit-learn (svd solver, within-class "
                "factor 1/(n - K)), from the float64 within-class scatter (the authors' baseline)",
                "latentgen.probing.families:lda_rows", label="LDA", tables=("table_baselines",), default=False, skip_input=True, test_only=True),
    ProbeFamily("qda", "quadratic discriminant analysis as the authors' scikit-learn (<= 1.7, reg_param=0): a "
                "rank-deficient class covariance is a warning; inf/NaN scores as numpy makes them, logged per class",
                "latentgen.probing.families:qda_rows", label="QDA", tables=("table_baselines",), default=False, skip_input=True, test_only=True),
    ProbeFamily("masc_sensitivity", "MASC at variance 0.25, 0.5, 0.75, 0.99 and with one component, from the "
                "one decomposition MASC uses", "latentgen.probing.families:masc_sensitivity_rows", label="MASC sensitivity", tables=("table_sensitivity",), default=False,
                probes=tuple(name for name, _, _ in MASC_SENSITIVITY), shares_fit=True),
]})


# --------------------------------------------------------------------------------------------
# repair methods (latentgen.repair)


@dataclass(frozen=True)
class RepairMethod:
    """A repair: ``impl`` is ``apply(model, layers, rho, inputs) -> per-layer logs`` (edits in place)."""

    name: str
    summary: str
    impl: str
    uses_rho: bool = True  # swept over rho and layer sets; else a reference row
    needs_factors: bool = True
    default: bool = False  # swept when `latentgen repair` is asked for no methods
    workflow: bool = False  # swept by the workflow when its config names no repair methods


REPAIR_METHODS: Mapping[str, RepairMethod] = _frozen({r.name: r for r in [
    RepairMethod("kfac", "K-FAC curvature edit: keep the top pairs by λ_i μ_j up to mass ρ",
                 "latentgen.repair.methods:kfac", default=True, workflow=True),
    RepairMethod("svd", "control: SVD truncation removing the same fraction of components as K-FAC at ρ",
                 "latentgen.repair.methods:svd", default=True, workflow=True),
    RepairMethod("svd_norm", "control: SVD truncation with the same ‖ΔW‖_F as K-FAC at ρ",
                 "latentgen.repair.methods:svd_norm"),
    RepairMethod("random", "control: random removal of as many K-FAC pairs as K-FAC removes at ρ (seeded)",
                 "latentgen.repair.methods:random", default=True, workflow=True),
    RepairMethod("kfac_reestimate", "K-FAC edit layer by layer, later layers' factors re-estimated after each edit",
                 "latentgen.repair.methods:kfac_reestimate"),
    RepairMethod("a_only", "control: input-PCA truncation, keep A's top eigenvectors up to mass ρ of Σμ",
                 "latentgen.repair.methods:a_only"),
    RepairMethod("g_only", "control: output-side truncation, keep G's top eigenvectors up to mass ρ of Σλ",
                 "latentgen.repair.methods:g_only"),
    RepairMethod("velpic", "VeLPIC transfer on the head, bias zeroed (the paper's method)",
                 "latentgen.repair.methods:velpic", uses_rho=False, needs_factors=False),
    RepairMethod("velpic_bias", "VeLPIC transfer on the head, trained bias kept",
                 "latentgen.repair.methods:velpic_bias", uses_rho=False, needs_factors=False),
    RepairMethod("kfac_velpic", "K-FAC edit of the hidden layers, then the VeLPIC transfer on the head",
                 "latentgen.repair.methods:kfac_velpic", workflow=True),
]})

SWEPT_REPAIRS = tuple(n for n, r in REPAIR_METHODS.items() if r.uses_rho)
DEFAULT_REPAIRS = tuple(n for n, r in REPAIR_METHODS.items() if r.default)
# reference rows of a sweep: the unedited model and the rho-free repairs
REPAIR_REFERENCES = ("none", *(n for n, r in REPAIR_METHODS.items() if not r.uses_rho))
DEFAULT_RHOS = (1.0, 0.99, 0.98, 0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.60, 0.50, 0.40, 0.30)
A_PRIORI_RHO = 0.75
# labels in the K-FAC gradient factor: the exact true Fisher, the empirical Fisher (corrupted
# labels), or labels sampled from the model. "true" is the old spelling of "exact".
FISHER_KINDS = ("exact", "empirical", "sampled")
FISHER_ALIASES = _frozen({"true": "exact"})


def fisher_kind(name: str | bool) -> str:
    """The canonical Fisher kind of ``name`` (``"true"`` / YAML ``true`` → ``"exact"``)."""
    text = "true" if name is True else str(name)
    text = FISHER_ALIASES.get(text, text)
    if text not in FISHER_KINDS:
        raise ValueError(f"unknown Fisher kind {name!r}; choose one of {', '.join(FISHER_KINDS)}")
    return text


# --------------------------------------------------------------------------------------------
# seeds and small option sets

LABEL_SEED = 42  # numpy seed of the label corruption (the authors' np.random.seed(42))
TRAIN_SEED_BASE = 41  # run r trains with seed 41 + r (run 1 is the authors' torch.manual_seed(42))
SIGN_MODES = ("all", "class")  # VeLPIC's sign from all training rows (authors' code, D6) or the class's
# HDF5 filters of the (temporary) activation files, the default first. lzf: 0.65 of the size at
# about 160 MB/s a core; gzip: 0.55 at 50 MB/s; none: the full size at disk speed (1.7 GB/s here).
# HDF5 compresses on one thread: for ResNet-18's 23 GB files on a GPU, lzf is the dump's bottleneck.
ACTIVATION_COMPRESSIONS = ("lzf", "gzip", "none")
BATCHNORM_MODES = ("eval", "per_sample")  # BatchNorm at activation time: running stats, or each image alone


def activation_batchnorm(arch: str, override: str | None = None) -> str:
    """The BatchNorm mode of ``arch``'s activation dumps: ``override`` when given (checked), else the
    architecture's own (``Architecture.activation_batchnorm``: ``per_sample`` for ResNet-18, as the
    authors, ``eval`` for the others)."""
    if override is not None:
        if override not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {override!r}")
        return override
    return get_architecture(arch).activation_batchnorm

# --------------------------------------------------------------------------------------------
# devices

DEVICE_CHOICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------------------------
# look-ups and the consistency check


def _get(table: Mapping, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {kind} {name!r}{hint}; known: {', '.join(table)}") from None


def _resolve(table: Mapping, kind: str, name: str):
    """A built-in entry, else an external one (latentgen.config_entries: a configuration's torchvision:,
    timm:, FILE.py: architecture or imagefolder: dataset), else a ValueError naming the closest."""
    if name not in table:
        from latentgen import config_entries as external

        entry = external.lookup(kind, name)
        if entry is not None:
            return entry
        table = {**table, **dict.fromkeys(external.names(kind))}
    return _get(table, kind, name)


def get_dataset(name: str) -> Dataset:
    """The dataset ``name``: built in or external (the one place names are resolved)."""
    return _resolve(DATASETS, "dataset", name)


def get_architecture(name: str) -> Architecture:
    """The architecture ``name``: built in or external (the one place names are resolved)."""
    return _resolve(ARCHITECTURES, "architecture", name)


def find_architecture(name: str) -> Architecture | None:
    """:func:`get_architecture`, or None for an unknown name (figures and tables of other models)."""
    return _find(get_architecture, name)


def find_dataset(name: str) -> Dataset | None:
    return _find(get_dataset, name)


def _find(get, name):
    try:
        return get(name)
    except ValueError:
        return None


def get_probe_family(name: str) -> ProbeFamily:
    return _get(PROBE_FAMILIES, "probe family", name)


def get_repair_method(name: str) -> RepairMethod:
    return _get(REPAIR_METHODS, "repair method", name)


check_registry(DATASETS, ARCHITECTURES, PROBE_FAMILIES, REPAIR_METHODS)
