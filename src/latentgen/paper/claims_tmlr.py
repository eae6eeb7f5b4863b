"""The TMLR paper's claims (metrics over training): the measures of ``latentgen.paper.claims.CLAIMS``'
``tmlr2026`` entries. Conventions: ``latentgen.paper.claims``' docstring."""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentgen import registry
from latentgen.paper.claims_common import KEYS, MEMORIZING, PEAK_WINDOW, Claim, NotEvaluable, degrees as _degrees, pct
from latentgen.paper.claims_common import per_model as _per_model

_pct = pct

if TYPE_CHECKING:
    import pandas as pd

    from latentgen.paper.claims import Inputs


def _metrics_final(metrics: "pd.DataFrame", probe: str, split: str) -> "pd.Series":
    """Mean over runs at each run's last probed epoch, per model/dataset/degree/layer."""
    probed = metrics[metrics["probe"] != "model"]
    last = probed.groupby([*KEYS, "run"])["epoch"].max().rename("final").reset_index()
    rows = metrics[(metrics["probe"] == probe) & (metrics["split"] == split)].merge(last, on=[*KEYS, "run"])
    rows = rows[rows["epoch"] == rows["final"]]
    return rows.groupby([*KEYS, "layer"])["accuracy"].mean()


def _curves(metrics: "pd.DataFrame", probe: str, split: str) -> "pd.Series":
    """Mean over runs per model/dataset/degree/layer/epoch, at the epochs every run was probed at."""
    probed = metrics[metrics["probe"] != "model"]
    runs = probed.groupby(KEYS)["run"].nunique().rename("runs")
    per_epoch = probed.groupby([*KEYS, "epoch"])["run"].nunique().rename("n").reset_index()
    common = per_epoch.merge(runs.reset_index(), on=KEYS)
    common = common[common["n"] == common["runs"]][[*KEYS, "epoch"]]
    rows = metrics[(metrics["probe"] == probe) & (metrics["split"] == split)].merge(common, on=[*KEYS, "epoch"])
    return rows.groupby([*KEYS, "layer", "epoch"])["accuracy"].mean()


def _series(curves: "pd.Series", key: tuple, layer: str) -> "pd.Series":
    try:
        return curves.loc[(*key, layer)].sort_index()
    except KeyError:
        return curves.iloc[:0]


def _hidden_layers(values: "pd.Series", key: tuple) -> list[str]:
    from latentgen.paper.tables import INPUT_LAYER, layer_rank

    try:
        layers = set(values.loc[key].index.get_level_values(0))
    except KeyError:
        return []
    return sorted((x for x in layers if x not in (INPUT_LAYER, "model")), key=lambda x: (layer_rank(key[0], x), x))


def _peaks_coincide(inp: Inputs):
    met = inp.metrics
    masc, model = _curves(met, "masc", "test"), _curves(met, "model", "test")

    def measure(m, d, rows):
        cells, notes = [], []
        for c in _degrees(rows, *MEMORIZING, "metrics"):
            key = (m, d, c)
            base = _series(model, key, "model")
            base = base[base.index > 0]
            if base.empty:
                raise NotEvaluable(f"no model test rows at probed epochs for c={_pct(c)}")
            epochs = list(base.index)
            peak = epochs.index(base.idxmax())
            elsewhere = []
            for layer in _hidden_layers(masc, key):
                at = epochs.index(_series(masc, key, layer).reindex(epochs).idxmax())
                cells.append(abs(at - peak) <= PEAK_WINDOW)
                if not cells[-1]:
                    elsewhere.append(f"{layer} at {epochs[at]}")
            notes.append(f"c={_pct(c)}: model peaks at epoch {epochs[peak]}"
                         + (f", MASC {', '.join(elsewhere)}" if elsewhere else ", every layer within the window"))
        if not cells:
            raise NotEvaluable("no non-input MASC test rows in the metrics")
        share = sum(cells) / len(cells)
        return share, share >= 0.75, "; ".join(notes)

    yield from _per_model(met, measure)


