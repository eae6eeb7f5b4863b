"""Relabel-and-retrain: the 2025 paper's use of MASC to repair a memorized model (SPEC §10; the
authors' ``pytorch_retrain_early.py``).

For one run's final checkpoint, its label file and its dataset:

1. **Split.** The test set is split 80/20 by ``repair.evaluation.split_test_set``
   (``train_test_split(random_state=2345)``): the 20 % *selection* split chooses, the 80 %
   *held-out* split reports.
2. **Layer.** For each candidate layer, MASC (variance 0.99) is fit on the activations of the
   images the model was trained on (its ``train_subset``, if any), with the corrupted labels
   (``subspaces="corrupted"``, the authors' ``angle_results``) or the true ones (``"true"``,
   ``angle_results_exp3``), and scored on the selection split. The layer with the most correct
   selection images wins; ties go to the earlier layer (the authors' ``np.argmax``). Candidates:
   every probe layer, **``input`` included** where the architecture probes it, because the
   authors' retrain script lists ``input, flattern, fc1, fc2, fc3`` for the CNN (``model_files``);
   ``exclude_input=True`` drops it (the convention of the baselines and the paper's tables).
   Activations are taken in ``eval()`` mode, in batches (for ResNet-18 that is not the authors'
   per-image BatchNorm of D9; their retrain script covers only the CNN and AlexNet).
3. **Relabel.** Every training image of the dataset gets MASC's prediction at that layer. The
   labels go to ``OUT/labels.npz`` in ``latentgen corrupt``'s format (``true``: the true labels;
   ``corrupted``: the relabelled ones; seed and degree of the run's label file), so
   ``latentgen train --labels`` reads it; its sha256 is recorded.
4. **Retrain.** Training continues from the final model on the relabelled labels: a fresh
   optimizer and the run's own ``TrainConfig`` (optimizer, lr, momentum, betas, weight decay,
   batch size; the order as the run had it: ``shuffle=False`` by default, D4; with shuffling,
   orders drawn from a generator seeded with the run's seed), on the images the run trained on, for at
   most ``max_epochs`` (30) epochs. **Early stopping**, the authors' rule: epoch e *improves*
   when its selection-split accuracy is strictly above that of every earlier retraining epoch
   (epoch 1 always improves: the model before retraining is not a candidate, as the authors'
   best starts at 0); training stops after the epoch that completes ``patience`` (3) consecutive
   epochs without improvement (stop epoch = best epoch + patience), else after ``max_epochs``.
5. **Report.** Test accuracy on the 80 % (and 20 %) split before retraining and of the **best
   epoch's model** (the first epoch with the highest selection accuracy): the model early stopping
   selects, chosen on the 20 % split only, so the 80 % number is held out. The authors' script
   logs every epoch's 80 % accuracy and keeps the last epoch's weights; the last epoch's numbers
   are reported too (``test_acc_80_last``, ``test_acc_20_last``).

Outputs in OUT: ``layers.csv`` (MASC per candidate layer), ``labels.npz``, ``train_log.csv``
(epoch 0 = the model before retraining), with ``save_model`` ``model.pt`` (the best epoch's
model as a training checkpoint), ``result.json`` (provenance, listing ``result.csv``'s sha256)
and, last and atomically, ``result.csv`` (one tidy row, ``RESULT_COLUMNS``): an output that
exists is complete. Resumable like training: ``OUT/resume.pt`` (model, optimizer, RNG, log,
early-stopping state, the layer choice, the relabelled labels and their digest) is replaced
atomically after every epoch; a rerun continues from it, reuses ``labels.npz`` after checking the
digest of its labels (``training.labels_digest``; a file with other labels is refused, a missing
one — Snakemake deletes a failed job's declared outputs — is rewritten from the state, as is
``layers.csv``) and, on the CPU, ends bitwise identical to an uninterrupted run. A folder of another configuration
(checkpoint bytes, label digest, subspaces, epochs, patience, variance, layers) is refused.

The checkpoint must have been trained on the label file (the digest of its corrupted labels is
checked; an error names both files). Every run of one dataset and degree shares one label file
(seed 42), so a mismatch means a label file of another degree or dataset.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from latentgen import contracts
from latentgen.models import forward
from latentgen._io import config_hash, sha256_file, write_text_atomic
from latentgen.repair.relabel_inputs import (LAYER_COLUMNS, RelabelInputs, candidate_layers, choose_layer,
                                             load_inputs, masc_per_layer)
from latentgen.training.runs import RunFolder, format_csv, kill_point, load_torch, read_json, save_torch_atomic
from latentgen import registry

SUBSPACES = registry.FIT_LABEL_SETS  # which training labels the MASC subspaces are fit on
RESULT_COLUMNS = list(contracts.RELABEL_RESULT_COLUMNS)
LOG_COLUMNS = list(contracts.RELABEL_LOG_COLUMNS)
# selection-split and held-out accuracy of a model after `epoch` retraining epochs (tests substitute it)
Evaluate = Callable[[nn.Module, int], tuple[float, float]]


# --------------------------------------------------------------------------------------------
# early stopping


@dataclass
class EarlyStopping:
    """Patience on a score that should rise: ``update(epoch, score)`` records one epoch and says
    whether to stop after it (``patience`` consecutive epochs not strictly above the best so far;
    the first epoch is always an improvement)."""

    patience: int = 3
    best_epoch: int | None = None
    best_score: float | None = None
    since_best: int = 0

    def update(self, epoch: int, score: float) -> bool:
        if self.best_score is None or score > self.best_score:
            self.best_epoch, self.best_score, self.since_best = int(epoch), float(score), 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


# --------------------------------------------------------------------------------------------
# the run


class _Folder(RunFolder):
    """Kill points (``latentgen.training.runs.KILL_ENV`` = "E:stage"): ``labels`` (epoch 0, after
    labels.npz, before the first resume state), ``log``, ``resume`` (default, after resume.pt),
    ``sidecar`` (final epoch, after result.json)."""

    def __init__(self, out: str | os.PathLike):
        super().__init__(out)
        self.labels = self.root / "labels.npz"
        self.layers = self.root / "layers.csv"
        self.log = self.root / "train_log.csv"
        self.model = self.root / "model.pt"
        self.resume = self.root / "resume.pt"
        self.result = self.root / "result.csv"
        self.sidecar = self.root / "result.json"


def relabel_and_retrain(checkpoint: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike, *,
                        subspaces: str = "corrupted", prepared=None, data_root=None, dataset=None,
                        max_epochs: int = 30, patience: int = 3, variance: float = registry.MASC_VARIANCE,
                        exclude_input: bool = False, save_model: bool = False, device: str = "auto",
                        batch_size: int = 1000, threads: int | None = None, workflow_config: dict | None = None,
                        evaluate: Evaluate | None = None, verbose: bool = True, epoch_lines: bool = True) -> dict:
    """Relabel ``checkpoint``'s training images with MASC and retrain it into ``out`` (see the
    module docstring); resumes from ``out/resume.pt``. Returns the result row (``RESULT_COLUMNS``).

    ``dataset``: an already loaded ``LoadedDataset`` (skips loading). ``batch_size``: rows per
    forward pass for activations and accuracies (no effect on results). ``evaluate(model, epoch)``
    replaces the (selection, held-out) accuracy of each epoch (a test hook). ``verbose``: summary
    lines on stdout; ``epoch_lines``: also one line per epoch.
    """
    from latentgen.devices import blas_threads, resolve_device, set_threads
    from latentgen.data.labels import read_label_file
    from latentgen.probing.subspaces import check_variance
    from latentgen.training.loop import labels_digest, make_optimizer, train_one_epoch

    if subspaces not in SUBSPACES:
        raise ValueError(f"subspaces must be one of {', '.join(SUBSPACES)}, got {subspaces!r}")
    for value, what, low in ((max_epochs, "max epochs", 0), (patience, "patience", 1), (batch_size, "batch size", 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    variance = check_variance(variance)
    set_threads(threads)
    dev = resolve_device(device)
    folder = _Folder(out)
    folder.remove_stale_temporaries()
    say = print if verbose else (lambda *a, **k: None)

    inputs = load_inputs(checkpoint, labels, prepared=prepared, data_root=data_root, dataset=dataset, device=dev)
    model, meta, config, lf, n = inputs.model, inputs.meta, inputs.train_config, inputs.label_file, inputs.n
    layers = candidate_layers(model, exclude_input)
    settings = {"subspaces": subspaces, "max_epochs": int(max_epochs), "patience": int(patience),
                "variance": variance, "layers": layers, "save_model": bool(save_model)}
    run_hash = config_hash({"checkpoint_sha256": sha256_file(checkpoint), "labels_sha256": labels_digest(lf.corrupted),
                            "train_config": asdict(config), "train_images": n, **settings})
    ident = {"model": meta["arch"], "dataset": meta["dataset"], "corruption": float(meta.get("corruption", lf.degree)),
             "run": int(meta.get("run", config.run)), "subspaces": subspaces}

    if folder.result.exists():
        found = (read_json(folder.sidecar).get("config") or {}).get("run_hash") if folder.sidecar.exists() else None
        if found != run_hash:
            raise ValueError(f"{folder.root} already holds a finished relabel-and-retrain of another configuration "
                             f"(hash {found}, this one {run_hash}); use another --out")
        folder.resume.unlink(missing_ok=True)  # left by a kill between result.csv and its removal
        row = read_result(folder.result)
        say(f"{folder.root}: already complete (layer {row['layer']}, best epoch {row['best_epoch']})")
        return row

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(config, model.parameters())
    stopper = EarlyStopping(patience)
    best_state = None
    if folder.resume.exists():
        state = _load_state(folder.resume)
        if state.get("run_hash") != run_hash:
            raise ValueError(f"{folder.resume} was written by another configuration (hash {state.get('run_hash')}, "
                             f"this one {run_hash}); delete it to start over, or use another --out")
        _restore_outputs(folder, state, lf, ident)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["shuffle"])
        stopper = EarlyStopping(**state["early_stopping"])
        best_state = state.get("best_state")
        layer_rows, chosen, log = state["layer_rows"], state["chosen"], list(state["log"])
        stop_reason, epoch = state["stop_reason"], int(state["epoch"])
        say(f"{folder.root}: resuming after epoch {epoch} (layer {layers[chosen]})")
    else:
        with blas_threads(threads):
            layer_rows, chosen = _choose_and_relabel(inputs, folder, ident, layers, variance, dev, batch_size)
        kill_point(0, "labels")
        say(f"{folder.root}: MASC ({subspaces} subspaces) on the 20 % split: "
            + ", ".join(f"{r['layer']} {r['select_acc']:.4f}" for r in layer_rows)
            + f"; relabelling with {layers[chosen]}")
        epoch, stop_reason, log = 0, None, []

    relabelled = read_label_file(folder.labels).corrupted
    relabelled_digest = labels_digest(relabelled)
    labels_file_sha256 = sha256_file(folder.labels)
    x = inputs.train_x[:n].to(dev)
    y = torch.from_numpy(relabelled[:n]).to(dev)
    y_true = torch.from_numpy(lf.true[:n]).to(dev)
    if evaluate is None:
        evaluate = _split_accuracy(inputs, dev, batch_size)

    def save_state():
        write_text_atomic(folder.log, format_csv(LOG_COLUMNS, log))
        kill_point(epoch, "log")
        save_torch_atomic({"run_hash": run_hash, "epoch": epoch, "stop_reason": stop_reason, "log": log,
                     "layer_rows": layer_rows, "chosen": chosen, "relabelled": torch.from_numpy(relabelled),
                     "labels_sha256": relabelled_digest,
                     "model_state": _cpu_state(model), "optimizer_state": optimizer.state_dict(),
                     "rng": {"torch": torch.get_rng_state(), "shuffle": generator.get_state()},
                     "early_stopping": asdict(stopper), "best_state": best_state}, folder.resume)
        kill_point(epoch, "resume")

    if not log:  # epoch 0: the model before retraining
        start = time.perf_counter()
        select_acc, heldout_acc = evaluate(model, 0)
        log.append({"epoch": 0, "loss": None, "train_acc_relabelled": None, "train_acc_true": None,
                    "select_acc": select_acc, "heldout_acc": heldout_acc, "best_epoch": None,
                    "seconds": time.perf_counter() - start})
        if max_epochs == 0:
            stop_reason = "max_epochs"
        save_state()
    while stop_reason is None:
        epoch += 1
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(dev) if config.shuffle else None
        stats = train_one_epoch(model, optimizer, x, y, config.batch_size, y_true=y_true, order=order)
        select_acc, heldout_acc = evaluate(model, epoch)
        if stopper.update(epoch, select_acc):
            stop_reason = "early_stopping"
        elif epoch >= max_epochs:
            stop_reason = "max_epochs"
        if save_model and stopper.best_epoch == epoch:
            best_state = _cpu_state(model)
        log.append({"epoch": epoch, "loss": stats["loss"], "train_acc_relabelled": stats["correct"] / n,
                    "train_acc_true": stats["correct_true"] / n, "select_acc": select_acc,
                    "heldout_acc": heldout_acc, "best_epoch": stopper.best_epoch,
                    "seconds": time.perf_counter() - start})
        if epoch_lines:
            say(f"epoch {epoch}: loss {stats['loss']:.4f}  train acc {stats['correct'] / n:.4f} (relabelled)  "
                f"20 % {select_acc:.4f}  80 % {heldout_acc:.4f}  best epoch {stopper.best_epoch}", flush=True)
        save_state()

    best = stopper.best_epoch if stopper.best_epoch is not None else 0
    row = _result_row(ident, layer_rows[chosen], log, best, stop_reason, relabelled[:n], lf, n, meta)
    outputs = [folder.layers, folder.labels, folder.log]
    if save_model:
        from latentgen.training.checkpoints import save_checkpoint

        model.load_state_dict(best_state if best_state is not None else _cpu_state(model))
        save_checkpoint(folder.model, model, {**meta, "epoch": int(meta["epoch"]) + best,
                                              "labels": str(folder.labels.resolve()),
                                              "labels_sha256": relabelled_digest,
                                              "relabel": {**ident, "checkpoint": str(Path(checkpoint).resolve()),
                                                          "layer": row["layer"], "retrain_epoch": best}})
        outputs.append(folder.model)
    _finish(folder, row, outputs, checkpoint, labels, prepared, settings, run_hash, meta, config, stop_reason,
            labels_file_sha256, n, dev, workflow_config)
    folder.resume.unlink(missing_ok=True)
    say(f"{folder.root}: {stop_reason} after epoch {epoch}, best epoch {best}: 80 % test accuracy "
        f"{row['test_acc_80_before']:.4f} -> {row['test_acc_80_after']:.4f} "
        f"(layer {row['layer']}, {subspaces} subspaces)")
    return read_result(folder.result)


def _choose_and_relabel(inputs: RelabelInputs, folder: _Folder, ident: dict, layers: list[str], variance: float,
                        dev: torch.device, batch_size: int) -> tuple[list[dict], int]:
    """MASC per layer, the layer choice, then layers.csv and labels.npz; returns (layer rows, chosen index)."""
    rows, predictions = masc_per_layer(inputs, ident["subspaces"], layers, variance=variance, device=dev,
                                       batch_size=batch_size)
    chosen = choose_layer(rows)
    for i, row in enumerate(rows):
        row["chosen"] = i == chosen
    _write_layers(folder, ident, rows)
    _write_labels(folder, inputs.label_file, predictions[layers[chosen]], ident)
    return rows, chosen


def _write_layers(folder: _Folder, ident: dict, rows: list[dict]) -> None:
    write_text_atomic(folder.layers, format_csv([*ident, *LAYER_COLUMNS], [{**ident, **r} for r in rows]))


def _write_labels(folder: _Folder, lf, relabelled: np.ndarray, ident: dict) -> None:
    from latentgen.data.labels import write_label_file

    write_label_file(folder.labels, lf.true, relabelled, seed=lf.seed, degree=lf.degree, num_classes=lf.num_classes,
                     strict=lf.strict, dataset=lf.dataset or ident["dataset"])


def _restore_outputs(folder: _Folder, state: dict, lf, ident: dict) -> None:
    """On resume: labels.npz must hold the labels this run chose (the digest of its labels, as
    ``training.labels_digest``; the file's bytes carry a write time). A missing one (Snakemake
    removes a failed job's declared outputs) is rewritten from the resume state, and so is layers.csv."""
    from latentgen.data.labels import read_label_file
    from latentgen.training.loop import labels_digest

    stored = state["relabelled"].numpy()
    if labels_digest(stored) != state["labels_sha256"]:
        raise ValueError(f"{folder.resume} is damaged (its relabelled labels do not match their digest); "
                         "delete it to start over")
    if folder.labels.exists():
        found = read_label_file(folder.labels)
        if labels_digest(found.corrupted) != state["labels_sha256"] or not np.array_equal(found.true, lf.true):
            raise ValueError(f"{folder.labels} is not the relabelled label file this run wrote (its labels differ "
                             "from the ones recorded in resume.pt); delete the folder to start over")
    else:
        _write_labels(folder, lf, stored, ident)
    _write_layers(folder, ident, state["layer_rows"])


def _result_row(ident, layer_row, log, best, stop_reason, relabelled, lf, n, meta) -> dict:
    return {**ident, "layer": layer_row["layer"], "layer_select_acc": layer_row["select_acc"],
            "epochs_trained": log[-1]["epoch"], "stopped_early": stop_reason == "early_stopping", "best_epoch": best,
            "test_acc_80_before": log[0]["heldout_acc"], "test_acc_80_after": log[best]["heldout_acc"],
            "test_acc_20_before": log[0]["select_acc"], "test_acc_20_after": log[best]["select_acc"],
            "relabel_agreement_true": float(np.mean(relabelled == lf.true[:n])),
            "relabel_agreement_corrupted": float(np.mean(relabelled == lf.corrupted[:n])),
            "checkpoint_epoch": int(meta["epoch"]), "layer_heldout_acc": layer_row["heldout_acc"],
            "test_acc_80_last": log[-1]["heldout_acc"], "test_acc_20_last": log[-1]["select_acc"]}


_INT_COLUMNS = {"run", "epochs_trained", "best_epoch", "checkpoint_epoch"}
_TEXT_COLUMNS = {"model", "dataset", "subspaces", "layer"}


def read_result(path: str | os.PathLike) -> dict:
    """The row of a ``result.csv``, typed (ints, floats, ``stopped_early`` as bool)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != 1 or set(rows[0]) != set(RESULT_COLUMNS):
        raise ValueError(f"{path} is not a relabel result (expected one row with columns {', '.join(RESULT_COLUMNS)})")
    row = rows[0]
    return {k: (row[k] if k in _TEXT_COLUMNS else row[k] == "True" if k == "stopped_early"
                else int(row[k]) if k in _INT_COLUMNS else float(row[k])) for k in RESULT_COLUMNS}


def _finish(folder, row, outputs, checkpoint, labels, prepared, settings, run_hash, meta, config, stop_reason,
            labels_file_sha256, n, dev, workflow_config) -> None:
    """result.json (with result.csv's sha256), then result.csv: the CSV appears last and whole."""
    import hashlib

    from latentgen.provenance import build_record, write_sidecar

    text = format_csv(RESULT_COLUMNS, [row])
    config_record = {**settings, "run_hash": run_hash, "stop_reason": stop_reason,
                     "relabelled_labels_file_sha256": labels_file_sha256, "train_images": n, "device": str(dev),
                     "checkpoint_meta": {k: meta.get(k) for k in ("arch", "dataset", "corruption", "run", "epoch",
                                                                  "config_hash", "labels_sha256")},
                     "train_config": asdict(config), "workflow": workflow_config}
    inputs = [p for p in (checkpoint, labels, prepared) if p is not None]
    record = build_record(inputs=inputs, outputs=outputs, config=config_record,
                          seeds={"test_split": 2345, "train": config.seed})
    record["outputs"][str(folder.result)] = hashlib.sha256(text.encode()).hexdigest()
    write_sidecar(folder.result, record)
    kill_point(int(row["epochs_trained"]), "sidecar")
    write_text_atomic(folder.result, text)


def _split_accuracy(inputs: RelabelInputs, dev: torch.device, batch_size: int) -> Evaluate:
    select_x, heldout_x = inputs.test_x[inputs.select_idx], inputs.test_x[inputs.heldout_idx]
    select_y = inputs.test_y[inputs.select_idx].to(dev)
    heldout_y = inputs.test_y[inputs.heldout_idx].to(dev)

    def evaluate(model: nn.Module, epoch: int) -> tuple[float, float]:
        return (forward.accuracy(model, select_x, select_y, batch_size, device=dev),
                forward.accuracy(model, heldout_x, heldout_y, batch_size, device=dev))

    return evaluate


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _load_state(path: Path) -> dict:
    state = load_torch(path, "resume state", fix="delete it to start over")
    if not isinstance(state, dict):
        raise ValueError(f"resume state {path} is not a relabel resume state; delete it to start over")
    return state

