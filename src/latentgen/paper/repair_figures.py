"""The repair figure (``fig_repair.pdf`` + ``.csv``) and the summary table (``repair_summary.csv``).

``latentgen figure --name fig_repair --inputs R.csv ... --out fig_repair.pdf --csv fig_repair.csv
--summary repair_summary.csv`` reads the tidy tables of ``latentgen repair`` (one per checkpoint);
the figures are the outputs registry's ``REPAIR_FIGURES`` (``latentgen.paper.outputs``).

Figure: per model (arch on dataset) two rows of panels — test accuracy and memorization left
(agreement with the corrupted label on the training examples whose label was changed) — against
ρ, one column per corruption degree. Lines: the K-FAC edit per layer set (mean over runs; the
shading spans min–max over runs), the SVD and random controls on the a-priori layer set
(dashed); horizontal reference lines: the unedited model and the VeLPIC transfer (zero bias).

Over training (``--name fig_repair_epochs``, from the tables of every probed checkpoint, ``checkpoints:
grid``): ``fig_repair_epochs.pdf`` + ``.csv``, test accuracy on the held-out 80 % of the test set
against the epoch — the unedited model, the VeLPIC transfer, and each swept method at its
configuration selected on the 20 % split (mean over runs; shading min–max).

Summary: for each method (kfac, svd, random, kfac_velpic, …) and checkpoint three selections,
clearly labelled — ``a_priori`` (first + last hidden layers at ρ = 0.75, fixed in advance);
``selected_on_split`` (best accuracy on the fixed 20 % split of the test set, scored on the other
80 %; ties go to the larger ρ, then the earlier layer set); ``best_on_test`` (the best on the
whole test set: an upper bound only, selected on the data it is scored on). Reference rows
(``unedited``, ``velpic``, ``velpic_bias``) and a run-mean row per selection complete it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from latentgen.paper.figures import reproducible_metadata
from latentgen.paper.outputs import REPAIR_FIGURES
from latentgen.registry import A_PRIORI_RHO, REPAIR_REFERENCES, find_architecture

KEYS = ["model", "dataset", "corruption", "run", "epoch"]
SUMMARY_METRICS = ["test_acc", "test_acc_select", "test_acc_heldout", "changed_acc_corrupted", "changed_acc_true",
                   "unchanged_acc", "train_acc_corrupted", "train_acc_true", "fraction_kept", "rel_change"]
REFERENCE_NAMES = {ref: "unedited" if ref == "none" else ref for ref in REPAIR_REFERENCES}


def a_priori_layer_set(arch: str) -> str | None:
    """The layer set fixed a priori for ``arch`` (the registry's), None where there is none."""
    spec = find_architecture(arch)
    return None if spec is None else spec.a_priori_layer_set


def read_tables(paths):
    import pandas as pd

    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"repair table not found: {path}")
        frame = pd.read_csv(path, keep_default_na=True)
        missing = [c for c in KEYS + ["repair", "layer_set", "rho", "test_acc", "changed_acc_corrupted"]
                   if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} is not a `latentgen repair` table (missing {', '.join(missing)})")
        frames.append(frame)
    if not frames:
        raise ValueError("no repair tables given")
    table = pd.concat(frames, ignore_index=True)
    table["layer_set"] = table["layer_set"].fillna("")
    return table


def _pick(group, score):
    """The row with the best ``score``; ties: larger ρ (the smaller edit), then the earlier row."""
    best = group[score].max()
    tied = group[group[score] >= best]
    return tied.sort_values("rho", ascending=False, kind="stable").iloc[0]