def _latent_declines_less(inp: Inputs):
    import pandas as pd

    met = inp.metrics
    masc, model = _curves(met, "masc", "test"), _curves(met, "model", "test")

    def measure(m, d, rows):
        ok, notes = [], []
        for c in _degrees(rows, *MEMORIZING, "metrics"):
            key = (m, d, c)
            base = _series(model, key, "model")
            layers = _hidden_layers(masc, key)
            if base.empty or not layers:
                raise NotEvaluable(f"no model or MASC test curve for c={_pct(c)}")
            best = pd.concat([_series(masc, key, x) for x in layers], axis=1).max(axis=1)
            best, base = best.reindex(base.index).dropna(), base.reindex(best.index).dropna()
            drop_b, drop_m = best.max() - best.iloc[-1], base.max() - base.iloc[-1]
            ok.append(bool(drop_b < drop_m and best.iloc[-1] > base.iloc[-1]))
            notes.append(f"c={_pct(c)}: drop MASC {100 * drop_b:.1f} vs model {100 * drop_m:.1f} pp, final "
                         f"{100 * best.iloc[-1]:.1f} vs {100 * base.iloc[-1]:.1f} %")
        share = sum(ok) / len(ok)
        return share, share == 1, "; ".join(notes)

    yield from _per_model(met, measure)


def _velpic_ge_masc(inp: Inputs):
    met = inp.metrics
    masc, velpic = _metrics_final(met, "masc", "test"), _metrics_final(met, "velpic", "test")

    def measure(m, d, rows):
        cells, fails = 0, []
        for c in _degrees(rows, 0.6, MEMORIZING[1], "metrics"):
            for layer in _hidden_layers(masc, (m, d, c)):
                if (m, d, c, layer) not in velpic.index:
                    continue
                cells += 1
                diff = velpic[(m, d, c, layer)] - masc[(m, d, c, layer)]
                if diff < 0:
                    fails.append(f"c={_pct(c)} {layer} {100 * diff:+.1f} pp")
        if not cells:
            raise NotEvaluable(f"no layer with both MASC and VeLPIC test rows at c in 60–{_pct(MEMORIZING[1])}")
        share = 1 - len(fails) / cells
        return share, share >= 0.9, f"{cells - len(fails)}/{cells} layer × degree cells; VeLPIC < MASC at: " + (
            ", ".join(fails) or "none")

    yield from _per_model(met, measure)


def _velpic_all_layers_beat_model(inp: Inputs):
    met = inp.metrics
    velpic, model = _metrics_final(met, "velpic", "test"), _metrics_final(met, "model", "test")

    def measure(m, d, rows):
        ok, notes = [], []
        for c in _degrees(rows, 0.2, 1.0, "metrics"):
            key = (m, d, c)
            if (*key, "model") not in model.index or not _hidden_layers(velpic, key):
                raise NotEvaluable(f"no final model or VeLPIC test rows for c={_pct(c)}")
            worst = min(_hidden_layers(velpic, key), key=lambda x: velpic[(*key, x)])
            margin = velpic[(*key, worst)] - model[(*key, "model")]
            ok.append(bool(margin > 0))
            notes.append(f"c={_pct(c)}: weakest layer {worst} {100 * margin:+.1f} pp")
        share = sum(ok) / len(ok)
        return share, share > 0.5, "; ".join(notes)

    yield from _per_model(met, measure)


def _transfer_beats_model(inp: Inputs):
    met = inp.metrics
    transfer, model = _curves(met, "transfer", "test"), _curves(met, "model", "test")

    def measure(m, d, rows):
        margins = {}
        for c in _degrees(rows, *MEMORIZING, "metrics"):
            key = (m, d, c)
            curve = _series(transfer, key, _last_hidden(m, transfer, key))
            base = _series(model, key, "model")
            if curve.empty or base.empty:
                raise NotEvaluable(f"no transfer or model test curve for c={_pct(c)}")
            half = base.index.max() / 2
            for e in [e for e in curve.index if e >= half and e > 0 and e in base.index]:
                margins[(c, e)] = float(curve[e] - base[e])
        if not margins:
            raise NotEvaluable("no probed epoch in the latter half of training")
        worst = min(margins, key=margins.get)
        wins = sum(v > 0 for v in margins.values())
        return margins[worst], margins[worst] > 0, (f"transfer > model at {wins}/{len(margins)} (degree, epoch) "
                                                    f"cells; worst c={_pct(worst[0])} epoch {worst[1]}")

    yield from _per_model(met, measure)


