"""A table's files: the CSV (fractions), LaTeX and Markdown (percentages, best layer in
parentheses) and its bar chart (``latentgen table``; the tables themselves: ``latentgen.paper.tables``)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from latentgen import registry
from latentgen.paper.figures import layer_label, model_label, reproducible_metadata
from latentgen.paper.tables import BASELINE_FAMILIES, KEYS, LABEL_SETS, MASC_PAIRS, SENSITIVITY, get_table

if TYPE_CHECKING:
    import pandas as pd


# display names: a family's from its registry entry, a label set's short form
_NAMES = {**{n: f.label for n, f in registry.PROBE_FAMILIES.items()}, "corrupted": "corr.", "true": "true"}


# --------------------------------------------------------------------------------------------
# LaTeX and Markdown


def percent(value) -> str:
    """A fraction as a percentage with one decimal; empty for a missing value."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}"


_label = model_label


def _layer(layer) -> str:
    return "" if layer is None or (isinstance(layer, float) and math.isnan(layer)) else layer_label(str(layer))


def _with_layer(value, layer) -> str:
    text = percent(value)
    return f"{text} ({_layer(layer)})" if text and _layer(layer) else text


def _cells_masc(t):
    heads = ["Model", "c (%)", "Model test", "MASC corr.", "MASC true", "VeLPIC corr.", "VeLPIC true"]
    clean = t["masc_clean"].notna().any()
    heads += ["MASC clean model"] if clean else []
    rows = []
    for r in t.to_dict("records"):
        row = [_label(r["model"], r["dataset"]), f"{100 * r['corruption']:.0f}", percent(r["model_test"])]
        row += [_with_layer(r[f"{p}_{lab}"], r[f"{p}_{lab}_layer"]) for p, lab in MASC_PAIRS]
        row += [_with_layer(r["masc_clean"], r["masc_clean_layer"])] if clean else []
        rows.append(row)
    return heads, rows


def _cells_baselines(t):
    families = [f for f in BASELINE_FAMILIES if f in set(t["probe"])]
    heads = ["Model", "c (%)", "Labels", "Model test"] + [_NAMES[f] for f in families]
    rows = []
    for (m, d, c, labels), g in t.groupby([*KEYS, "fit_labels"], sort=False):
        cells = {r["probe"]: _with_layer(r["accuracy"], r["layer"]) for r in g.to_dict("records")}
        rows.append([_label(m, d), f"{100 * c:.0f}", _NAMES.get(labels, labels), percent(g["model_test"].iloc[0])]
                    + [cells.get(f, "") for f in families])
    return heads, rows


def _cells_relabel(t):
    heads = ["Model", "c (%)", "Subspaces", "Runs", "Before (80 %)", "After, last epoch (80 %)", "Gain",
             "Best epoch (80 %)", "Layer(s)", "Epochs", "Stopped early"]
    rows = [[_label(r["model"], r["dataset"]), f"{100 * r['corruption']:.0f}", _NAMES.get(r["subspaces"], "?"),
             str(r["runs"]), percent(r["test_acc_80_before"]), percent(r["test_acc_80_after"]), percent(r["gain_80"]),
             percent(r["test_acc_80_best"]),
             ", ".join(_layer(x) for x in str(r["layer"]).split(";")), str(r["epochs_trained"]).replace(";", ", "),
             f"{r['stopped_early']}/{r['runs']}"] for r in t.to_dict("records")]
    return heads, rows


def _cells_sensitivity(t):
    heads = ["Model", "c (%)"] + [f"MASC {label}" for _, label in SENSITIVITY]
    rows = [[_label(r["model"], r["dataset"]), f"{100 * r['corruption']:.0f}"]
            + [_with_layer(r[p], r[f"{p}_layer"]) for p, _ in SENSITIVITY] for r in t.to_dict("records")]
    return heads, rows


