"""Training on corrupted labels, resumable, with checkpoints on the papers' grid (SPEC §4, §5).

Defaults are the authors' code (``hparams="code"``); ``hparams="paper"`` swaps the CNN batch
sizes to the paper's text (D2: 32 for MNIST/Fashion-MNIST, 128 for CIFAR-10). Every field of
``TrainConfig`` can be overridden.

- Loss ``CrossEntropyLoss``; ``zero_grad → backward → step`` per mini-batch; the training set is
  iterated in order (``shuffle=False``, D4) by index slices over preloaded, already normalised
  tensors (no per-item transforms). ``shuffle=True`` draws each epoch's order from a generator
  seeded with the run's seed.
- After each epoch: running accuracy over the epoch's mini-batches against the corrupted labels
  (the stop criterion) and against the true labels, and test accuracy in ``eval()`` mode.
- Stop rule (D7): running train accuracy on corrupted labels ``>= target_acc``; the MLP's target
  is 1.0, i.e. it stops only at exactly 100 %; at most ``max_epochs`` (500) epochs.
- Seeds: run r trains with ``seed = 41 + r`` (run 1 is the authors' ``torch.manual_seed(42)``);
  the initial weights come from ``init_seed``, which defaults to that seed, except for the CNN,
  whose class reseeds with 0 so every CNN run starts from the same weights (D5).
- Checkpoints ``checkpoints/epoch{E}.pt`` at epochs 0, 1, 2, 4, …, 20, then every 5 (every 10 for
  AlexNet on Tiny ImageNet) and the final epoch; ``train_log.csv`` per epoch (epoch 0 = the
  initial model); ``manifest.json`` written last.
- Resumable: ``resume.pt`` (model, optimizer, RNG states, log so far) is replaced atomically after
  every epoch. Rerunning the same command continues from it and, on the CPU, ends bitwise
  identical to an uninterrupted run. A resume state, manifest or checkpoint written under another
  configuration (config hash over the resolved ``TrainConfig`` and the corrupted labels) is refused.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import time
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentgen import contracts
from latentgen import __version__
from latentgen.models import forward
from latentgen._io import config_hash, package_versions, write_json_atomic, write_text_atomic
from latentgen.models.architectures import build_model
from latentgen.training.placement import place_images
from latentgen.training.checkpoints import read_checkpoint, save_checkpoint
from latentgen.training.graph_step import GraphedStep, use_graph
from latentgen.training.hyperparameters import TrainConfig, config_grid
from latentgen.training.runs import RunFolder, load_torch, format_csv, kill_point, read_json, save_torch_atomic
from latentgen.registry import on_grid

LOG_COLUMNS = list(contracts.TRAIN_LOG_COLUMNS)
# kill points (latentgen.training.runs.KILL_ENV = "E:stage"): "checkpoint" after the checkpoint is
# written, "log" after the log, "resume" (default) after resume.pt


# --------------------------------------------------------------------------------------------
# the loop


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int, y_true: torch.Tensor | None = None, order: torch.Tensor | None = None,
                    max_samples: int | None = None, graphed: "GraphedStep | None" = None) -> dict:
    """One pass over ``x`` in mini-batches (index slices, or ``order`` when shuffling).

    Returns the mean loss and the running accuracies (weights changing) against ``y`` and
    ``y_true``, counted on the device and read once at the end. ``graphed``: full batches replay
    that CUDA graph of the same step (``training.graph_step``), into its sums.
    """
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    n = len(x) if max_samples is None else min(len(x), int(max_samples))
    if graphed is not None:
        graphed.reset_sums()
        loss_sum, correct, correct_true = graphed.loss_sum, graphed.correct, graphed.correct_true
    else:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        correct_true = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if order is None:
            xb, yb = x[start:stop], y[start:stop]
            tb = None if y_true is None else y_true[start:stop]
        else:
            idx = order[start:stop]
            xb, yb = x[idx], y[idx]
            tb = None if y_true is None else y_true[idx]
        if graphed is not None and stop - start == batch_size and graphed.takes(xb):
            graphed(xb, yb, tb)
            continue
        optimizer.zero_grad()
        output = model(xb)
        loss = loss_fn(output, yb)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            pred = output.argmax(1)
            loss_sum += loss.detach().double() * (stop - start)
            correct += (pred == yb).sum()
            if tb is not None:
                correct_true += (pred == tb).sum()
    return {"samples": n, "loss": loss_sum.item() / max(n, 1), "correct": int(correct.item()),
            "correct_true": int(correct_true.item())}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy in ``eval()`` mode (restoring the previous mode), counted on ``y``'s device."""
    return forward.accuracy(model, x, y, batch_size, device=y.device)


