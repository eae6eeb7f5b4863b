"""A configuration's external models: ``arch: torchvision:NAME | timm:NAME | FILE.py:factory`` and
``dataset: imagefolder:PATH`` resolved into registry entries, before any job runs.

:func:`resolve_external` (called by ``latentgen.workflow.config.check_config``) registers, per model entry
that names one,

- an **architecture** named after the model entry (its runs are filed under ``runs/NAME/...``):
  the network is built once here, on torch's ``meta`` device (no weights), so that ``layers:``
  (required: module names, ``NAME:input``, ``input``), ``head:`` (default: the last
  ``nn.Linear``) and the ``nn.Linear`` layers the curvature repair may edit are checked and
  known before any job; training defaults :data:`TRAIN_DEFAULTS` (``train_args`` and
  ``max_epochs`` override them as for any model). torch is imported only for a configuration
  with an external architecture;
- a **dataset** for each image folder (named after the folder; ``image_size`` default 32,
  ``normalize: none | imagenet``), its classes and images counted from the file names.

A model with ``labels: FILE`` (``.npy``, or ``.csv``: a ``label`` column or bare numbers, one
label per training image in ImageFolder's order) trains on exactly those labels: the
configuration's degrees do not apply to it; its runs are filed under one degree, the measured
fraction of its labels that differ from the folder's (rounded to 4 decimals), as
``models.NAME.corruptions``. Every error is a one-line ``ConfigError`` naming the key.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from latentgen import config_entries as external, registry
from latentgen.workflow.config import ConfigError, closest, corruption_tag

# SGD with momentum as the built-in ResNet-18, a 10x larger step (random init, small data), batch 32;
# trained until 99 % running accuracy on its (noisy) labels or max_epochs
TRAIN_DEFAULTS = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "batch_size": 32, "target_acc": 0.99}
IMAGE_SIZE = 32
NORMALIZE = {"none": ((0.0,) * 3, (1.0,) * 3), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
ARCH_KEYS = ("layers", "head")  # keys only an external architecture takes
FOLDER_KEYS = ("image_size", "normalize", "labels")  # keys only an image folder takes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "folder"


def _folder_dataset(model: dict, prefix: str, known: dict) -> registry.Dataset:
    from latentgen.data.imagefolder import folder_listing

    root = Path(model["dataset"][len(external.IMAGEFOLDER):]).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{prefix}.dataset", f"folder {str(root)!r} does not exist")
    root = root.resolve()
    try:
        classes, samples = folder_listing(root)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{prefix}.dataset", str(exc)) from None
    size = int(model.get("image_size") or IMAGE_SIZE)
    mean, std = NORMALIZE[model.get("normalize") or "none"]
    source = f"{external.IMAGEFOLDER}{root}"
    key = (source, size, mean)
    if key in known:
        return known[key]
    name = _slug(root.name)
    taken = {d.name for d in known.values()} | set(registry.DATASETS)
    if name in taken:
        name = f"{name}_{size}px" if f"{name}_{size}px" not in taken else f"{name}_{len(known) + 1}"
    entry = registry.Dataset(name, root.name, len(classes), 3, size, mean, std, 255.0, len(samples["train"]),
                             len(samples["test"]), files=source, needs_root=False, source=source)
    known[key] = entry
    return entry


def _meta_model(source: str, num_classes: int, prefix: str):
    import torch

    from latentgen.models.external import build_model

    try:
        with torch.device("meta"):
            return build_model(source, num_classes)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as exc:
        raise ConfigError(f"{prefix}.arch", " ".join(str(exc).split())) from None


def _architecture(name: str, model: dict, prefix: str, data: registry.Dataset) -> registry.Architecture:
    from torch import nn

    from latentgen.models.external import check_layer_names, find_head

    source = model["arch"]
    kind, _, factory = source.partition(":")
    if kind.endswith(".py"):
        path = Path(kind).expanduser()
        if not path.is_file():
            raise ConfigError(f"{prefix}.arch", f"model file {kind!r} does not exist")
        source = f"{path.resolve()}:{factory}"
    if not model.get("layers"):
        raise ConfigError(f"{prefix}.layers", f"an external architecture ({model['arch']}) needs `layers:`, the "
                                              "module names to probe (e.g. [layer3, layer4, avgpool])")
    if name in registry.ARCHITECTURES:
        raise ConfigError(prefix, f"an external architecture is named after its model entry; {name!r} is a built-in "
                                  "architecture's name, rename the entry")
    net = _meta_model(source, data.num_classes, prefix)
    layers = [str(n) for n in model["layers"]]
    try:
        check_layer_names(net, layers)
    except ValueError as exc:
        raise ConfigError(f"{prefix}.layers", str(exc).removeprefix("layers: ")) from None
    try:
        head = find_head(net, model.get("head"))
    except ValueError as exc:
        raise ConfigError(f"{prefix}.head", str(exc).removeprefix("head: ")) from None
    linears = tuple(n for n, m in net.named_modules() if isinstance(m, nn.Linear))
    last_hidden = f"{head}:input"
    sets = (*linears, *(("hidden", "all") if len(linears) > 1 else ()))
    return registry.Architecture(
        name, model["arch"], external.BUILDER, (data.name,), tuple(dict.fromkeys([*layers, last_hidden])), head,
        last_hidden, linears, dict(TRAIN_DEFAULTS),
        model_options={data.name: {"source": source, "layers": layers, "head": head}},
        repair_layer_sets=sets, description=f"{model['arch']} (models.{name})")


def read_label_file(path: Path, n: int, num_classes: int, key: str) -> list[int]:
    """The labels of a ``labels:`` file (module docstring), checked: ``n`` integers in 0..K-1."""
    if not path.is_file():
        raise ConfigError(key, f"label file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        import numpy as np

        values = np.load(path, allow_pickle=False)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ConfigError(key, f"{path}: expected one integer label per training image, got {values.dtype} "
                                   f"{values.shape}")
        labels = [int(v) for v in values]
    elif path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r]
        if rows and "path" in rows[0]:
            raise ConfigError(key, f"{path}: path,label rows are for `latentgen probe-model`; the workflow reads "
                                   "labels in ImageFolder's order (a label column)")
        column = rows[0].index("label") if rows and "label" in rows[0] else None
        try:
            labels = [int(r[column or 0]) for r in rows[column is not None:]]
        except (ValueError, IndexError):
            raise ConfigError(key, f"{path}: expected a 'label' column of integers (or bare integers)") from None
    else:
        raise ConfigError(key, f"{path}: expected a .npy or .csv label file")
    if len(labels) != n:
        raise ConfigError(key, f"{path} holds {len(labels)} labels for {n} training images")
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ConfigError(key, f"{path}: label {bad[0]} is outside the classes 0..{num_classes - 1}")
    return labels


def _label_degree(model: dict, prefix: str, data: registry.Dataset) -> tuple[str, str]:
    from latentgen.data.imagefolder import folder_listing

    path = Path(model["labels"]).expanduser().resolve()
    labels = read_label_file(path, data.train_size, data.num_classes, f"{prefix}.labels")
    _, samples = folder_listing(data.source[len(external.IMAGEFOLDER):])
    differ = sum(int(a != b) for a, (_, b) in zip(labels, samples["train"]))
    return str(path), corruption_tag(round(differ / len(labels), 4))


def resolve_external(cfg: dict) -> tuple[dict, list]:
    """``(models, entries)``: the models of ``cfg`` with external names replaced by their registry
    names (``arch``/``dataset``; the configured texts kept as ``arch_source``/``dataset_source``),
    and the registry entries made (also :func:`latentgen.config_entries.register`-ed)."""
    models, entries, folders = {}, [], {}
    label_files: dict[tuple[str, str], tuple[str, str]] = {}
    for name, model in cfg["models"].items():
        prefix, model = f"models.{name}", dict(model)
        folder, ext_arch = external.is_external_dataset(model["dataset"]), external.is_external_arch(model["arch"])
        for keys, ok, what in ((ARCH_KEYS, ext_arch, "an external architecture (torchvision:, timm:, FILE.py:)"),
                               (FOLDER_KEYS, folder, "an imagefolder: dataset")):
            extra = [k for k in keys if model.get(k) is not None and not ok]
            if extra:
                raise ConfigError(f"{prefix}.{extra[0]}", f"only for {what}")
        if not folder and not ext_arch:
            models[name] = model
            continue
        data = registry.find_dataset(model["dataset"])
        if folder:
            data = _folder_dataset(model, prefix, folders)
            model["dataset_source"] = model["dataset"]
        elif data is None:
            raise ConfigError(f"{prefix}.dataset", f"unknown dataset {model['dataset']!r}"
                                                   f"{closest(model['dataset'], registry.DATASETS)}; known: "
                                                   f"{', '.join(registry.DATASETS)}, or imagefolder:PATH")
        if ext_arch:
            arch = _architecture(name, model, prefix, data)
            entries.append(arch)
            model["arch_source"], model["arch"] = model["arch"], arch.name
        elif data.name not in registry.get_architecture(model["arch"]).datasets:
            raise ConfigError(f"{prefix}.dataset", f"built-in architecture {model['arch']!r} does not take image "
                                                   "folders; name an external one (torchvision:NAME, timm:NAME)")
        model["dataset"] = data.name
        if model.get("labels") is not None:
            path, tag = _label_degree(model, prefix, data)
            if label_files.setdefault((data.name, tag), (path, name))[0] != path:
                other = label_files[data.name, tag][1]
                raise ConfigError(f"{prefix}.labels", f"models.{other} files other labels of the same folder under the "
                                                      f"same degree {tag}; give each its own folder")
            model["labels"], model["corruptions"] = path, [tag]
        models[name] = model
    entries += list(dict.fromkeys(folders.values()))
    for entry in entries:
        external.register(entry)
    return models, entries
