"""The 2025 paper's tables (and two bar charts) from the final-model probe tables.

One registry, :data:`TABLES`, says what each table reads and writes; the workflow builds one
rule per entry. Every table is written three ways from one frame (:func:`write_table`): ``.csv``
(accuracies as fractions), LaTeX (booktabs ``tabular``, accuracies in % with one decimal) and
Markdown (the same cells).

A probe's **best layer** (SPEC D14, the authors' ``Table_values.ipynb``): per model, dataset and
corruption degree, the mean over runs of the final-epoch test accuracy of each layer, then the
maximum of these means over the layers the authors' table takes — the hidden layers, and for the
CNN the input layer too (``registry.Architecture.best_layer_includes_input``); ties go to the
earlier layer (the registry's ``probe_layers`` order). ``table_sensitivity`` takes hidden layers only. The best single run may sit on another layer; the table does not look.
Each run's final epoch is the largest ``epoch`` of its rows in the probe tables, which must be
its train log's last epoch.

Inputs (:data:`INPUT_KINDS`), each a list of files:

- ``probes``: final-model probe tables, columns :data:`PROBE_COLUMNS`. ``fit_labels`` is
  ``corrupted``, ``true`` or ``corrupted@C`` (the clean model, c = 0, probed with degree C's
  corrupted-label subspaces: it appears in the degree-C row of ``table_masc`` as ``masc_clean``).
- ``train_logs``: each run's ``train_log.csv``; the run is named by the ``manifest.json`` beside
  it, else by the path ``…/{arch}/{dataset}/c{c}/run{r}/train_log.csv``.
- ``relabel``: relabel-and-retrain results, columns :data:`RELABEL_COLUMNS`.

They are read and checked by :mod:`latentgen.paper.table_inputs`. Torch-free; pandas and matplotlib are imported when a table is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from latentgen import registry
from latentgen.paper.table_inputs import read_probe_tables, read_relabel, read_train_logs

if TYPE_CHECKING:
    import pandas as pd

INPUT_KINDS = ("probes", "train_logs", "relabel", "metrics")
INPUT_LAYER = registry.INPUT_LAYER  # a best layer only where the architecture's entry says (the CNN's, D14)
KEYS = ["model", "dataset", "corruption"]
LABEL_SETS = registry.FIT_LABEL_SETS
MASC_PAIRS = (("masc", "corrupted"), ("masc", "true"), ("velpic", "corrupted"), ("velpic", "true"))
# the families table_baselines shows: those whose registry entry lists it
BASELINE_FAMILIES = tuple(n for n, f in registry.PROBE_FAMILIES.items() if "table_baselines" in f.tables)
# (probe, column head: the variance kept, or the fixed component count)
SENSITIVITY = tuple((probe, f"{variance:g}" if variance is not None else f"{count} PC")
                    for probe, variance, count in registry.MASC_SENSITIVITY)


@dataclass(frozen=True)
class TableSpec:
    """One table: the inputs it needs (and may use), the probe rows it reads, its bar chart.

    ``probes`` / ``fit_labels``: the ``probe`` and ``fit_labels`` values it reads from the probe
    tables (what the probing must produce for it). ``figure``: the stem of its bar chart
    (``fig_table_masc`` → ``fig_table_masc.pdf``), or None.
    """

    name: str
    title: str
    needs: tuple[str, ...]
    probes: tuple[str, ...] = ()
    fit_labels: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    figure: str | None = None

    def __post_init__(self):
        for kind in (*self.needs, *self.optional):
            if kind not in INPUT_KINDS:
                raise ValueError(f"table {self.name}: unknown input kind {kind!r}; known: {', '.join(INPUT_KINDS)}")

    def outputs(self, prefix: str | os.PathLike) -> list[str]:
        """The files a build writes for output prefix ``prefix`` (``results/table_masc``)."""
        return [f"{prefix}{suffix}" for suffix in (".csv", ".tex", ".md")]


TABLES: dict[str, TableSpec] = {t.name: t for t in [
    TableSpec("table_masc", "MASC and VeLPIC at the best layer against the model, final epoch",
              needs=("probes", "train_logs"), probes=("masc", "velpic"), fit_labels=(*LABEL_SETS, "corrupted@C"),
              figure="fig_table_masc"),
    TableSpec("table_baselines", "Every probe family at its best layer, corrupted- and true-label fits",
              needs=("probes", "train_logs"), probes=BASELINE_FAMILIES, fit_labels=LABEL_SETS,
              figure="fig_table_baselines"),
    TableSpec("table_relabel", "Relabel-and-retrain: test accuracy on the 80 % split before and after",
              needs=("relabel",)),
    TableSpec("table_sensitivity", "MASC at its best layer per variance threshold",
              needs=("probes",), probes=tuple(p for p, _ in SENSITIVITY) + ("masc",), fit_labels=("corrupted",)),
]}


def get_table(name: str) -> TableSpec:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}")
    return TABLES[name]


# --------------------------------------------------------------------------------------------
# best layers and the model's accuracy


def final_rows(probes: "pd.DataFrame") -> "pd.DataFrame":
    """The rows at each run's final epoch (the largest epoch of that model/dataset/degree/run; the
    clean model's ``corrupted@C`` rows apart, whichever corruption they are filed under)."""
    clean = probes["fit_labels"].str.startswith("corrupted@")
    last = probes.groupby([*KEYS, "run", clean])["epoch"].transform("max")
    return probes[probes["epoch"] == last]


