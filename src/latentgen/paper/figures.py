"""Figures 1–14 of the TMLR paper from tidy accuracy tables.

One registry, :data:`FIGURES`, says what each figure plots (SPEC §9):

- ``kind``: ``masc`` / ``velpic`` (test accuracy per layer), ``transfer`` (test accuracy of
  the VeLPIC weight transfer, zero bias), ``diff`` (VeLPIC − MASC test accuracy per layer),
  ``train-transfer`` (accuracy on the *corrupted* training labels after the transfer,
  against the model's running train accuracy);
- ``group``: ``main`` or ``extra`` — which model–dataset pairs make the columns (the
  workflow's config maps each group to its models);
- ``corruptions``: the corruption degrees that make the rows (``None``: all configured).

Every panel follows the authors' plotting code: x = the probed checkpoints at index
positions, ticks labelled with their epochs; each line is the mean over runs with a
min–max band; runs are truncated to the shortest run's list of checkpoints (position by
position, as Python's ``zip``; where the runs end at their own final epochs, as the authors'
Tiny ImageNet runs, each keeps its own last point); the model's own accuracy is drawn dotted, and at epoch 0
it repeats the epoch-1 value (``model_epoch0="repeat"``, the authors' plot) unless
``model_epoch0="measured"`` asks for the initial model's measured accuracy.

Adding a figure = one :data:`FIGURES` entry (and a test). Input and source-data tables use
the tidy columns :data:`COLUMNS`; model rows have ``probe == "model"`` and
``layer == "model"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from latentgen import contracts
from latentgen import registry

if TYPE_CHECKING:  # pandas and matplotlib are imported only when a figure is made
    import pandas as pd

COLUMNS = list(contracts.METRICS_COLUMNS)
KINDS = ("masc", "velpic", "transfer", "diff", "train-transfer")
GROUPS = ("main", "extra")
MODEL_EPOCH0 = ("repeat", "measured")
MODEL_LAYER = "model"  # the `layer` value of the model's own accuracy rows

ALL = None
MIDDLE = (0.2, 0.4, 0.6, 0.8)
ENDS = (0.0, 1.0)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    kind: str
    group: str
    corruptions: tuple[float, ...] | None
    title: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"figure {self.name}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.group not in GROUPS:
            raise ValueError(f"figure {self.name}: unknown group {self.group!r}; known: {', '.join(GROUPS)}")

    def rows(self, configured: Sequence[float]) -> list[float]:
        """Corruption degrees to plot: the figure's rows that the configuration has."""
        configured = sorted({round(float(c), 6) for c in configured})
        if self.corruptions is None:
            return configured
        return [c for c in configured if any(abs(c - r) < 1e-9 for r in self.corruptions)]


FIGURES: dict[str, FigureSpec] = {f.name: f for f in [
    FigureSpec("fig1", "masc", "main", MIDDLE, "MASC test accuracy during training"),
    FigureSpec("fig2", "velpic", "main", MIDDLE, "VeLPIC test accuracy during training"),
    FigureSpec("fig3", "transfer", "main", MIDDLE, "Test accuracy after the VeLPIC weight transfer"),
    FigureSpec("fig4", "masc", "main", ENDS, "MASC test accuracy, 0 % and 100 % corruption"),
    FigureSpec("fig5", "masc", "extra", ALL, "MASC test accuracy, additional models"),
    FigureSpec("fig6", "velpic", "main", ENDS, "VeLPIC test accuracy, 0 % and 100 % corruption"),
    FigureSpec("fig7", "velpic", "extra", ALL, "VeLPIC test accuracy, additional models"),
    FigureSpec("fig8", "diff", "main", MIDDLE, "VeLPIC − MASC test accuracy"),
    FigureSpec("fig9", "diff", "main", ENDS, "VeLPIC − MASC test accuracy, 0 % and 100 % corruption"),
    FigureSpec("fig10", "diff", "extra", ALL, "VeLPIC − MASC test accuracy, additional models"),
    FigureSpec("fig11", "transfer", "main", ENDS, "Transfer test accuracy, 0 % and 100 % corruption"),
    FigureSpec("fig12", "transfer", "extra", ALL, "Transfer test accuracy, additional models"),
    FigureSpec("fig13", "train-transfer", "main", ALL, "Corrupted-label train accuracy after the transfer"),
    FigureSpec("fig14", "train-transfer", "extra", ALL, "Corrupted-label train accuracy after the transfer, additional models"),
]}