def _last_hidden(model: str, frame: "pd.Series", key: tuple) -> str:
    arch = registry.find_architecture(model)
    if arch is not None:
        return arch.last_hidden
    layers = _hidden_layers(frame, key)
    return layers[-1] if layers else ""


def _transfer_equals_velpic(inp: Inputs):
    met = inp.metrics
    test = met[met["split"] == "test"]
    idx = [*KEYS, "run", "epoch", "layer"]  # transfer rows sit on the last hidden layer, VeLPIC's there

    def measure(m, d, rows):
        transfer = rows[rows["probe"] == "transfer"].set_index(idx)["accuracy"]
        velpic = rows[rows["probe"] == "velpic"].set_index(idx)["accuracy"]
        diff = (transfer - velpic).dropna()
        if diff.empty:
            raise NotEvaluable("no checkpoint with both transfer and VeLPIC test rows on the same layer")
        worst = diff.abs().idxmax()
        return float(diff.abs().max()), diff.abs().max() <= 0.005, (
            f"{len(diff)} checkpoints compared; largest at run {worst[3]} epoch {worst[4]} ({worst[5]})")

    yield from _per_model(test, measure)


def _fig13_true_fraction(inp: Inputs):
    met = inp.metrics
    transfer = _metrics_final(met, "transfer", "train_corrupted")

    def measure(m, d, rows):
        k = data.num_classes if (data := registry.find_dataset(d)) else None
        if k is None:
            raise NotEvaluable(f"dataset {d} is not registered (its number of classes is unknown)")
        devs = {}
        for c in _degrees(rows, 0.0, 0.99, "metrics"):
            if (m, d, c) in transfer.index.droplevel("layer"):
                devs[c] = float(transfer.loc[(m, d, c)].iloc[0]) - (1 - c + c / k)
        if not devs:
            raise NotEvaluable("no transfer train_corrupted rows at c < 1")
        worst = max(devs, key=lambda c: abs(devs[c]))
        return abs(devs[worst]), abs(devs[worst]) <= 0.10, "transfer − (1 − c + c/K): " + "; ".join(
            f"c={_pct(c)}: {100 * v:+.1f} pp" for c, v in devs.items())

    yield from _per_model(met, measure)


def _masc_matches_model_c0(inp: Inputs):
    met = inp.metrics
    masc, model = _metrics_final(met, "masc", "test"), _metrics_final(met, "model", "test")
    rows = met[met["model"].isin(["mlp", "cnn"])]
    if rows.empty:
        raise NotEvaluable("the claim is about the MLP and the CNN; neither is in the metrics")

    def measure(m, d, part):
        last = registry.get_architecture(m).last_hidden
        key = (m, d, 0.0)
        if (*key, last) not in masc.index or (*key, "model") not in model.index:
            raise NotEvaluable(f"no final MASC ({last}) or model test rows at c=0%")
        diff = float(masc[(*key, last)] - model[(*key, "model")])
        return abs(diff), abs(diff) <= 0.02, f"MASC {last} − model at c=0%: {100 * diff:+.1f} pp"

    yield from _per_model(rows, measure)


# later layers best for the MLP, earlier for the CNN (TMLR §4): (early layer, late layer, which should win)
LAYER_ORDER = {"mlp": ("fc1", "fc4", "late"), "cnn": ("flatten", "fc3", "early")}


def _layer_order(inp: "Inputs"):
    met = inp.metrics
    masc = _metrics_final(met, "masc", "test")
    rows = met[met["model"].isin(list(LAYER_ORDER))]
    if rows.empty:
        raise NotEvaluable("the claim is about the MLP and the CNN; neither is in the metrics")

    def measure(m, d, part):
        early, late, winner = LAYER_ORDER[m]
        ok, notes = [], []
        for c in _degrees(part, *MEMORIZING, "metrics"):
            if (m, d, c, early) not in masc.index or (m, d, c, late) not in masc.index:
                raise NotEvaluable(f"no final MASC test rows of {early} and {late} at c={pct(c)}")
            diff = float(masc[(m, d, c, late)] - masc[(m, d, c, early)])
            ok.append(diff > 0 if winner == "late" else diff < 0)
            notes.append(f"c={pct(c)}: {late} − {early} {100 * diff:+.1f} pp")
        share = sum(ok) / len(ok)
        return share, share > 0.5, f"{winner} layers should win; " + "; ".join(notes)

    yield from _per_model(rows, measure)