def layer_rank(model: str, layer: str) -> int:
    """Position of ``layer`` in ``model``'s registry order (unknown layers after the known ones)."""
    arch = registry.find_architecture(model)
    layers = arch.probe_layers if arch else ()
    return layers.index(layer) if layer in layers else len(layers)


def counts_input(model: str) -> bool:
    """Does the best layer of ``model`` range over its input layer (the CNN's, as the authors' table)?"""
    arch = registry.find_architecture(model)
    return bool(arch and arch.best_layer_includes_input)


def layer_means(final: "pd.DataFrame", probe: str, fit_labels: str, split: str = "test", *,
                with_input: bool = True) -> "pd.DataFrame":
    """Per model/dataset/degree and table layer (the input layer only where :func:`counts_input`,
    and never with ``with_input=False``): mean over runs (``accuracy``) and ``runs``.

    Raises ValueError where a key's layers were probed on different sets of runs."""
    with_input_models = [m for m in registry.ARCHITECTURES if counts_input(m)] if with_input else []
    table_layer = (final["layer"] != INPUT_LAYER) | final["model"].isin(with_input_models)
    rows = final[(final["probe"] == probe) & (final["fit_labels"] == fit_labels) & (final["split"] == split)
                 & table_layer]
    # one row per run and layer: read_probe_tables refuses duplicates. A run whose probe could not
    # be fit (NaN) makes the layer's mean NaN: a mean over fewer runs would not be comparable
    means = rows.groupby([*KEYS, "layer"], sort=False).agg(accuracy=("accuracy", lambda a: a.mean(skipna=False)),
                                                            runs=("run", "nunique")).reset_index()
    for key, group in means.groupby(KEYS):
        if group["runs"].nunique() > 1:
            counts = ", ".join(f"{layer}: {runs}" for layer, runs in zip(group["layer"], group["runs"]))
            raise ValueError(f"{probe} ({fit_labels}) for {key[0]}-{key[1]} c={key[2]}: the layers have different "
                             f"numbers of runs ({counts}); a probe table is incomplete")
    return means


def best_layers(final: "pd.DataFrame", probe: str, fit_labels: str, split: str = "test", *,
                with_input: bool = True) -> "pd.DataFrame":
    """``model,dataset,corruption,accuracy,layer,runs``: the best table layer by mean over runs (D14;
    ``with_input=False``: hidden layers only, whatever the architecture)."""
    import pandas as pd

    means = layer_means(final, probe, fit_labels, split, with_input=with_input)
    if means.empty:
        return pd.DataFrame(columns=[*KEYS, "accuracy", "layer", "runs"])
    means["_rank"] = [layer_rank(m, layer) for m, layer in zip(means["model"], means["layer"])]
    means = means.sort_values([*KEYS, "_rank"], kind="stable")
    fitted = means.dropna(subset=["accuracy"])
    best = fitted.loc[fitted.groupby(KEYS, sort=False)["accuracy"].idxmax()]  # idxmax: first of equal maxima
    # a key where no layer could be fit keeps a row: accuracy NaN, no layer
    unfit = means.drop_duplicates(KEYS).merge(best[KEYS], on=KEYS, how="left", indicator=True)
    unfit = unfit[unfit["_merge"] == "left_only"].assign(accuracy=float("nan"), layer="")
    best = pd.concat([best, unfit[means.columns]], ignore_index=True) if not unfit.empty else best
    return best.sort_values(KEYS, kind="stable")[[*KEYS, "accuracy", "layer", "runs"]].reset_index(drop=True)


def clean_model_rows(final: "pd.DataFrame") -> "pd.DataFrame":
    """The clean model's ``corrupted@C`` rows re-keyed to corruption C, ``fit_labels`` = ``corrupted@``."""
    rows = final[final["fit_labels"].str.startswith("corrupted@")].copy()
    rows["corruption"] = rows["fit_labels"].str.slice(len("corrupted@")).astype(float).round(6)
    rows["fit_labels"] = "corrupted@"
    return rows


