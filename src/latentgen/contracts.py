"""The columns of every tidy file latentgen writes, written once: the writers and the readers import
them from here (docs/architecture.md, "Files", says what each file is).

Imports nothing of latentgen but the registry's names: every stage may read it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

# the splits a probe is scored on, in row order: the test set (true labels), the training set
# against the corrupted labels and against the true labels
SPLITS = ("test", "train_corrupted", "train_true")
TEST_ONLY = SPLITS[:1]  # the splits of a family that scores the test set only (the baselines)


@dataclass(frozen=True)
class ProbeRow:
    """One row of a probe table: a probe's accuracy on one split of one layer of one checkpoint,
    fit on one label set (``fit_labels``: ``corrupted``, ``true`` or ``corrupted@C``)."""

    model: str
    dataset: str
    corruption: float
    run: int
    epoch: int
    layer: str
    probe: str
    fit_labels: str
    split: str
    accuracy: float

    def values(self) -> tuple:
        return astuple(self)


# probe tables (latentgen probe / probe-run / probe-model)
PROBE_COLUMNS = tuple(f.name for f in fields(ProbeRow))
# metrics tables (latentgen metrics; the TMLR figures read them): probe rows without the label set,
# and the model's own accuracy as probe "model"
METRICS_COLUMNS = tuple(c for c in PROBE_COLUMNS if c != "fit_labels")
# a training run's train_log.csv (epoch 0: the initial model)
TRAIN_LOG_COLUMNS = ("epoch", "loss", "train_acc_corrupted", "train_acc_true", "test_acc", "seconds")
# relabel-and-retrain: result.csv (one row), train_log.csv, layers.csv
RELABEL_RESULT_COLUMNS = (
    "model", "dataset", "corruption", "run", "subspaces", "layer", "layer_select_acc", "epochs_trained",
    "stopped_early", "best_epoch", "test_acc_80_before", "test_acc_80_after", "test_acc_20_before",
    "test_acc_20_after", "relabel_agreement_true", "relabel_agreement_corrupted",
    # beyond the paper's table: where the row came from, and the authors' last-epoch numbers
    "checkpoint_epoch", "layer_heldout_acc", "test_acc_80_last", "test_acc_20_last")
RELABEL_PROVENANCE_COLUMNS = ("checkpoint_epoch", "layer_heldout_acc")  # not read by the tables
RELABEL_LOG_COLUMNS = ("epoch", "loss", "train_acc_relabelled", "train_acc_true", "select_acc", "heldout_acc",
                       "best_epoch", "seconds")
RELABEL_LAYER_COLUMNS = ("layer", "select_acc", "heldout_acc", "agreement_true", "agreement_corrupted",
                         "mean_components", "chosen")
