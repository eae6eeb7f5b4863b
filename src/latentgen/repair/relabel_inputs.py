"""What relabel-and-retrain reads and which layer relabels (``latentgen.repair.relabel``, steps 1–3):
a checkpoint with the data and labels it was trained on, checked to belong together; MASC per
candidate layer on the selection split; the winning layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentgen import contracts
from latentgen.models import forward
from latentgen import registry

LAYER_COLUMNS = list(contracts.RELABEL_LAYER_COLUMNS)


@dataclass
class RelabelInputs:
    """A checkpoint with the data and labels it was trained on, checked to belong together."""

    model: nn.Module
    meta: dict
    train_config: object  # latentgen.training.hyperparameters.TrainConfig of the run
    label_file: object  # latentgen.data.labels.LabelFile
    train_x: torch.Tensor  # every training image of the dataset (normalised)
    n: int  # the model trained on the first n
    test_x: torch.Tensor
    test_y: torch.Tensor
    select_idx: np.ndarray
    heldout_idx: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def load_inputs(checkpoint, labels, *, prepared=None, data_root=None, dataset=None,
                device: str | torch.device = "cpu") -> RelabelInputs:
    """Model, data and labels of ``checkpoint``; ValueError naming both files when the label file
    is not the one the checkpoint was trained on."""
    from latentgen.data.datasets import load_dataset
    from latentgen.data.labels import read_label_file
    from latentgen.repair.evaluation import split_test_set
    from latentgen.training.loop import labels_digest
    from latentgen.training.hyperparameters import TrainConfig
    from latentgen.training.checkpoints import load_checkpoint

    for path, what in ((checkpoint, "checkpoint"), (labels, "label file"), (prepared, "prepared dataset")):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
    model, meta = load_checkpoint(checkpoint, device=device)
    if not isinstance(meta.get("train_config"), dict):
        raise ValueError(f"checkpoint {checkpoint} records no training configuration (not from `latentgen train`)")
    lf = read_label_file(labels)
    name = meta["dataset"]
    if lf.dataset and lf.dataset != name:
        raise ValueError(f"label file {labels} is for dataset {lf.dataset!r}, checkpoint {checkpoint} for {name!r}")
    if lf.num_classes != int(meta["num_classes"]):
        raise ValueError(f"label file {labels} has {lf.num_classes} classes, checkpoint {checkpoint} "
                         f"{meta['num_classes']}")
    if meta.get("labels_sha256") and labels_digest(lf.corrupted) != meta["labels_sha256"]:
        raise ValueError(f"label file {labels} is not the one checkpoint {checkpoint} was trained on "
                         f"(its corrupted labels differ: corruption {lf.degree} in the file, "
                         f"{meta.get('corruption')} in the checkpoint; a label file of another run or degree?)")
    if meta.get("corruption") is not None and abs(float(meta["corruption"]) - lf.degree) > 1e-9:
        raise ValueError(f"label file {labels} has corruption {lf.degree}, checkpoint {checkpoint} "
                         f"{meta['corruption']}")
    data = dataset if dataset is not None else load_dataset(name, data_root=data_root, prepared=prepared)
    if data.name != name:
        raise ValueError(f"dataset {data.name!r} given for checkpoint {checkpoint} of {name!r}")
    if len(lf.true) != len(data.train_y) or not np.array_equal(lf.true, data.train_y.numpy()):
        raise ValueError(f"label file {labels} does not match the {name} training labels "
                         f"({len(lf.true)} labels in the file, {len(data.train_y)} in the data)")
    tc = meta["train_config"]
    config = TrainConfig(**{**tc, "betas": tuple(tc.get("betas", (0.9, 0.999)))}).resolved()
    n = int(meta.get("train_subset") or len(data.train_y))
    select_idx, heldout_idx = split_test_set(len(data.test_y))
    return RelabelInputs(model, meta, config, lf, data.train_x, n, data.test_x, data.test_y, select_idx, heldout_idx)


# --------------------------------------------------------------------------------------------
# layer choice and relabelling


def candidate_layers(model: nn.Module, exclude_input: bool = False) -> list[str]:
    """The probe layers MASC may relabel from, in forward order."""
    layers = [name for name in model.probe_layers if not (exclude_input and name == "input")]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no probe layer left to relabel from")
    return layers


def layer_activations(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 1000) -> np.ndarray:
    """One probe layer's activations of every row of ``x`` (eval mode), float32 N×d."""
    with forward.eval_mode(model):
        chunks = [acts[layer].cpu().numpy() for _, acts in forward.iter_activations(model, x, [layer], batch_size)]
    return np.concatenate(chunks)[:len(x)]


def masc_per_layer(inputs: RelabelInputs, subspaces: str, layers: list[str], *, variance: float = registry.MASC_VARIANCE,
                   device="auto", batch_size: int = 1000) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit MASC per layer on the trained images with the ``subspaces`` labels; returns the
    layer table (selection and held-out accuracy, agreement of the relabelled training labels with
    the true and corrupted ones) and each layer's predictions for every training image."""
    from latentgen.probing.masc_velpic import MASC

    lf, n = inputs.label_file, inputs.n
    fit_labels = (lf.corrupted if subspaces == "corrupted" else lf.true)[:n]
    test_y = inputs.test_y.numpy()
    rows, predictions = [], {}
    for layer in layers:
        train_acts = layer_activations(inputs.model, inputs.train_x, layer, batch_size)
        masc = MASC(variance=variance, device=device).fit(train_acts[:n], fit_labels,
                                                          classes=np.arange(inputs.num_classes))
        predicted = np.asarray(masc.predict(train_acts), dtype=np.int64)
        del train_acts
        test_pred = masc.predict(layer_activations(inputs.model, inputs.test_x, layer, batch_size))
        correct = test_pred == test_y
        predictions[layer] = predicted
        rows.append({"layer": layer, "select_correct": int(correct[inputs.select_idx].sum()),
                     "select_acc": float(correct[inputs.select_idx].mean()),
                     "heldout_acc": float(correct[inputs.heldout_idx].mean()),
                     "agreement_true": float(np.mean(predicted[:n] == lf.true[:n])),
                     "agreement_corrupted": float(np.mean(predicted[:n] == lf.corrupted[:n])),
                     "mean_components": float(np.mean(masc.n_components_))})
    return rows, predictions


def choose_layer(rows: list[dict]) -> int:
    """Index of the row with the most correct selection images; the first on ties."""
    return int(np.argmax([row["select_correct"] for row in rows]))