def summarise(table):
    """The three selections per method and checkpoint, the references, and run means."""
    import pandas as pd

    rows = []
    for key, checkpoint in table.groupby(KEYS, sort=True):
        ident = dict(zip(KEYS, key))
        for ref, name in REFERENCE_NAMES.items():
            for _, row in checkpoint[checkpoint["repair"] == ref].iterrows():
                rows.append({**ident, "selection": "reference", "repair": name, "layer_set": row["layer_set"],
                             "rho": float("nan"), **{m: row.get(m, float("nan")) for m in SUMMARY_METRICS}})
        swept = checkpoint[checkpoint["rho"].notna()]
        for method, group in swept.groupby("repair", sort=True):
            choices = []
            a_priori = a_priori_layer_set(ident["model"])
            fixed = group[(group["layer_set"] == a_priori) & np.isclose(group["rho"], A_PRIORI_RHO)]
            if len(fixed):
                choices.append(("a_priori", fixed.iloc[0], "test_acc_heldout"))
            choices.append(("selected_on_split", _pick(group, "test_acc_select"), "test_acc_heldout"))
            choices.append(("best_on_test", _pick(group, "test_acc"), "test_acc"))
            for selection, row, scored_on in choices:
                rows.append({**ident, "selection": selection, "repair": method, "layer_set": row["layer_set"],
                             "rho": row["rho"], "scored_on": scored_on, "score": row[scored_on],
                             **{m: row.get(m, float("nan")) for m in SUMMARY_METRICS}})
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    # run means of each selection (the selected configuration may differ between runs)
    numeric = [c for c in ["score", "rho"] + SUMMARY_METRICS if c in summary.columns]
    means = summary.groupby(["model", "dataset", "corruption", "selection", "repair"], sort=True, dropna=False)
    mean_rows = []
    for key, group in means:
        row = dict(zip(["model", "dataset", "corruption", "selection", "repair"], key))
        row.update(run="mean", epoch=float("nan"), layer_set="|".join(sorted(set(group["layer_set"].astype(str)))),
                   scored_on=group["scored_on"].iloc[0] if "scored_on" in group else "")
        row.update({c: group[c].mean() for c in numeric})
        row["runs"] = len(group)
        mean_rows.append(row)
    summary["run"] = summary["run"].astype(object)
    summary = pd.concat([summary, pd.DataFrame(mean_rows)], ignore_index=True)
    summary["epoch"] = summary["epoch"].astype("Int64")
    order = ["model", "dataset", "corruption", "run", "epoch", "selection", "repair", "layer_set", "rho",
             "scored_on", "score", *SUMMARY_METRICS, "runs"]
    return summary[[c for c in order if c in summary.columns]]


def figure_data(table):
    """Mean, min and max over runs of test accuracy and memorization left, per line and ρ."""
    cols = ["model", "dataset", "corruption", "repair", "layer_set", "rho"]
    data = table.copy()
    data["rho"] = data["rho"].fillna(-1.0)  # references: one value per checkpoint
    stats = data.groupby(cols, sort=True).agg(
        test_acc=("test_acc", "mean"), test_acc_min=("test_acc", "min"), test_acc_max=("test_acc", "max"),
        memorized=("changed_acc_corrupted", "mean"), memorized_min=("changed_acc_corrupted", "min"),
        memorized_max=("changed_acc_corrupted", "max"), fraction_kept=("fraction_kept", "mean")
        if "fraction_kept" in data.columns else ("test_acc", "size"), runs=("run", "nunique")).reset_index()
    stats.loc[stats["rho"] < 0, "rho"] = float("nan")
    return stats