CLAIMS = [
    Claim("peaks_coincide", "tmlr2026", "Abstract; §1 contributions",
          "as the model's test accuracy peaks early in training, MASC test accuracy at all layers largely peaks "
          "concurrently",
          f"c in 20–80 %: per non-input layer, the epoch of its peak mean MASC test accuracy lies within "
          f"±{PEAK_WINDOW} probed checkpoints of the model's peak (epoch 0 excluded); holds when ≥ 75 % of the "
          f"layer × degree cells do; measured = that share", ("metrics",), _peaks_coincide),
    Claim("latent_declines_less", "tmlr2026", "Abstract; §1 contributions",
          "after the peak, model generalization degrades steeply while latent generalization falls more modestly "
          "and plateaus higher",
          "for every c in 20–80 %: the best-layer MASC curve (max over non-input layers of the run mean) drops less "
          "from its peak to the last common epoch than the model's curve, and ends above it; measured = share of "
          "degrees where both hold", ("metrics",), _latent_declines_less),
    Claim("velpic_ge_masc_high_c", "tmlr2026", "§6.1",
          "VeLPIC almost always outperforms MASC, especially at higher corruption degrees",
          "c in 60–80 % (100 % is chance level), each non-input layer at the final probed epoch (run means): VeLPIC "
          "≥ MASC in ≥ 90 % of the layer × degree cells; measured = that share", ("metrics",), _velpic_ge_masc),
    Claim("velpic_all_layers_beat_model", "tmlr2026", "§8",
          "with VeLPIC, in most cases all layers' latent generalization outperforms model generalization",
          "share of degrees c ≥ 0.2 where every non-input layer's final VeLPIC test accuracy > the model's "
          "exceeds 0.5; measured = that share", ("metrics",), _velpic_all_layers_beat_model),
    Claim("transfer_beats_model", "tmlr2026", "§7",
          "replacing the pre-softmax weights by VeLPIC vectors improves test accuracy in every epoch of the latter "
          "phase of training, without further training",
          "c in 20–80 %, every probed epoch in the latter half of training (≥ half the last common epoch): "
          "transfer − model test > 0; measured = the smallest margin", ("metrics",), _transfer_beats_model),
    Claim("transfer_equals_velpic", "tmlr2026", "§7, Eq. (3)",
          "the substitution makes the model predict exactly as VeLPIC on the last hidden layer",
          "max over checkpoints of |transfer test − VeLPIC (last hidden layer) test| ≤ 0.005; measured = that "
          "maximum", ("metrics",), _transfer_equals_velpic),
    Claim("fig13_true_fraction", "tmlr2026", "Fig. 13 caption",
          "except at 100 % corruption, train accuracy (corrupted labels) after the transfer saturates near the "
          "fraction of true labels, 1 − c + c/K",
          "every c < 1 at the final probed epoch (run means): |transfer train accuracy − (1 − c + c/K)| ≤ 0.10; "
          "measured = the largest deviation", ("metrics",), _fig13_true_fraction),
    Claim("masc_matches_model_c0", "tmlr2026", "App. C",
          "without label corruption, MASC on the last hidden layer (MLP FC4, CNN FC3) closely matches the model's "
          "test accuracy",
          "c = 0, final probed epoch (run means): |MASC (last hidden layer) − model test| ≤ 0.02; measured = that "
          "difference", ("metrics",), _masc_matches_model_c0),
    Claim("layer_order", "tmlr2026", "§4",
          "for non-zero corruption degrees (except 100 %), in most cases MASC performs better on later layers than on "
          "early ones for the MLP, and on early layers for the CNN",
          f"MLP and CNN, c in {pct(MEMORIZING[0])}–{pct(MEMORIZING[1])}, final probed epoch (run means): MASC on the "
          "last hidden layer > on the first (MLP: FC4 > FC1), or the reverse for the CNN (Flat > FC3), in more than "
          "half of the degrees; measured = that share", ("metrics",), _layer_order),
]