_CELLS: dict[str, Callable] = {"table_masc": _cells_masc, "table_baselines": _cells_baselines,
                               "table_relabel": _cells_relabel, "table_sensitivity": _cells_sensitivity}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(heads: Sequence[str], rows: Sequence[Sequence[str]], comment: str = "") -> str:
    """A booktabs ``tabular``: text columns left, numbers right; cells escaped."""
    aligns = "".join("r" if numeric else "l" for numeric in _numeric_columns(heads, rows))
    lines = [f"% {latex_escape(comment)}"] if comment else []
    lines += [rf"\begin{{tabular}}{{{aligns}}}", r"\toprule",
              " & ".join(latex_escape(h) for h in heads) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell) if cell else "--" for cell in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_markdown(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", r"\|") or "–"

    aligns = ["---:" if numeric else "---" for numeric in _numeric_columns(heads, rows)]
    lines = ["| " + " | ".join(esc(h) for h in heads) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(esc(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _numeric_columns(heads, rows) -> list[bool]:
    """Right-align a column (not the first) when one of its cells starts with a number."""
    return [i > 0 and any(re.match(r"^-?\d", str(r[i])) for r in rows) for i in range(len(heads))]


# --------------------------------------------------------------------------------------------
# bar charts


def _bars(ax, degrees: Sequence[float], series: Sequence[tuple[str, Sequence[float]]], colors: Sequence[str]):
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(degrees))]
        ax.bar(xs, values, width=width, label=label, color=colors[k % len(colors)])
    ax.set_xticks(range(len(degrees)))
    ax.set_xticklabels([f"{100 * c:.0f}%" for c in degrees], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3, lw=0.5)


_MASC_COLORS = ["tab:blue", "tab:orange", "gold", "tab:green", "yellowgreen"]  # model, then pairs corr./true
_FAMILY_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]


def plot_table(name: str, table: "pd.DataFrame", out: str | os.PathLike) -> Path:
    """The bar chart of ``table_masc`` or ``table_baselines`` (one panel per model; for baselines one
    row of panels per label set), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentgen._io import atomic_path

    spec = get_table(name)
    if spec.figure is None:
        raise ValueError(f"{name} has no bar chart")
    models = list(dict.fromkeys(zip(table["model"], table["dataset"])))
    label_rows = [None] if name == "table_masc" else [s for s in LABEL_SETS if s in set(table["fit_labels"])]
    fig, axes = plt.subplots(len(label_rows), len(models), squeeze=False,
                             figsize=(max(4.0, 1.2 * table["corruption"].nunique() + 1.5) * len(models),
                                      2.8 * len(label_rows) + 0.7))
    for j, (m, d) in enumerate(models):
        for i, labels in enumerate(label_rows):
            ax = axes[i][j]
            part = table[(table["model"] == m) & (table["dataset"] == d)]
            degrees = sorted(part["corruption"].unique())
            if labels is None:
                per = part.set_index("corruption")
                series = [("Model", per.loc[degrees, "model_test"].tolist())]
                series += [(f"{_NAMES[p]} {_NAMES[x]}", per.loc[degrees, f"{p}_{x}"].tolist()) for p, x in MASC_PAIRS]
            else:
                part = part[part["fit_labels"] == labels]
                model_acc = part.groupby("corruption")["model_test"].first()
                series = [("Model", [model_acc.get(c, math.nan) for c in degrees])]
                for family in [f for f in BASELINE_FAMILIES if f in set(part["probe"])]:
                    acc = part[part["probe"] == family].set_index("corruption")["accuracy"]
                    series.append((_NAMES[family], [acc.get(c, math.nan) for c in degrees]))
            _bars(ax, degrees, series, _MASC_COLORS if labels is None else _FAMILY_COLORS)
            title = _label(m, d) + (f", {labels}-label fits" if labels else "")
            ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel("test accuracy", fontsize=8)
            if i == len(label_rows) - 1:
                ax.set_xlabel("label corruption", fontsize=8)
            if i == 0 and j == len(models) - 1:
                ax.legend(fontsize=6, frameon=False, loc="upper right")
    fig.suptitle(f"{spec.title} (best layer: max over layers of the mean over runs)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fmt = out.suffix.lstrip(".") or "pdf"
        fig.savefig(tmp, format=fmt, metadata=reproducible_metadata(fmt))
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# writing a table


def write_table(name: str, table: "pd.DataFrame", prefix: str | os.PathLike) -> list[str]:
    """Write ``prefix``.csv (fractions), .tex and .md (percentages) atomically; return the paths."""
    from latentgen._io import atomic_path, write_text_atomic

    csv, tex, md = get_table(name).outputs(prefix)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    heads, rows = _CELLS[name](table)
    comment = f"{name}: {get_table(name).title}; accuracies in %, best layer in parentheses (generated by latentgen)"
    write_text_atomic(tex, to_latex(heads, rows, comment))
    write_text_atomic(md, to_markdown(heads, rows))
    return [csv, tex, md]