def plot(stats, pdf_path, fmt: str = "pdf"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(zip(stats["model"], stats["dataset"])))
    degrees = sorted(stats["corruption"].unique())
    n_rows, n_cols = 2 * len(models), len(degrees)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 1.5, 2.2 * n_rows + 0.6), squeeze=False,
                             sharex=True)
    metrics = [("test_acc", "test accuracy"), ("memorized", "memorization left")]
    cmap = plt.get_cmap("tab10")
    for m, (arch, dataset) in enumerate(models):
        sub = stats[(stats["model"] == arch) & (stats["dataset"] == dataset)]
        kfac_sets = list(dict.fromkeys(sub[sub["repair"] == "kfac"]["layer_set"]))
        colours = {s: cmap(i % 10) for i, s in enumerate(kfac_sets)}
        a_priori = a_priori_layer_set(arch)
        for c, degree in enumerate(degrees):
            cell = sub[sub["corruption"] == degree]
            for r, (metric, label) in enumerate(metrics):
                ax = axes[2 * m + r, c]
                for layer_set in kfac_sets:
                    line = cell[(cell["repair"] == "kfac") & (cell["layer_set"] == layer_set)].sort_values("rho")
                    ax.plot(line["rho"], line[metric], color=colours[layer_set], lw=1.2, marker=".", ms=3,
                            label=f"K-FAC {layer_set}")
                    ax.fill_between(line["rho"], line[f"{metric}_min"], line[f"{metric}_max"],
                                    color=colours[layer_set], alpha=0.12, lw=0)
                for control, style in (("svd", "--"), ("random", ":")):
                    line = cell[(cell["repair"] == control) & (cell["layer_set"] == a_priori)].sort_values("rho")
                    if len(line):
                        ax.plot(line["rho"], line[metric], color="grey", ls=style, lw=1.0,
                                label=f"{control.upper() if control == 'svd' else 'random'} {a_priori}")
                for ref, colour, style, name in (("none", "black", (0, (1, 1)), "unedited"),
                                                 ("velpic", "tab:red", "--", "VeLPIC transfer")):
                    value = cell[cell["repair"] == ref][metric]
                    if len(value):
                        ax.axhline(float(value.iloc[0]), color=colour, ls=style, lw=1.2, label=name)
                ax.set_ylim(-0.02, 1.02)
                ax.set_xlim(1.02, min(0.28, float(stats["rho"].min()) - 0.02) if stats["rho"].notna().any() else 0.28)
                ax.grid(alpha=0.3)
                if m == 0 and r == 0:
                    ax.set_title(f"{int(round(degree * 100))} % corrupted")
                if c == 0:
                    ax.set_ylabel(f"{arch}–{dataset}\n{label}")
                if 2 * m + r == n_rows - 1:
                    ax.set_xlabel("curvature mass kept ρ")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    ncol = max(1, min(len(labels), 2 * n_cols))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    legend_rows = math.ceil(len(labels) / ncol)
    fig.tight_layout(rect=(0, min(0.4, 0.12 * legend_rows / n_rows + 0.01), 1, 1))
    fig.savefig(pdf_path, format=fmt, metadata=reproducible_metadata(fmt))  # the path may be a temporary name
    plt.close(fig)


def epoch_data(summary):
    """Held-out test accuracy per checkpoint: references as they are, methods as selected on the
    20 % split; mean, min and max over runs."""
    per_run = summary[summary["run"] != "mean"]
    references = per_run[per_run["selection"] == "reference"].assign(line=lambda d: d["repair"])
    selected = per_run[per_run["selection"] == "selected_on_split"].assign(line=lambda d: d["repair"] + " (selected)")
    import pandas as pd

    data = pd.concat([references, selected], ignore_index=True)
    data["epoch"] = data["epoch"].astype(int)
    stats = data.groupby(["model", "dataset", "corruption", "line", "epoch"], sort=True).agg(
        test_acc_heldout=("test_acc_heldout", "mean"), test_acc_heldout_min=("test_acc_heldout", "min"),
        test_acc_heldout_max=("test_acc_heldout", "max"), memorized=("changed_acc_corrupted", "mean"),
        runs=("run", "nunique")).reset_index()
    return stats