def target_reached(correct: int, total: int, target: float) -> bool:
    """``correct / total >= target`` in exact arithmetic (so target 1.0 means every example)."""
    return total > 0 and Fraction(correct, total) >= Fraction(repr(float(target)))


# --------------------------------------------------------------------------------------------
# labels


def labels_digest(corrupted: np.ndarray) -> str:
    """sha256 of the corrupted training labels as little-endian int64 (file-format independent)."""
    return hashlib.sha256(np.ascontiguousarray(corrupted, dtype="<i8").tobytes()).hexdigest()


def resolve_labels(config: TrainConfig, true_labels: np.ndarray, labels_file: str | os.PathLike | None = None):
    """The corrupted training labels: from a label file (checked against the data and the
    config), or corrupted on the fly with ``config.label_seed``. Returns (labels, source)."""
    from latentgen.data.datasets import get_spec
    from latentgen.data.labels import corrupt_labels, read_label_file

    spec = get_spec(config.dataset)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if labels_file is None:
        corrupted = corrupt_labels(true_labels, config.corruption, spec.num_classes, seed=config.label_seed,
                                   strict=spec.strict_corruption_mask)
        return corrupted, "generated"
    lf = read_label_file(labels_file)
    if lf.num_classes != spec.num_classes:
        raise ValueError(f"label file {labels_file} has {lf.num_classes} classes, {config.dataset} has {spec.num_classes}")
    if lf.dataset and lf.dataset != config.dataset:
        raise ValueError(f"label file {labels_file} is for dataset {lf.dataset!r}, not {config.dataset!r}")
    if abs(lf.degree - float(config.corruption)) > 1e-9:
        raise ValueError(f"label file {labels_file} has corruption {lf.degree}, but --corruption is {config.corruption}")
    if lf.true.shape != true_labels.shape or not np.array_equal(lf.true, true_labels):
        raise ValueError(f"label file {labels_file} does not match the {config.dataset} training labels "
                         f"({len(lf.true)} labels in the file, {len(true_labels)} in the data)")
    return lf.corrupted, str(Path(labels_file).resolve())


# --------------------------------------------------------------------------------------------
# the run


class _RunFolder(RunFolder):
    subfolders = ("checkpoints",)

    def __init__(self, out_dir: str | os.PathLike):
        super().__init__(out_dir)
        self.checkpoints = self.root / "checkpoints"
        self.log = self.root / "train_log.csv"
        self.manifest = self.root / "manifest.json"
        self.resume = self.root / "resume.pt"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch{epoch}.pt"

