"""What every claim measure shares (``latentgen.paper.claims`` and ``latentgen.paper.claims_tmlr``): the keys,
the degree windows, the per-model loop and the "not evaluable" exception."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import pandas as pd

PAPERS = ("tmlr2026", "decoding2025")
KEYS = ["model", "dataset", "corruption"]
PEAK_WINDOW = 2  # grid positions: "peaks concurrently" = within two probed checkpoints
MEMORIZING = (0.2, 0.8)  # the degrees of the TMLR main figures' rows (Figs 1-3, 8)
# the degrees of the 2025 paper's tables (Table_values.ipynb: 0.2, 0.4, 0.6, 0.8): c = 0 has nothing
# memorized, and at c = 1 every model is at chance (the authors' MLP-MNIST: MASC 10.17 %, model 10.21 %)
TABLE_DEGREES = (0.2, 0.8)


class NotEvaluable(Exception):
    """The rows a claim needs are not in the inputs (the message says which)."""


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    section: str
    text: str
    criterion: str
    needs: tuple[str, ...]
    measure: Callable[["Inputs"], Iterator[tuple[str, float, bool, str]]]  # (scope, measured, holds, evidence)

    def __post_init__(self):
        if self.paper not in PAPERS:
            raise ValueError(f"claim {self.id}: unknown paper {self.paper!r}; known: {', '.join(PAPERS)}")


# --------------------------------------------------------------------------------------------
# helpers


def scope(model: str, dataset: str) -> str:
    from latentgen.paper.figures import model_label

    return model_label(model, dataset)


def pct(c: float) -> str:
    return f"{100 * c:.0f}%"


def per_model(frame: "pd.DataFrame", measure: Callable) -> Iterator[tuple]:
    """Run ``measure(model, dataset, rows)`` per model–dataset pair; NotEvaluable → that pair's row."""
    for (model, dataset), rows in frame.groupby(["model", "dataset"], sort=False):
        try:
            yield (scope(model, dataset), *measure(model, dataset, rows))
        except NotEvaluable as exc:
            yield scope(model, dataset), math.nan, None, str(exc)


def degrees(frame: "pd.DataFrame", lo: float = 0.0, hi: float = 1.0, what: str = "") -> list[float]:
    found = sorted(c for c in frame["corruption"].unique() if lo - 1e-9 <= c <= hi + 1e-9)
    if not found:
        raise NotEvaluable(f"no corruption degree in [{lo}, {hi}] in the {what or 'inputs'}")
    return found