def plot_epochs(stats, pdf_path, fmt: str = "pdf"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(zip(stats["model"], stats["dataset"])))
    degrees = sorted(stats["corruption"].unique())
    fig, axes = plt.subplots(len(models), len(degrees), figsize=(2.6 * len(degrees) + 1.5, 2.3 * len(models) + 0.9),
                             squeeze=False, sharey=True)
    lines = list(dict.fromkeys(stats["line"]))
    styles = {"unedited": dict(color="black", ls=(0, (1, 1))), "velpic": dict(color="tab:red", ls="--"),
              "velpic_bias": dict(color="tab:orange", ls="-.")}
    cmap = plt.get_cmap("tab10")
    for i, line in enumerate(lines):
        styles.setdefault(line, dict(color=cmap(i % 10), ls="-"))
    for m, (arch, dataset) in enumerate(models):
        for c, degree in enumerate(degrees):
            ax = axes[m, c]
            cell = stats[(stats["model"] == arch) & (stats["dataset"] == dataset) & (stats["corruption"] == degree)]
            for line in lines:
                part = cell[cell["line"] == line].sort_values("epoch")
                if len(part):
                    ax.plot(part["epoch"], part["test_acc_heldout"], lw=1.2, marker=".", ms=3, label=line,
                            **styles[line])
                    ax.fill_between(part["epoch"], part["test_acc_heldout_min"], part["test_acc_heldout_max"],
                                    color=styles[line]["color"], alpha=0.12, lw=0)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if m == 0:
                ax.set_title(f"{int(round(degree * 100))} % corrupted")
            if c == 0:
                ax.set_ylabel(f"{arch}–{dataset}\nheld-out test accuracy")
            if m == len(models) - 1:
                ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=max(1, min(len(labels), 4)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, min(0.3, 0.08 * math.ceil(len(labels) / 4) + 0.02), 1, 1))
    fig.savefig(pdf_path, format=fmt, metadata=reproducible_metadata(fmt))
    plt.close(fig)


def build_epochs(inputs, pdf, csv, provenance=None, config=None):
    """The over-training figure (+ its data) from the tables of every probed checkpoint."""
    from latentgen._io import atomic_path

    stats = epoch_data(summarise(read_tables(inputs)))
    if stats.empty:
        raise ValueError("the repair tables hold no references or swept methods to plot over epochs")
    pdf, csv = Path(pdf), Path(csv)
    with atomic_path(pdf) as tmp:
        plot_epochs(stats, tmp)
    with atomic_path(csv) as tmp:
        stats.to_csv(tmp, index=False)
    if provenance is not None:
        from latentgen.provenance import build_record, write_sidecar

        write_sidecar(pdf, build_record(inputs=inputs, outputs=[pdf, csv], config=config or {}), path=provenance)
    return [pdf, csv]


def build(inputs, pdf, csv, summary_csv=None, provenance=None, config=None):
    """Write the figure (+ its data) and, if asked, the summary table; all atomically."""
    from latentgen._io import atomic_path

    table = read_tables(inputs)
    stats = figure_data(table)
    pdf, csv = Path(pdf), Path(csv)
    with atomic_path(pdf) as tmp:
        plot(stats, tmp)
    with atomic_path(csv) as tmp:
        stats.to_csv(tmp, index=False)
    outputs = [pdf, csv]
    if summary_csv is not None:
        summary = summarise(table)
        with atomic_path(summary_csv) as tmp:
            summary.to_csv(tmp, index=False)
        outputs.append(Path(summary_csv))
    if provenance is not None:
        from latentgen.provenance import build_record, write_sidecar

        write_sidecar(pdf, build_record(inputs=inputs, outputs=outputs, config=config or {}), path=provenance)
    return outputs


def make_repair_figure(name: str, inputs, pdf, csv, summary=None, provenance=None, config=None):
    """Draw repair figure ``name`` (:data:`REPAIR_FIGURES`) from repair tables; returns the paths written."""
    if name not in REPAIR_FIGURES:
        raise ValueError(f"unknown repair figure {name!r}; known: {', '.join(REPAIR_FIGURES)}")
    if name == "fig_repair_epochs":
        if summary:
            raise ValueError("--summary belongs to fig_repair")
        return build_epochs(inputs, pdf, csv, provenance, config)
    return build(inputs, pdf, csv, summary, provenance, config)