def read_train_log(path: str | os.PathLike) -> list[dict]:
    """Rows of ``train_log.csv`` with numbers parsed (empty cells → None)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            parsed = {}
            for key in LOG_COLUMNS:
                value = row.get(key, "")
                parsed[key] = None if value in ("", None) else (int(value) if key == "epoch" else float(value))
            rows.append(parsed)
    return rows


def _rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "shuffle": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(config: TrainConfig, out_dir: str | os.PathLike, *, data_root=None, prepared=None, labels=None,
          device: str | torch.device = "auto", eval_batch_size: int = 1000, dataset=None,
          verbose: bool = True, epoch_lines: bool = True, progress: bool | None = None,
          cuda_graph: bool | None = None) -> dict:
    """Train ``config`` into ``out_dir`` (resuming from ``out_dir/resume.pt`` when present).

    ``labels``: a label file from ``latentgen corrupt``; without it the labels are corrupted on
    the fly with ``config.label_seed``. ``dataset``: an already loaded ``LoadedDataset`` (skips
    loading). ``verbose``: summary lines on stdout; ``epoch_lines``: also one line per epoch (when
    no progress bar is shown; ``progress=None`` shows one only on a terminal). ``cuda_graph``: full
    batches replay one CUDA graph of the step (``training.graph_step``; not part of the run's
    configuration: the numbers are the eager ones); None: where ``graph_step.use_graph`` says.
    Returns the manifest (also written to ``out_dir/manifest.json``, last).
    """
    from latentgen.data.datasets import get_spec, load_dataset
    from latentgen.devices import resolve_device

    config = config.resolved()
    spec = get_spec(config.dataset)
    folder = _RunFolder(out_dir)
    folder.remove_stale_temporaries()

    data = dataset if dataset is not None else load_dataset(config.dataset, data_root=data_root, prepared=prepared)
    if data.name != config.dataset:
        raise ValueError(f"dataset {data.name!r} given for a {config.dataset!r} run")
    corrupted, labels_source = resolve_labels(config, data.train_y.numpy(), labels)
    digest = labels_digest(corrupted)
    n_train = len(data.train_y)
    if config.train_subset is not None and config.train_subset > n_train:
        raise ValueError(f"train subset {config.train_subset} exceeds the {n_train} training images of {config.dataset}")
    n = n_train if config.train_subset is None else config.train_subset
    chash = config_hash({"train_config": asdict(config), "labels_sha256": digest})

    if folder.manifest.exists():
        manifest = read_json(folder.manifest)
        if manifest.get("config_hash") != chash:
            raise ValueError(f"{folder.root} already holds a finished run of another configuration "
                             f"(config hash {manifest.get('config_hash')}, this run {chash}); use another --out")
        folder.resume.unlink(missing_ok=True)  # left if a kill came between the manifest and its removal
        if verbose:
            print(f"{folder.root}: already complete (final epoch {manifest.get('final_epoch')})")
        return manifest

    dev = resolve_device(device)
    # CPU: the normalised tensors themselves; GPU: on the device once (uint8 where exact), else
    # pinned host batches (place_images)
    (x, test_x), placement = place_images([data.train_x[:n], data.test_x], config.dataset, dev)
    y = torch.from_numpy(np.asarray(corrupted[:n], dtype=np.int64)).to(dev)
    y_true = data.train_y[:n].to(dev)
    test_y = data.test_y.to(dev)
    if verbose and dev.type != "cpu":
        print(f"{folder.root}: images {placement} ({dev})")

    model = build_model(config.arch, config.dataset, seed=config.init_seed, **config.model_options).to(dev)
    optimizer = make_optimizer(config, model.parameters())
    cuda_graph = use_graph(config.arch, model, optimizer, dev, cuda_graph)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # nothing in the loop draws from it today (no dropout); seeded anyway
    meta_base = {
        "arch": config.arch, "dataset": config.dataset, "corruption": float(config.corruption), "run": int(config.run),
        "num_classes": spec.num_classes, "labels_sha256": digest, "labels": labels_source,
        "label_seed": config.label_seed, "train_subset": config.train_subset, "train_config": asdict(config),
        "config_hash": chash, "model_options": dict(config.model_options), "probe_layers": list(model.probe_layers),
        "head": forward.head_name(model), "last_hidden": model.last_hidden, "latentgen_version": __version__,
        "data": {"data_root": _abs(data_root), "prepared": _abs(prepared)},
    }

    log: list[dict] = []
    stop_reason = None
    if folder.resume.exists():
        state = load_torch(folder.resume, "resume state")
        if not isinstance(state, dict) or state.get("config_hash") != chash:
            found = state.get("config_hash") if isinstance(state, dict) else None
            raise ValueError(f"{folder.resume} was written by another configuration (config hash {found}, "
                             f"this run {chash}); delete it to start over, or use another --out")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        _set_rng_state(state["rng"], generator)
        log = list(state["log"])
        stop_reason = state["stop_reason"]
        epoch = int(state["epoch"])
        if verbose:
            print(f"{folder.root}: resuming after epoch {epoch}")
    else:
        _refuse_foreign_checkpoints(folder, chash)
        epoch = 0
        start = time.perf_counter()
        test_acc = evaluate(model, test_x, test_y, eval_batch_size)
        log.append({"epoch": 0, "loss": None, "train_acc_corrupted": None, "train_acc_true": None,
                    "test_acc": test_acc, "seconds": time.perf_counter() - start})
        if config.max_epochs == 0:
            stop_reason = "max_epochs"
        _save_epoch(folder, model, optimizer, generator, meta_base, log, stop_reason, chash, epoch, config)

    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show_bar and stop_reason is None:
        from tqdm import tqdm

        bar = tqdm(total=config.max_epochs, initial=epoch, desc=f"{config.arch}/{config.dataset} c={config.corruption}",
                   unit="epoch", file=sys.stderr)
    # built after a resume has loaded the optimizer's state: the graph holds its tensors' addresses
    graphed = GraphedStep(model, optimizer, config.batch_size, x.shape[1:], dev, True) if cuda_graph else None
    while stop_reason is None:
        epoch += 1
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(dev) if config.shuffle else None
        stats = train_one_epoch(model, optimizer, x, y, config.batch_size, y_true=y_true, order=order, graphed=graphed)
        test_acc = evaluate(model, test_x, test_y, eval_batch_size)
        row = {"epoch": epoch, "loss": stats["loss"], "train_acc_corrupted": stats["correct"] / n,
               "train_acc_true": stats["correct_true"] / n, "test_acc": test_acc,
               "seconds": time.perf_counter() - start}
        log.append(row)
        if target_reached(stats["correct"], n, config.target_acc):
            stop_reason = "target_reached"
        elif epoch >= config.max_epochs:
            stop_reason = "max_epochs"
        _save_epoch(folder, model, optimizer, generator, meta_base, log, stop_reason, chash, epoch, config)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{row['train_acc_corrupted']:.4f}", test=f"{test_acc:.4f}")
        elif verbose and epoch_lines:
            print(f"epoch {epoch}: loss {row['loss']:.4f}  train acc {row['train_acc_corrupted']:.4f} (corrupted) "
                  f"{row['train_acc_true']:.4f} (true)  test acc {test_acc:.4f}  {row['seconds']:.2f}s", flush=True)
    if bar is not None:
        bar.close()

    final_epoch = log[-1]["epoch"]
    saved = config_grid(config, final_epoch)
    missing = [e for e in saved if not folder.checkpoint(e).exists()]
    if missing:
        raise RuntimeError(f"{folder.root}: checkpoints for epochs {missing} are missing; delete the folder and rerun")
    manifest = {
        "arch": config.arch, "dataset": config.dataset, "corruption": float(config.corruption), "run": int(config.run),
        "epochs": saved, "final_epoch": final_epoch, "stop_reason": stop_reason,
        "checkpoints": {str(e): f"checkpoints/epoch{e}.pt" for e in saved},
        "log": "train_log.csv", "config_hash": chash, "train_config": asdict(config), "labels_sha256": digest,
        "labels": labels_source, "final_train_acc_corrupted": log[-1]["train_acc_corrupted"],
        "final_test_acc": log[-1]["test_acc"], "train_seconds": sum(r["seconds"] for r in log),
        "device": str(dev), "versions": package_versions(),
    }
    write_json_atomic(folder.manifest, manifest)
    manifest = read_json(folder.manifest)  # as every later reader sees it (lists, string keys)
    folder.resume.unlink(missing_ok=True)  # the run is complete; the resume state is only dead weight
    if verbose:
        print(f"{folder.root}: {stop_reason} at epoch {final_epoch}, train acc {log[-1]['train_acc_corrupted']} "
              f"(corrupted labels), test acc {log[-1]['test_acc']:.4f}, {len(saved)} checkpoints")
    return manifest


def _save_epoch(folder: _RunFolder, model, optimizer, generator, meta_base, log, stop_reason, chash, epoch, config):
    """Checkpoint (on the grid or final), then the log, then the resume state: each atomic, in
    this order, so a kill anywhere leaves a resume state that redoes at most this epoch."""
    if on_grid(epoch, config.grid_dense_until, config.grid_dense_step, config.grid_step) or stop_reason:
        save_checkpoint(folder.checkpoint(epoch), model, {**meta_base, "epoch": epoch})
        kill_point(epoch, "checkpoint")
    write_text_atomic(folder.log, format_csv(LOG_COLUMNS, log))
    kill_point(epoch, "log")
    state = {"config_hash": chash, "epoch": epoch, "stop_reason": stop_reason, "log": log,
             "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer_state": optimizer.state_dict(), "rng": _rng_state(generator)}
    save_torch_atomic(state, folder.resume)
    kill_point(epoch, "resume")


def _refuse_foreign_checkpoints(folder: _RunFolder, chash: str) -> None:
    """A fresh start may overwrite checkpoints of this configuration (an attempt killed before its
    first resume state), never those of another one."""
    if not folder.checkpoints.is_dir():
        return
    for path in sorted(folder.checkpoints.glob("epoch*.pt")):
        try:
            found = read_checkpoint(path)["meta"].get("config_hash")
        except ValueError:
            continue  # unreadable leftovers are simply rewritten
        if found != chash:
            raise ValueError(f"{folder.root} holds checkpoints of another configuration ({path.name}: config hash "
                             f"{found}, this run {chash}); use another --out or delete the folder")


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).resolve())
