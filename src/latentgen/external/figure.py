"""`latentgen probe-model --figure`: test accuracy per layer for each probe, the model's own as a line."""

from __future__ import annotations

import os
from pathlib import Path


def plot_layers(rows, model_accuracy: float, out: str | os.PathLike, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentgen._io import atomic_path

    test = [r for r in rows if r.split == "test" and r.fit_labels == "corrupted"]
    layers = list(dict.fromkeys(r.layer for r in test))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(layers) + 2), 3.2))
    for probe in dict.fromkeys(r.probe for r in test):
        values = {r.layer: r.accuracy for r in test if r.probe == probe}
        ax.plot(range(len(layers)), [values.get(layer, float("nan")) for layer in layers], marker="o", label=probe)
    ax.axhline(model_accuracy, color="k", linestyle=":", label="model")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    plt.close(fig)
    return Path(out)