# per kind: (probe, split) of the plotted lines, and the split of the model's own curve
_LINES = {
    "masc": (("masc", "test"), "test"),
    "velpic": (("velpic", "test"), "test"),
    "transfer": (("transfer", "test"), "test"),
    "diff": (None, None),
    "train-transfer": (("transfer", "train_corrupted"), "train_corrupted"),
}

_COLORS = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray", "gold"]


def reproducible_metadata(fmt: str) -> dict | None:
    """savefig metadata without a creation date, so a rebuilt PDF is byte-identical to the last."""
    return {"CreationDate": None} if fmt == "pdf" else None


def get_figure(name: str) -> FigureSpec:
    try:
        return FIGURES[name]
    except KeyError:
        raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}") from None


def layer_label(layer: str) -> str:
    if layer == "input":
        return "Input"
    if layer == "flatten":
        return "Flat"
    if layer.startswith("fc") and layer[2:].isdigit():
        return f"FC{layer[2:]}"
    return layer


def model_label(model: str, dataset: str) -> str:
    arch, data = registry.find_architecture(model), registry.find_dataset(dataset)
    return f"{arch.label if arch else model}-{data.label if data else dataset}"


def read_metrics(paths: Sequence[str | os.PathLike], rows=None) -> "pd.DataFrame":
    """Concatenate tidy CSVs, checking their columns; ``rows(frame)``, if given, picks the rows kept
    from each file (``metrics.tmlr_rows`` for probe tables)."""
    import pandas as pd

    paths = list(paths)

    if not paths:
        raise ValueError("no metrics files given")
    frames = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"metrics file {p} does not exist")
        frame = pd.read_csv(p, dtype={"layer": str, "probe": str, "split": str, "model": str, "dataset": str,
                                      "fit_labels": str})
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"metrics file {p} lacks the columns {', '.join(missing)}")
        frames.append((frame if rows is None else rows(frame))[COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _aligned_epochs(frame: "pd.DataFrame", key: tuple, own_final: bool = False) -> dict[int, list[int]]:
    """Per run, its probed epochs truncated to the shortest run's count (position-wise, as ``zip``).

    ``own_final``: each run's list ends with that run's own final epoch, and the grid epochs
    before it are truncated to the shortest (the authors' Tiny ImageNet plots).
    """
    probed = frame[frame["probe"] != "model"]
    per_run = {int(run): sorted(int(e) for e in g["epoch"].unique()) for run, g in probed.groupby("run")}
    if not per_run:
        raise ValueError(f"no probe rows for model={key[0]} dataset={key[1]} corruption={key[2]}")
    if own_final:
        shortest = min(len(v) for v in per_run.values()) - 1
        return {run: epochs[:shortest] + epochs[-1:] for run, epochs in sorted(per_run.items())}
    shortest = min(len(v) for v in per_run.values())
    return {run: epochs[:shortest] for run, epochs in sorted(per_run.items())}


def _model_value(model_rows: "pd.DataFrame", run: int, epoch: int, split: str, epoch0: str) -> float:
    """The model's own accuracy after ``epoch`` (epoch 0 → epoch 1 in "repeat" mode)."""
    if epoch == 0 and epoch0 == "repeat":
        epoch = 1
    hit = model_rows[(model_rows["run"] == run) & (model_rows["epoch"] == epoch) & (model_rows["split"] == split)]
    if hit.empty:
        return float("nan")
    return float(hit["accuracy"].iloc[0])


def figure_source(spec: FigureSpec, metrics: "pd.DataFrame", corruptions: Sequence[float] | None = None,
                  model_epoch0: str = "repeat", own_final: Sequence[tuple[str, str]] = ()) -> "pd.DataFrame":
    """The tidy rows a figure plots (its source-data CSV), truncated and aligned as plotted.

    For ``diff`` figures ``probe`` is ``velpic-masc`` and ``accuracy`` holds the difference.
    Model rows (``probe == "model"``) carry the plotted values, i.e. with ``repeat`` the
    epoch-0 row holds the epoch-1 accuracy. ``own_final`` lists the (model, dataset) pairs whose
    runs end at their own final epoch (see :func:`_aligned_epochs`).
    """
    import pandas as pd

    if model_epoch0 not in MODEL_EPOCH0:
        raise ValueError(f"model_epoch0 must be one of {', '.join(MODEL_EPOCH0)}, got {model_epoch0!r}")
    metrics = metrics.copy()
    metrics["corruption"] = metrics["corruption"].astype(float).round(6)
    rows = spec.rows(metrics["corruption"].unique() if corruptions is None else corruptions)
    if not rows:
        raise ValueError(f"{spec.name}: none of its corruption degrees "
                         f"{list(spec.corruptions or [])} are in the metrics")
    lines, model_split = _LINES[spec.kind]
    out = []
    for (model, dataset), per_model in metrics.groupby(["model", "dataset"], sort=False):
        for c in rows:
            frame = per_model[per_model["corruption"] == c]
            key = (model, dataset, c)
            if frame.empty:
                raise ValueError(f"{spec.name}: no metrics for model={model} dataset={dataset} corruption={c}")
            aligned = _aligned_epochs(frame, key, own_final=(model, dataset) in set(map(tuple, own_final)))
            keep = pd.concat([frame[(frame["run"] == run) & (frame["epoch"].isin(epochs))]
                              for run, epochs in aligned.items()])
            if spec.kind == "diff":
                test = keep[keep["split"] == "test"]
                idx = ["model", "dataset", "corruption", "run", "epoch", "layer"]
                masc = test[test["probe"] == "masc"].set_index(idx)["accuracy"]
                velpic = test[test["probe"] == "velpic"].set_index(idx)["accuracy"]
                if masc.empty or velpic.empty:
                    raise ValueError(f"{spec.name}: MASC or VeLPIC test rows missing for {model}-{dataset} c={c}")
                diff = (velpic - masc).dropna().reset_index()
                diff["probe"], diff["split"] = "velpic-masc", "test"
                out.append(diff[COLUMNS])
                continue
            probe, split = lines
            chosen = keep[(keep["probe"] == probe) & (keep["split"] == split)]
            if chosen.empty:
                raise ValueError(f"{spec.name}: no {probe} {split} rows for {model}-{dataset} c={c}")
            out.append(chosen[COLUMNS])
            model_rows = frame[frame["probe"] == "model"]
            curve = []
            for run, epochs in aligned.items():
                for epoch in epochs:
                    value = _model_value(model_rows, run, epoch, model_split, model_epoch0)
                    curve.append((model, dataset, c, run, epoch, MODEL_LAYER, "model", model_split, value))
            out.append(pd.DataFrame(curve, columns=COLUMNS).dropna(subset=["accuracy"]))
    source = pd.concat(out, ignore_index=True)
    source["run"] = source["run"].astype(int)
    source["epoch"] = source["epoch"].astype(int)
    if spec.kind != "diff":
        bad = source[(source["accuracy"] < 0) | (source["accuracy"] > 1) | source["accuracy"].isna()]
        if not bad.empty:
            first = bad.iloc[0]
            raise ValueError(f"{spec.name}: accuracy {first['accuracy']} outside [0, 1] "
                             f"({first['model']}-{first['dataset']} c={first['corruption']} run {first['run']} "
                             f"epoch {first['epoch']} {first['probe']} {first['layer']})")
    return source


def _positions(panel: "pd.DataFrame") -> tuple[dict[int, dict[int, int]], list[str]]:
    """Per run, epoch -> x position (its index among that run's probed epochs), and tick labels."""
    probed = panel[panel["layer"] != MODEL_LAYER]
    if probed.empty:
        probed = panel
    per_run = {int(run): sorted(int(e) for e in g["epoch"].unique()) for run, g in probed.groupby("run")}
    n = min(len(v) for v in per_run.values())
    labels = []
    for i in range(n):
        lo, hi = min(v[i] for v in per_run.values()), max(v[i] for v in per_run.values())
        labels.append(str(lo) if lo == hi else f"{lo}–{hi}")
    return {run: {e: i for i, e in enumerate(v[:n])} for run, v in per_run.items()}, labels


def _band(line: "pd.DataFrame", positions: dict[int, dict[int, int]]) -> "pd.DataFrame":
    """Mean, min and max over runs at each x position of one line."""
    x = [positions.get(int(r), {}).get(int(e)) for r, e in zip(line["run"], line["epoch"])]
    frame = line.assign(x=x).dropna(subset=["x"])
    stats = frame.groupby("x")["accuracy"].agg(["mean", "min", "max"]).sort_index()
    stats.index = stats.index.astype(int)
    return stats


def plot_figure(spec: FigureSpec, source: "pd.DataFrame", out: str | os.PathLike) -> Path:
    """Draw ``source`` (from :func:`figure_source`) as a rows × columns grid, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentgen._io import atomic_path

    columns = list(dict.fromkeys(zip(source["model"], source["dataset"])))
    rows = sorted(source["corruption"].unique())
    height = 2.6 * len(rows) + 0.8
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.6 * len(columns), height),
                             squeeze=False, sharey=spec.kind != "diff")
    for j, (model, dataset) in enumerate(columns):
        per_model = source[(source["model"] == model) & (source["dataset"] == dataset)]
        layers = [layer for layer in dict.fromkeys(per_model["layer"]) if layer != MODEL_LAYER]
        for i, c in enumerate(rows):
            ax = axes[i][j]
            panel = per_model[per_model["corruption"] == c]
            if panel.empty:
                ax.set_axis_off()
                continue
            positions, labels = _positions(panel)
            for k, layer in enumerate(layers):
                line = panel[panel["layer"] == layer]
                if line.empty:
                    continue
                stats = _band(line, positions)
                color = _COLORS[k % len(_COLORS)]
                name = "Transfer" if spec.kind in ("transfer", "train-transfer") else layer_label(layer)
                ax.plot(stats.index, stats["mean"], color=color, lw=1.4, label=name)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
            model_line = panel[panel["layer"] == MODEL_LAYER]
            if not model_line.empty:
                stats = _band(model_line, positions)
                ax.plot(stats.index, stats["mean"], color="tab:blue", ls=":", lw=1.6, label="Model")
                ax.fill_between(stats.index, stats["min"], stats["max"], color="tab:blue", alpha=0.12, lw=0)
            elif spec.kind == "diff":
                ax.plot(range(len(labels)), [0.0] * len(labels), color="tab:blue", ls=":", lw=1.6, label="Model")
            if labels:
                step = max(1, (len(labels) + 7) // 8)  # at most ~8 tick labels
                ax.set_xticks(range(0, len(labels), step))
                ax.set_xticklabels(labels[::step], fontsize=7)
            if spec.kind != "diff":
                ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3, lw=0.5)
            if i == 0:
                ax.set_title(model_label(model, dataset), fontsize=10)
                ax.legend(fontsize=6, loc="best", frameon=False)
            if j == 0:
                ax.set_ylabel(f"{int(round(c * 100))}% corruption", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle(f"{spec.name.replace('fig', 'Figure ')}: {spec.title}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))  # leave room for the title
    out = Path(out)
    with atomic_path(out) as tmp:
        fmt = out.suffix.lstrip(".") or "pdf"
        fig.savefig(tmp, format=fmt, dpi=150, metadata=reproducible_metadata(fmt))
    plt.close(fig)
    return out


def make_figure(name: str, metrics: "pd.DataFrame", out: str | os.PathLike, csv: str | os.PathLike | None = None,
                corruptions: Sequence[float] | None = None, model_epoch0: str = "repeat",
                own_final: Sequence[tuple[str, str]] = ()) -> "pd.DataFrame":
    """Compute a figure's source rows, write its CSV (if asked) and plot it; return the rows."""
    from latentgen._io import atomic_path

    spec = get_figure(name)
    source = figure_source(spec, metrics, corruptions=corruptions, model_epoch0=model_epoch0, own_final=own_final)
    if csv is not None:
        with atomic_path(csv) as tmp:
            source.to_csv(tmp, index=False)
    plot_figure(spec, source, out)
    return source
