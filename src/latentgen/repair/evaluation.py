"""Scoring a repaired model: test accuracy on a fixed split of the test set, memorization left and
recovery on the training set, and the activity of hidden units (dead / revived ReLU units).

The clean (true) labels are used here only, for scoring; a repair sees the corrupted ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from latentgen.models.forward import FeatureBatches, predict, predict_and_max_outputs

TEST_SPLIT_SEED = 2345  # the 2025 paper's train_test_split(random_state=2345) (SPEC §10)
TEST_SELECT_FRACTION = 0.2

METRICS = ("test_acc", "test_acc_select", "test_acc_heldout", "train_acc_corrupted", "train_acc_true",
           "changed_acc_corrupted", "changed_acc_true", "unchanged_acc")


def split_test_set(num_test: int, seed: int = TEST_SPLIT_SEED,
                   select_fraction: float = TEST_SELECT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split of the test set: (select 20 %, held-out 80 %) row indices, each sorted.

    As the 2025 paper: ``train_test_split(range(n), test_size=0.2, random_state=2345)``.
    """
    from sklearn.model_selection import train_test_split

    heldout, select = train_test_split(np.arange(num_test), test_size=select_fraction, random_state=seed)
    return np.sort(select), np.sort(heldout)


@dataclass
class RepairData:
    """Training inputs with true and corrupted labels, the test set, and the fixed test split."""

    train_x: torch.Tensor
    train_true: torch.Tensor
    train_corrupted: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    select_idx: np.ndarray = None
    heldout_idx: np.ndarray = None

    def __post_init__(self):
        self.train_true = torch.as_tensor(self.train_true, dtype=torch.long)
        self.train_corrupted = torch.as_tensor(self.train_corrupted, dtype=torch.long)
        self.test_y = torch.as_tensor(self.test_y, dtype=torch.long)
        n = len(self.train_x)
        if self.train_true.shape != (n,) or self.train_corrupted.shape != (n,):
            raise ValueError(f"label counts ({len(self.train_true)} true, {len(self.train_corrupted)} corrupted) "
                             f"do not match the {n} training inputs")
        if self.test_y.shape != (len(self.test_x),):
            raise ValueError(f"{len(self.test_y)} test labels for {len(self.test_x)} test inputs")
        if self.select_idx is None or self.heldout_idx is None:
            self.select_idx, self.heldout_idx = split_test_set(len(self.test_x))

    @property
    def changed(self) -> torch.Tensor:
        """Training examples whose label differs from the original (not the corruption draw mask)."""
        return self.train_corrupted != self.train_true


def unit_max_preactivation(model: nn.Module, inputs: torch.Tensor, layers: list[str],
                           batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per layer, the largest output (pre-ReLU) of each unit over ``inputs`` (eval mode)."""
    return predict_and_max_outputs(model, inputs, batch_size, watch=layers)[1]


def dead_unit_counts(before: torch.Tensor, after: torch.Tensor) -> dict:
    """A unit is dead when its pre-activation is ≤ 0 on every input (its ReLU output is always 0)."""
    dead_before, dead_after = before <= 0, after <= 0
    return {"dead_before": int(dead_before.sum()), "dead_after": int(dead_after.sum()),
            "revived": int((dead_before & ~dead_after).sum()), "killed": int((~dead_before & dead_after).sum())}


def _acc(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred == target).double().mean()) if len(target) else float("nan")


def evaluate_repair(model: nn.Module, data: RepairData, batch_size: int = 1024, watch: Iterable[str] = (),
                    features: tuple[FeatureBatches | None, FeatureBatches | None] = (None, None),
                    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Accuracy fractions of ``model`` (see ``METRICS``), and the unit activity of ``watch`` layers
    on the training inputs (``forward.predict_and_max_outputs``).

    ``changed_acc_corrupted``: memorization left (agreement with the corrupted label on examples
    whose label was changed); ``changed_acc_true``: recovery of the true label there;
    ``unchanged_acc``: accuracy on the examples whose label is correct. ``features``: the
    training and test inputs' ``FeatureBatches`` (where given, only the model's head runs).
    """
    train_features, test_features = features
    train_pred, activity = predict_and_max_outputs(model, data.train_x, batch_size, watch, features=train_features)
    test_pred = predict(model, data.test_x, batch_size, features=test_features)
    changed = data.changed
    return {
        "test_acc": _acc(test_pred, data.test_y),
        "test_acc_select": _acc(test_pred[data.select_idx], data.test_y[data.select_idx]),
        "test_acc_heldout": _acc(test_pred[data.heldout_idx], data.test_y[data.heldout_idx]),
        "train_acc_corrupted": _acc(train_pred, data.train_corrupted),
        "train_acc_true": _acc(train_pred, data.train_true),
        "changed_acc_corrupted": _acc(train_pred[changed], data.train_corrupted[changed]),
        "changed_acc_true": _acc(train_pred[changed], data.train_true[changed]),
        "unchanged_acc": _acc(train_pred[~changed], data.train_true[~changed]),
    }, activity