def model_test(logs: "pd.DataFrame", probes: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """``model,dataset,corruption,model_test,runs``: mean over runs of the test accuracy at each run's
    final epoch. With ``probes``: each probed run needs its train log, ending at its probed final epoch."""
    if probes is not None:
        probed = probes[~probes["fit_labels"].str.startswith("corrupted@")]
        finals = probed.groupby([*KEYS, "run"])["epoch"].max().reset_index()
        merged = finals.merge(logs, on=[*KEYS, "run"], how="left")
        lacking = merged[merged["final_epoch"].isna()]
        if not lacking.empty:
            r = lacking.iloc[0]
            raise ValueError(f"no train log given for {r['model']}-{r['dataset']} c={r['corruption']} run {r['run']} "
                             f"(its probe rows are in the probe tables)")
        stale = merged[merged["final_epoch"] != merged["epoch"]]
        if not stale.empty:
            r = stale.iloc[0]
            raise ValueError(f"train log {r['_file']} ends at epoch {int(r['final_epoch'])} but the probe tables' "
                             f"final epoch of that run is {int(r['epoch'])}: stale inputs")
        logs = logs.merge(finals[[*KEYS, "run"]], on=[*KEYS, "run"])
    return logs.groupby(KEYS).agg(model_test=("model_test", "mean"), runs=("run", "nunique")).reset_index()


# --------------------------------------------------------------------------------------------
# the tables


def _key_files(probes: "pd.DataFrame", key) -> str:
    m, d, c = key
    files = probes.loc[(probes["model"] == m) & (probes["dataset"] == d) & (probes["corruption"] == c), "_file"]
    return ", ".join(sorted(set(files))) or "no probe table"


def _add_best(table, keys, final, probes, probe: str, labels: str, name: str, with_input: bool = True):
    """``table`` with columns ``name``, ``name_layer``: ``probe``'s best layer for every key (or ValueError)."""
    best = best_layers(final, probe, labels, with_input=with_input)
    missing = keys.merge(best[KEYS], how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    if not missing.empty:
        key = tuple(missing.iloc[0][KEYS])
        raise ValueError(f"no {probe} test rows of a table layer with fit_labels={labels} for {key[0]}-{key[1]} "
                         f"c={key[2]} in {_key_files(probes, key)}")
    return table.merge(best[KEYS + ["accuracy", "layer"]].rename(columns={"accuracy": name, "layer": f"{name}_layer"}),
                       on=KEYS, how="inner")


def build_table_masc(probes: "pd.DataFrame", logs: "pd.DataFrame") -> "pd.DataFrame":
    """One row per model × degree: model test, MASC/VeLPIC × corrupted/true best layers, and
    ``masc_clean`` (the clean model with this degree's corrupted-label subspaces; empty without)."""
    final = final_rows(probes)
    table = model_test(logs, final)[KEYS + ["model_test"]]
    keys = final[~final["fit_labels"].str.startswith("corrupted@")][KEYS].drop_duplicates()
    for probe, labels in MASC_PAIRS:
        table = _add_best(table, keys, final, probes, probe, labels, f"{probe}_{labels}")
    clean = best_layers(clean_model_rows(final), "masc", "corrupted@")
    clean = clean[KEYS + ["accuracy", "layer"]].rename(columns={"accuracy": "masc_clean", "layer": "masc_clean_layer"})
    return _sorted(table.merge(clean, on=KEYS, how="left"))


def build_table_baselines(probes: "pd.DataFrame", logs: "pd.DataFrame") -> "pd.DataFrame":
    """Long: ``model,dataset,corruption,model_test,probe,fit_labels,accuracy,layer,runs`` per family × label set."""
    import pandas as pd

    final = final_rows(probes)
    present = [f for f in BASELINE_FAMILIES if f in set(final["probe"])]
    if not set(present) - {"masc", "velpic"}:
        raise ValueError(f"no baseline rows ({', '.join(BASELINE_FAMILIES[2:])}) in the probe tables "
                         f"{', '.join(sorted(set(probes['_file'])))}")
    parts = []
    for family in present:
        for labels in LABEL_SETS:
            best = best_layers(final, family, labels)
            if not best.empty:
                parts.append(best.assign(probe=family, fit_labels=labels))
    long = pd.concat(parts, ignore_index=True)
    table = model_test(logs, final)[KEYS + ["model_test"]].merge(long, on=KEYS, how="inner")
    table["_family"] = table["probe"].map(BASELINE_FAMILIES.index)
    table["_labels"] = table["fit_labels"].map(LABEL_SETS.index)
    table = _sorted(table, ["_labels", "_family"]).drop(columns=["_family", "_labels"])
    return table[[*KEYS, "model_test", "probe", "fit_labels", "accuracy", "layer", "runs"]]


def build_table_relabel(relabel: "pd.DataFrame") -> "pd.DataFrame":
    """Per model × degree × subspaces, means over runs. ``test_acc_80_after`` / ``test_acc_20_after``
    and ``gain_80`` are the **last** retraining epoch's, as the authors report (their script trains
    on and logs every epoch); ``test_acc_80_best`` / ``test_acc_20_best`` are early stopping's best
    epoch's (the result files' ``_after``). Per run (in run order, ``;``-joined): the chosen layer,
    epochs trained and best epoch; ``stopped_early`` counts runs stopped early."""
    import pandas as pd

    rows = []
    means = {"test_acc_80_before": "test_acc_80_before", "test_acc_80_after": "test_acc_80_last",
             "test_acc_80_best": "test_acc_80_after", "test_acc_20_before": "test_acc_20_before",
             "test_acc_20_after": "test_acc_20_last", "test_acc_20_best": "test_acc_20_after",
             "relabel_agreement_true": "relabel_agreement_true",
             "relabel_agreement_corrupted": "relabel_agreement_corrupted"}
    for key, group in relabel.sort_values("run").groupby([*KEYS, "subspaces"], sort=False):
        row = dict(zip([*KEYS, "subspaces"], key), runs=group["run"].nunique())
        row.update({name: group[source].mean() for name, source in means.items()})
        row["gain_80"] = row["test_acc_80_after"] - row["test_acc_80_before"]
        for c in ("layer", "epochs_trained", "best_epoch"):
            row[c] = ";".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in group[c])
        row["stopped_early"] = int(group["stopped_early"].astype(str).str.lower().isin(["true", "1", "1.0"]).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_subspaces"] = table["subspaces"].map(lambda s: LABEL_SETS.index(s) if s in LABEL_SETS else 9)
    table = _sorted(table, ["_subspaces"]).drop(columns="_subspaces")
    return table[[*KEYS, "subspaces", "runs", "test_acc_80_before", "test_acc_80_after", "gain_80",
                  "test_acc_80_best", "test_acc_20_before", "test_acc_20_after", "test_acc_20_best",
                  "relabel_agreement_true", "relabel_agreement_corrupted", "layer", "epochs_trained", "best_epoch",
                  "stopped_early"]]


def build_table_sensitivity(probes: "pd.DataFrame") -> "pd.DataFrame":
    """Per model × degree, MASC (corrupted-label subspaces) at its best hidden layer per variance
    threshold (never the input layer: the CNN's input rule is Table_values.ipynb's, whose tables do
    not cover the thresholds); the 0.99 column falls back to the ``masc`` rows where no
    ``masc_var0.99`` rows exist."""
    final = final_rows(probes)
    final = final[final["fit_labels"] == "corrupted"]
    table = final[final["probe"].isin([p for p, _ in SENSITIVITY])][KEYS].drop_duplicates()
    if table.empty:
        raise ValueError(f"no MASC sensitivity rows ({', '.join(p for p, _ in SENSITIVITY)}) with "
                         f"fit_labels=corrupted in {', '.join(sorted(set(probes['_file'])))}")
    keys = table.copy()
    for probe, _ in SENSITIVITY:
        source = probe if probe in set(final["probe"]) or probe != "masc_var0.99" else "masc"
        table = _add_best(table, keys, final, probes, source, "corrupted", probe, with_input=False)
    return _sorted(table)


def _sorted(table: "pd.DataFrame", extra: Sequence[str] = ()) -> "pd.DataFrame":
    order = {name: i for i, name in enumerate(registry.ARCHITECTURES)}
    table = table.assign(_arch=table["model"].map(lambda m: order.get(m, len(order))))
    table = table.sort_values(["_arch", "model", "dataset", *extra, "corruption"], kind="stable")
    return table.drop(columns="_arch").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# building a table


def build_table(name: str, probes: Sequence[str] = (), train_logs: Sequence[str] = (),
                relabel: Sequence[str] = ()) -> "pd.DataFrame":
    """The frame of table ``name`` from its input files (ValueError naming a missing kind)."""
    spec = get_table(name)
    given = {"probes": probes, "train_logs": train_logs, "relabel": relabel, "metrics": ()}
    for kind in spec.needs:
        if not given[kind]:
            raise ValueError(f"{name} needs {kind.replace('_', ' ')} (--{kind.replace('_', '-')}); none given")
    if name == "table_masc":
        return build_table_masc(read_probe_tables(probes), read_train_logs(train_logs))
    if name == "table_baselines":
        return build_table_baselines(read_probe_tables(probes), read_train_logs(train_logs))
    if name == "table_relabel":
        return build_table_relabel(read_relabel(relabel))
    return build_table_sensitivity(read_probe_tables(probes))
