"""Every output of the two papers by name, one registry: the TMLR figures
(``latentgen.paper.figures.FIGURES``), the repair figures (:data:`REPAIR_FIGURES`),
the 2025 tables (``latentgen.paper.tables.TABLES``) and the claims. ``latentgen figure --name`` draws
any figure of it, ``latentgen table --name`` builds any table; the workflow's rules name them here.

Torch- and pandas-free (the Snakefile and the commands' parsers read it).
"""

from __future__ import annotations

KINDS = ("figure", "repair_figure", "table", "claims")
# the repair figures (drawn by latentgen.paper.repair_figures.make_repair_figure from repair tables)
REPAIR_FIGURES = {
    "fig_repair": "test accuracy against rho per repair, + repair_summary.csv (--summary)",
    "fig_repair_epochs": "the repairs over training, at every probed checkpoint",
}


def outputs() -> dict[str, str]:
    """Every output name → its kind (:data:`KINDS`), figures first, in the registries' order."""
    from latentgen.paper.figures import FIGURES
    from latentgen.paper.tables import TABLES

    return {**dict.fromkeys(FIGURES, "figure"), **dict.fromkeys(REPAIR_FIGURES, "repair_figure"),
            **dict.fromkeys(TABLES, "table"), "claims": "claims"}


def names(*kinds: str) -> list[str]:
    """The output names of the given kinds (every kind when none is given)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown output kind {', '.join(map(repr, unknown))}; kinds: {', '.join(KINDS)}")
    return [n for n, kind in outputs().items() if not kinds or kind in kinds]


def kind(name: str) -> str:
    """The kind of output ``name``; a ValueError naming the closest name otherwise."""
    table = outputs()
    if name not in table:
        import difflib

        close = difflib.get_close_matches(str(name), list(table), n=1)
        raise ValueError(f"unknown output {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; outputs: {', '.join(table)}")
    return table[name]
