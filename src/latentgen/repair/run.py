"""One checkpoint's repair sweep, from files to files (what ``latentgen repair`` runs).

``repair_checkpoint`` checks that the checkpoint, its label file and the dataset belong together,
runs ``repair_sweep`` and writes the tidy CSV (one row per repaired model), ``OUT.layers.csv``
(one row per edited layer), with ``bands=True`` ``OUT.bands.csv`` (the §4 band diagnostic) and
the provenance sidecar ``OUT.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from latentgen.registry import DEFAULT_REPAIRS, DEFAULT_RHOS, REPAIR_REFERENCES, fisher_kind

GRAM_DTYPES = ("float64", "float32")
# the tidy table's leading columns after the checkpoint's identity; the metrics follow
ROW_COLUMNS = ["repair", "layer_set", "layers", "rho", "fisher", "bias", "pairs_kept", "pairs_total",
               "fraction_kept", "rho_reached", "rel_change", "dead_before", "dead_after", "revived", "killed"]
COUNT_COLUMNS = ("pairs_kept", "pairs_total", "dead_before", "dead_after", "revived", "killed")


def load_repair_inputs(checkpoint, labels, prepared=None, data_root=None, device="cpu"):
    """Model, meta and ``RepairData`` of a checkpoint, after checking that the pieces belong together."""
    import numpy as np

    from latentgen.data.datasets import load_dataset
    from latentgen.data.labels import read_label_file
    from latentgen.repair.evaluation import RepairData
    from latentgen.training.loop import labels_digest
    from latentgen.training.checkpoints import load_checkpoint

    model, meta = load_checkpoint(checkpoint, device=device)
    lf = read_label_file(labels)
    dataset = meta["dataset"]
    if lf.dataset and lf.dataset != dataset:
        raise ValueError(f"label file {labels} is for dataset {lf.dataset!r}, the checkpoint for {dataset!r}")
    if lf.num_classes != int(meta["num_classes"]):
        raise ValueError(f"label file {labels} has {lf.num_classes} classes, the checkpoint {meta['num_classes']}")
    if meta.get("labels_sha256") and labels_digest(lf.corrupted) != meta["labels_sha256"]:
        raise ValueError(f"label file {labels} is not the one checkpoint {checkpoint} was trained on "
                         "(sha256 of the corrupted labels differs)")
    if meta.get("corruption") is not None and abs(float(meta["corruption"]) - lf.degree) > 1e-9:
        raise ValueError(f"label file {labels} has corruption {lf.degree}, the checkpoint {meta['corruption']}")
    data = load_dataset(dataset, data_root=data_root, prepared=prepared)
    if len(lf.true) != len(data.train_y) or not np.array_equal(lf.true, data.train_y.numpy()):
        raise ValueError(f"label file {labels} does not match the {dataset} training labels")
    n = meta.get("train_subset") or len(data.train_y)  # the images the model was trained on
    return model, meta, RepairData(data.train_x[:n], lf.true[:n], lf.corrupted[:n], data.test_x, data.test_y)


def _check_positive(value, what):
    if value is not None and int(value) < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")


def repair_checkpoint(checkpoint: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike, *,
                      prepared: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                      layer_sets: Iterable[str] | None = None, rhos: Iterable[float] = DEFAULT_RHOS,
                      methods: Iterable[str] = DEFAULT_REPAIRS, references: Iterable[str] = REPAIR_REFERENCES,
                      fisher: str = "exact", samples: int = 1, bias: str = "keep", gram_dtype: str = "float64",
                      factor_subset: int | None = None, bands: bool = False, seed: int = 0, device: str = "auto",
                      batch_size: int = 1024, threads: int | None = None, workflow_config: dict | None = None,
                      progress: Callable[[str], None] | None = None) -> list[Path]:
    """Run the repair sweep of ``checkpoint`` and write its tables; returns the files written.

    ``layer_sets`` default to the registry's for the checkpoint's architecture. The factors come
    from ``factor_subset`` training inputs drawn with ``seed`` (default: all) with the ``fisher``
    labels; ``gram_dtype`` ("float64" or "float32") is the precision of their products. ``threads``
    sets torch's CPU threads for this process. ``workflow_config`` is recorded in the provenance.
    """
    import numpy as np
    import pandas as pd
    import torch

    from latentgen._io import atomic_path
    from latentgen.devices import resolve_device
    from latentgen.provenance import build_record, write_sidecar
    from latentgen.repair.bands import band_activation_ratios
    from latentgen.repair.evaluation import METRICS
    from latentgen.repair.layers import check_rho, default_layer_sets, expand_layer_set, layers_in_sets
    from latentgen.repair.sweep import repair_sweep, sweep_factors
    from latentgen.training.checkpoints import load_checkpoint

    out = Path(out)
    if out.suffix != ".csv":
        raise ValueError(f"--out must name a .csv file, got {out}")
    for path, what in ((checkpoint, "checkpoint"), (labels, "label file"), (prepared, "prepared dataset")):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
    rhos = [check_rho(r) for r in rhos]
    methods, references = list(methods), list(references)
    fisher = fisher_kind(fisher)
    if layer_sets is not None:
        layer_sets = list(layer_sets)
        if not [s for s in layer_sets if s.strip()]:
            raise ValueError("empty layer set: --layer-sets needs at least one set such as fc1+fc4")
    _check_positive(factor_subset, "the factor subset")
    _check_positive(batch_size, "the batch size")
    _check_positive(threads, "threads")
    if gram_dtype not in GRAM_DTYPES:
        raise ValueError(f"gram dtype must be one of {', '.join(GRAM_DTYPES)}, got {gram_dtype!r}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    device = resolve_device(device)
    say = progress or (lambda message: None)

    model, _ = load_checkpoint(checkpoint, device="cpu")  # cheap: check the layer sets before any data
    if layer_sets is None:
        layer_sets = default_layer_sets(model)
    for text in layer_sets:
        expand_layer_set(model, text)

    model, meta, data = load_repair_inputs(checkpoint, labels, prepared, data_root, device)
    factor_rows = None
    if factor_subset is not None and factor_subset < len(data.train_x):
        factor_rows = np.sort(np.random.RandomState(seed).choice(len(data.train_x), factor_subset, replace=False))
    factors = band_rows = None
    if bands:  # the sweep's own factors, computed here so the bands use them too
        edited_layers = layers_in_sets(model, layer_sets)
        factors = sweep_factors(model, data, edited_layers, fisher=fisher, samples=samples, seed=seed,
                                factor_rows=factor_rows, device=device, gram_dtype=getattr(torch, gram_dtype))
        band_rows = [row for name in edited_layers for row in
                     band_activation_ratios(model, name, factors[name], data.train_x, data.changed,
                                            batch_size=batch_size)]
    rows, layer_rows = repair_sweep(model, data, layer_sets=layer_sets, rhos=rhos, methods=methods,
                                    references=references, factors=factors, fisher=fisher,
                                    samples=samples, bias=bias, seed=seed, factor_rows=factor_rows,
                                    gram_dtype=getattr(torch, gram_dtype),
                                    batch_size=batch_size, device=device, progress=say)

    ident = {"model": meta["arch"], "dataset": meta["dataset"],
             "corruption": float(meta.get("corruption", float("nan"))),
             "run": int(meta.get("run", 0)), "epoch": int(meta["epoch"])}
    table = pd.DataFrame([{**ident, **row} for row in rows])
    first = [*ident, *ROW_COLUMNS, *METRICS]
    table = table.reindex(columns=first + [c for c in table.columns if c not in first])
    for column in COUNT_COLUMNS:
        table[column] = table[column].astype("Int64")  # counts; empty where they do not apply
    layers_table = pd.DataFrame([{**ident, **row} for row in layer_rows])
    layers_out = out.with_name(out.stem + ".layers.csv")
    with atomic_path(layers_out) as tmp:
        layers_table.to_csv(tmp, index=False)
    outputs = [out, layers_out]
    if band_rows is not None:
        bands_out = out.with_name(out.stem + ".bands.csv")
        with atomic_path(bands_out) as tmp:
            pd.DataFrame([{**ident, **row} for row in band_rows]).to_csv(tmp, index=False)
        outputs.append(bands_out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    config = {"checkpoint_meta": {k: meta.get(k) for k in ("arch", "dataset", "corruption", "run", "epoch",
                                                           "config_hash", "labels_sha256")},
              "layer_sets": list(layer_sets), "rhos": rhos, "methods": methods,
              "references": references, "fisher": fisher, "samples": samples,
              "bias": bias, "factor_subset": factor_subset, "gram_dtype": gram_dtype,
              "train_examples": len(data.train_x), "changed_examples": int(data.changed.sum()), "device": str(device),
              "workflow": workflow_config}
    inputs = [p for p in (checkpoint, labels, prepared) if p is not None]
    write_sidecar(out, build_record(inputs=inputs, outputs=outputs, config=config, seeds={"repair": seed}))
    say(f"{len(table)} repaired models -> {out}")
    return outputs
