"""Probing a whole training run in one job: forward passes and probes where the activations are.

:func:`probe_run` probes every checkpoint of one run the workflow needs: for each it loads the
network on the job's device, computes the activations into memory
(:class:`latentgen.probing.checkpoint_activations.CheckpointActivations`, one group of layers at a time
within a memory budget) and runs the probe families on them (:func:`latentgen.probing.checkpoint.probe_checkpoint`).
No activation file is written unless asked (``keep_activations``: today's HDF5 file per
checkpoint, written first and probed from, as an export). It writes:

- ``out``: the rows of the *tracked* checkpoints (``checkpoints="grid"``: the run's saved
  checkpoints on its grid, plus the final one with ``probe_final``; ``"final"``: none) — the
  TMLR figures' input, the file ``latentgen concat`` made of the per-checkpoint tables before;
- ``final_out``: the rows of the final checkpoint, which also gets ``final`` families and
  label sets (the 2025 paper's).

Each checkpoint's table is the same bytes the per-checkpoint ``latentgen probe`` writes.

**Resumable per checkpoint.** Each checkpoint's rows go to ``parts/epoch{E}.csv`` (atomically)
as soon as they are made; ``parts/job.json`` records what they were made from (options, the run's
config hash). A rerun keeps every part whose record matches and probes only the rest; a part
folder from other options is cleared first. The parts are removed once both outputs are written.

**Input-layer rows are made once** (:class:`InputRowCache`): the ``input`` layer's activations are
the images themselves, the same at every checkpoint, so a family's rows there depend only on
the data, the labels and the options. They are fit at the first checkpoint and reused at the
others; with a cache folder (the workflow's ``probes/input-cache``) also across runs and models
of the same dataset and labels. Cache entries are keyed by a hash of everything the rows depend
on (dataset, sizes, sha256 of every label array, family, label set, options, latentgen version)
and written atomically, so concurrent jobs may share the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from latentgen import registry
from latentgen.training.runs import kill_point

KILL_ENV = "LATENTGEN_PROBE_KILL_AT"  # tests: "EPOCH:STAGE" kills the job there (stages: part, outputs)
CHECKPOINT_SETS = ("grid", "final")


def _kill_point(epoch: int, stage: str) -> None:
    kill_point(epoch, stage, env=KILL_ENV, default_stage="")


@dataclass(frozen=True)
class ProbeSettings:
    """What one checkpoint is probed with (``latentgen.probing.checkpoint.probe_checkpoint``'s choices)."""

    families: tuple[str, ...] | None = None
    fit_labels: tuple[str, ...] | None = None
    extra_labels: tuple[tuple[float, str], ...] = ()


def tracked_epochs(manifest: dict, checkpoints: str = "grid", probe_final: bool = False) -> list[int]:
    """The checkpoints of a finished run whose rows go to the run table: with ``grid``, its saved
    epochs on its grid (and the final one with ``probe_final``); with ``final``, none."""
    if checkpoints not in CHECKPOINT_SETS:
        raise ValueError(f"checkpoints must be one of {', '.join(CHECKPOINT_SETS)}, got {checkpoints!r}")
    if checkpoints == "final":
        return []
    grid = {k.removeprefix("grid_"): int(v) for k, v in manifest["train_config"].items() if k.startswith("grid_")}
    return registry.probed_epochs(manifest["epochs"], int(manifest["final_epoch"]), grid, probe_final)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()


class InputRowCache:
    """Rows of the ``input`` layer by (family, label set), reused while the data, labels and options
    are the same (module docstring); in memory, and in ``folder`` if given."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = None if folder is None else Path(folder)
        self._rows: dict[str, list[tuple]] = {}
        self.hits = self.misses = 0

    def _key(self, layer, family: str) -> str:
        from latentgen import __version__

        o = layer.options
        record = {"dataset": layer.key[1], "train": _digest(layer.labels["train_true"]),
                  "train_corrupted": _digest(layer.labels["train_corrupted"]), "test": _digest(layer.labels["test"]),
                  "fit": _digest(layer.fit_y), "family": family, "fit_labels": layer.fit_labels,
                  "variance": o.variance, "sign": o.sign, "seed": o.seed, "extra_variances": list(o.extra_variances),
                  "extra_n_components": list(o.extra_n_components), "device": o.device.type,
                  "version": __version__}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, layer, family: str):
        """The cached rows of ``family`` on ``layer`` (re-keyed to its checkpoint), or None."""
        from latentgen.contracts import ProbeRow

        key = self._key(layer, family)
        values = self._rows.get(key)
        if values is None and self.folder is not None and (self.folder / f"{key}.json").is_file():
            values = [tuple(v) for v in json.loads((self.folder / f"{key}.json").read_text())]
            self._rows[key] = values
        if values is None:
            self.misses += 1
            return None
        self.hits += 1
        return [ProbeRow(*layer.key, *v) for v in values]

    def put(self, layer, family: str, rows) -> None:
        from latentgen._io import write_text_atomic

        key = self._key(layer, family)
        values = [r.values()[len(layer.key):] for r in rows]
        self._rows[key] = values
        if self.folder is not None:
            # floats as JSON numbers round-trip exactly (repr); NaN as JSON's NaN
            write_text_atomic(self.folder / f"{key}.json", json.dumps(values))


@dataclass
class RunProbeJob:
    """One run's probe job (:func:`probe_run`'s arguments, resolved)."""

    run_dir: Path
    out: Path
    final_out: Path
    parts: Path
    checkpoints: str = "grid"
    probe_final: bool = False
    every: ProbeSettings = field(default_factory=ProbeSettings)
    final: ProbeSettings = field(default_factory=ProbeSettings)
    probe_options: dict = field(default_factory=dict)  # variance, sign, batch_size, seed
    activation_batch_size: int = 500
    layers: list | None = None
    batchnorm: str | None = None  # None: the architecture's own (registry.activation_batchnorm)
    memory_budget: int | None = None
    keep_activations: Path | None = None
    compression: str = "lzf"

    def record(self, manifest: dict) -> dict:
        """What the parts are made from: a part made from anything else is not reused."""
        return {"run_config_hash": manifest.get("config_hash"), "final_epoch": manifest["final_epoch"],
                "every": asdict(self.every), "final": asdict(self.final), "probe_options": self.probe_options,
                "activation_batch_size": self.activation_batch_size, "layers": self.layers, "batchnorm": self.batchnorm,
                "keep_activations": self.keep_activations is not None}


def _read_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run is not finished (train it first)")
    return json.loads(path.read_text())


def _open_parts(job: RunProbeJob, record: dict) -> None:
    """Keep the parts made with ``record``; clear any made otherwise."""
    from latentgen._io import write_json_atomic

    stamp = job.parts / "job.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(record)):
        return
    if job.parts.is_dir():
        for part in job.parts.glob("epoch*.csv"):
            part.unlink()
    job.parts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, record)


def probe_run(job: RunProbeJob, *, data_root=None, prepared=None, labels=None, device="auto",
              input_cache: InputRowCache | None = None, log=print) -> dict[int, int]:
    """Probe the checkpoints of one finished run (module docstring); returns ``{epoch: rows}``
    of the checkpoints probed by this call (those resumed from parts are not re-probed)."""
    from latentgen._io import concatenate_csv
    from latentgen.probing.activations import (checkpoint_dataset, corrupted_labels_for, dump_activations,
                                               open_activations)
    from latentgen.probing.checkpoint_activations import CheckpointActivations
    from latentgen.devices import resolve_device
    from latentgen.probing.checkpoint import probe_checkpoint, write_probe_csv
    from latentgen.training.checkpoints import load_checkpoint

    manifest = _read_manifest(job.run_dir)
    final = int(manifest["final_epoch"])
    tracked = tracked_epochs(manifest, job.checkpoints, job.probe_final)
    epochs = sorted(set(tracked) | {final})
    record = job.record(manifest)
    _open_parts(job, record)
    device = resolve_device(device)
    cache = InputRowCache() if input_cache is None else input_cache
    dataset = corrupted = None
    probed: dict[int, int] = {}
    for epoch in epochs:
        part = job.parts / f"epoch{epoch}.csv"
        if part.is_file():
            continue
        checkpoint = job.run_dir / manifest["checkpoints"][str(epoch)]
        # the final checkpoint's families replace the others (as the per-checkpoint jobs did)
        settings = job.final if epoch == final and job.final.families is not None else job.every
        common = dict(families=settings.families, fit_labels=settings.fit_labels,
                      extra_labels=dict(settings.extra_labels) or None, device=device, input_cache=cache,
                      **job.probe_options)
        model, meta = load_checkpoint(checkpoint, device=device)
        if dataset is None:  # one load for every checkpoint of the run
            dataset = checkpoint_dataset(meta, data_root=data_root, prepared=prepared)
            corrupted = corrupted_labels_for(meta, dataset.train_y.numpy(), labels)
        elif meta.get("labels_sha256") != manifest.get("labels_sha256"):
            raise ValueError(f"checkpoint {checkpoint} was trained on other labels than its run")
        if job.keep_activations is not None:  # the export: today's file, probed from
            h5 = job.keep_activations / f"epoch{epoch}.h5"
            dump_activations(checkpoint, h5, labels=labels, batch_size=job.activation_batch_size, device=device,
                             layers=job.layers, compression=job.compression, batchnorm=job.batchnorm, dataset=dataset)
            with open_activations(h5) as acts:
                rows = probe_checkpoint(acts, checkpoint=checkpoint, data_root=data_root, prepared=prepared, **common)
        else:
            with CheckpointActivations(checkpoint, model, meta, dataset, corrupted,
                                       layers=job.layers, batch_size=job.activation_batch_size, batchnorm=job.batchnorm,
                                       memory_budget=job.memory_budget) as acts:
                rows = probe_checkpoint(acts, **common)
        write_probe_csv(rows, part)
        probed[epoch] = len(rows)
        log(f"epoch {epoch}: {len(rows)} rows -> {part}")
        _kill_point(epoch, "part")
    _kill_point(final, "outputs")
    if tracked:
        concatenate_csv([job.parts / f"epoch{e}.csv" for e in tracked], job.out)
    else:  # no tracked checkpoints: the header only
        write_probe_csv([], job.out)
    concatenate_csv([job.parts / f"epoch{final}.csv"], job.final_out)
    for part in job.parts.glob("epoch*.csv"):
        part.unlink()
    (job.parts / "job.json").unlink(missing_ok=True)
    try:
        job.parts.rmdir()
    except OSError:  # something else in it: left as it is
        pass
    log(f"input-layer rows: {cache.hits} reused, {cache.misses} fit")
    return probed

