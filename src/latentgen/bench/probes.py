"""MASC + VeLPIC: our probes against the authors' procedure, on the paper's MLP fc4 (MNIST).

Data: real MNIST (``--data-root``, default ``../shared/data``), forwarded through the paper's MLP
randomly initialised with ``--seed``; the fc4 activations (after ReLU, 2048 wide) of the first
``--n-train`` training images (true labels) and of the 10,000 test images. Without MNIST, a
seeded synthetic matrix of the same shape stands in, and ``data`` says so.

Reference (SPEC §6–7, as the authors' code does it): per class an explicit ± augmented copy,
``np.cov``, float64 ``np.linalg.eigh``, sorted, r by the 99 % rule, rows normalised; all of it
repeated with one component for VeLPIC; MASC angles in float64 batches of 100 with ``acos``;
VeLPIC sign from the mean projection of all training rows, argmax of float64 projections.
Ours: ``fit_probes`` (one decomposition) and ``predict`` of both probes on the test rows, run
once before and once after the reference; ``ours_s`` is their mean (shared cores change load
during a long run). ``ratio`` = reference_s / ours_s (wall clock); ``cpu_ratio`` the same in
process CPU seconds. ``agreement`` is the smaller of the two probes' fractions of test rows
predicted identically; ``n_components_match`` compares r per class with the reference's.

**Every family** (``families_*``, skipped with ``--no-families``): the same fc4 layer probed as
``latentgen probe`` probes one layer (``latentgen.probing.checkpoint.probe_layer``: fit, then the test and,
for MASC, VeLPIC and the sensitivity, the training rows), with "corrupted" labels made by the
authors' corruption (``--corruption``, seed 42) and the true ones. ``families_alone_s``: MASC +
VeLPIC on the corrupted labels alone (today's probing of a layer); ``families_all_s``: every
layer family (``--families``) on both label sets (``--fit-labels``), in one pass;
``families_ratio`` = all / alone. ``family_<name>_<labels>_s`` is each family's own wall time
in that pass (MASC's includes the decomposition MASC, VeLPIC and the sensitivity share; the
k-NN's neighbour search is made once, on the first label set). ``--no-reference`` skips the
authors' procedure (minutes).

**LDA** (``--lda``, instead of the above): scikit-learn's svd solver against the gram route of
``latentgen.probing.discriminant`` on the same fc4 rows (``latentgen.bench.lda``).

**ResNet-18 peak memory** (``--resnet-memory``, instead of the above): the probes of one layer
of the ResNet's widest width (16,384 features, 50,000 training and 10,000 test rows, 10
classes; the probe job holds one layer at a time), on seeded random ReLU-like data (full rank:
the most MASC components any data can need). Each family alone and all of them together, as
one probe job runs them (``--memory-groups``), run on the ``--fit-labels`` sets in a fresh
process whose peak RSS (``ru_maxrss``) is reported, beside the RSS before probing (interpreter,
libraries and the layer's arrays). ``--scales`` shrinks the layer: width, training and test
rows all by the factor s, so that every array the probes make (n·d, d², n_k², r·d) shrinks by
s² — except k-NN's distance blocks, capped at scikit-learn's 1 GiB working memory; the peaks
measured at several s are fitted with ``a + b·s²`` and extrapolated to s = 1 (full size;
``--scales 1`` measures it, for the full-rank MASC predictions hours on two cores). The peak of
all families together is the largest family's plus what freed memory the allocator keeps,
which a quadratic in s does not model: ``families_max_full_size_peak_gib`` is the largest
single-family extrapolation.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from latentgen import registry

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def add_arguments(parser) -> None:
    parser.add_argument("--n-train", type=int, default=60000, help="training rows (default 60000)")
    parser.add_argument("--n-test", type=int, default=10000, help="test rows (default 10000)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                        help="folder holding MNIST/raw (default ../shared/data)")
    parser.add_argument("--variance", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0, help="MLP initialisation seed")
    parser.add_argument("--device", default="auto", help="device for our probes: auto, cpu or cuda")
    parser.add_argument("--no-reference", action="store_true", help="skip the authors' procedure (its timing)")
    parser.add_argument("--no-families", action="store_true", help="skip the timing of every probe family")
    parser.add_argument("--families", default=None,
                        help="layer families to time, comma-separated (default: every layer family)")
    parser.add_argument("--fit-labels", default="corrupted,true",
                        help="label sets the families are fit on (default corrupted,true; also --resnet-memory's)")
    parser.add_argument("--corruption", type=float, default=0.6,
                        help="degree of the corrupted labels the families are fit on (default 0.6)")
    parser.add_argument("--lda", action="store_true",
                        help="time LDA instead: scikit-learn's svd solver against the gram route (latentgen.bench.lda)")
    parser.add_argument("--resnet-memory", action="store_true",
                        help="measure the peak memory of the probes on one ResNet-18-wide layer instead")
    parser.add_argument("--scales", default="0.0625,0.125,0.25",
                        help="--resnet-memory: layer scales measured (1 = 16384 features, 50000 + 10000 rows)")
    parser.add_argument("--memory-groups", default="each,all",
                        help="--resnet-memory: measure each family alone (each), all together (all), or both")
    parser.add_argument("--reference-blas-threads", type=int, default=None,
                        help="limit the reference's BLAS threads (default: the library's own choice); "
                             "1 shields it from multi-threaded BLAS collapsing on shared cores")


# ------------------------------------------------------------------------------------------
# data


def _mnist_fc4(data_root, n_train: int, n_test: int, seed: int):
    from latentgen.data.datasets import load_dataset
    from latentgen.models.forward import iter_activations
    from latentgen.models.architectures import build_model

    data = load_dataset("mnist", data_root=data_root)
    model = build_model("mlp", "mnist", seed=seed).eval()

    def fc4(x):
        return torch.cat([acts["fc4"] for _, acts in iter_activations(model, x, ["fc4"], 10000)]).numpy()

    return (fc4(data.train_x[:n_train]), data.train_y[:n_train].numpy(),
            fc4(data.test_x[:n_test]), data.test_y[:n_test].numpy())


def fc4_activations(data_root, n_train: int, n_test: int, seed: int):
    """``(x_train, y_train, x_test, y_test, what)``: MNIST fc4 activations of the paper's MLP when
    MNIST is under ``data_root``, else a seeded synthetic matrix of the same shape (``what`` says which)."""
    root = Path(data_root)
    if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return (*_mnist_fc4(root, n_train, n_test, seed),
                f"MNIST fc4 activations of the paper's MLP (random init, seed {seed})")
    return (*_synthetic(n_train, n_test, seed), f"SYNTHETIC seeded matrix (MNIST not found under {root})")


def _synthetic(n_train: int, n_test: int, seed: int, d: int = 2048, classes: int = 10):
    """Non-negative, low-rank-plus-noise class clusters (ReLU-like), for machines without MNIST."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((classes, 64, d)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, classes, n)
        codes = rng.standard_normal((n, 64)).astype(np.float32)
        x = np.einsum("nr,nrd->nd", codes, basis[y]) + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
        return np.maximum(x + 1.0, 0).astype(np.float32), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test


# ------------------------------------------------------------------------------------------
# the authors' procedure


def reference_subspaces(X, y, classes, n):
    """Per class: explicit ± augmentation, np.cov, float64 np.linalg.eigh, r by the authors' rule."""
    from sklearn.preprocessing import normalize

    out = []
    for k in classes:
        Xk = X[y == k]
        augmented = np.empty((2 * len(Xk), X.shape[1]), dtype=X.dtype)
        augmented[0::2] = Xk
        augmented[1::2] = -Xk
        cov = np.cov(augmented, rowvar=False)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        if n < 1:
            ratio = np.cumsum(values) / values.sum()
            r = int(np.count_nonzero(ratio <= n)) + 1
        else:
            r = int(n)
        out.append(normalize(vectors.T[:r]))
    return out


def reference_masc_predict(X, subspaces, batch: int = 100):
    """float64 angles in batches of 100: proj = (x Pᵀ) P, acos of the cosine; argmin over classes."""
    P = [torch.from_numpy(p) for p in subspaces]
    preds = []
    for i in range(0, len(X), batch):
        x = torch.from_numpy(X[i:i + batch]).double()
        angles = []
        for p in P:
            proj = (x @ p.T) @ p
            cos = (x * proj).sum(1) / (x.norm(dim=1) * proj.norm(dim=1))
            angles.append(torch.acos(cos.clamp(-1, 1)) * 180 / math.pi)
        preds.append(torch.min(torch.stack(angles), dim=0).indices)
    return torch.cat(preds).numpy()


def reference_velpic(X_train, subspaces_1pc):
    """Class vectors: top PC flipped where the mean projection of all training rows is negative."""
    P = torch.from_numpy(np.concatenate(subspaces_1pc))
    mean_projection = (torch.from_numpy(X_train).double() @ P.T).mean(0)
    return torch.where(mean_projection[:, None] < 0, -P, P)


def reference_velpic_predict(X, vectors):
    return torch.max(torch.from_numpy(X).double() @ vectors.T, dim=1).indices.numpy()


# ------------------------------------------------------------------------------------------


def _ours(x_train, y_train, x_test, args) -> dict:
    """Fit both probes from one decomposition and predict the test rows; wall and CPU seconds."""
    from latentgen.probing.masc_velpic import fit_probes

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    masc, velpic = fit_probes(x_train, y_train, variance=args.variance, device=args.device)
    t1 = time.perf_counter()
    masc_pred, velpic_pred = masc.predict(x_test), velpic.predict(x_test)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"masc": masc, "masc_pred": masc_pred, "velpic_pred": velpic_pred,
            "fit_s": t1 - t0, "predict_s": t2 - t1, "s": t2 - t0, "cpu_s": c2 - c0}


def run(args) -> dict:
    if args.resnet_memory:
        return resnet_memory(args)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test, data = fc4_activations(args.data_root, args.n_train, args.n_test, args.seed)
    data_s = time.perf_counter() - t0
    if args.lda:
        from latentgen.bench.lda import run_lda

        return {"data": data, "cpus": os.cpu_count(), "load_average_1min_before": load_before,
                **run_lda(x_train, y_train, x_test, y_test, args), "load_average_1min_after": os.getloadavg()[0]}
    classes = np.unique(y_train)

    families = {} if args.no_families else time_families(x_train, y_train, x_test, y_test, args)
    if args.no_reference:
        return {"data": data, "n_train": int(len(x_train)), "n_test": int(len(x_test)),
                "n_features": int(x_train.shape[1]), "device": _resolved(args.device), "cpus": os.cpu_count(),
                "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
                "data_s": data_s, **families}
    # ours runs before and after the (long) reference and is averaged, so that a change of load
    # on shared cores during the run does not favour either side
    before = _ours(x_train, y_train, x_test, args)

    limit = (threadpool_limits(args.reference_blas_threads, user_api="blas")
             if args.reference_blas_threads else contextlib.nullcontext())
    with limit:
        c0 = time.process_time()
        t0 = time.perf_counter()
        ref_sub = reference_subspaces(x_train, y_train, classes, args.variance)
        ref_masc_fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref_vectors = reference_velpic(x_train, reference_subspaces(x_train, y_train, classes, 1))
        ref_velpic_fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref_masc = classes[reference_masc_predict(x_test, ref_sub)]
        ref_velpic = classes[reference_velpic_predict(x_test, ref_vectors)]
        ref_predict_s = time.perf_counter() - t0
        reference_cpu_s = time.process_time() - c0

    after = _ours(x_train, y_train, x_test, args)
    mean = {key: (before[key] + after[key]) / 2 for key in ("s", "fit_s", "predict_s", "cpu_s")}
    reference_s = ref_masc_fit_s + ref_velpic_fit_s + ref_predict_s
    masc_agreement = float(np.mean(before["masc_pred"] == ref_masc))
    velpic_agreement = float(np.mean(before["velpic_pred"] == ref_velpic))
    masc = before["masc"]
    ref_r = np.array([len(p) for p in ref_sub])
    return {
        "data": data,
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "n_features": int(x_train.shape[1]),
        "device": _resolved(args.device),
        "cpus": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "reference_blas_threads": args.reference_blas_threads or "default",
        "data_s": data_s,
        "ours_s": mean["s"],
        "reference_s": reference_s,
        "ratio": reference_s / mean["s"],
        "agreement": min(masc_agreement, velpic_agreement),
        "masc_agreement": masc_agreement,
        "velpic_agreement": velpic_agreement,
        "n_components_match": bool(np.array_equal(ref_r, masc.n_components_)),
        "n_components": masc.n_components_.tolist(),
        "repeatable": bool(np.array_equal(before["masc_pred"], after["masc_pred"])
                           and np.array_equal(before["velpic_pred"], after["velpic_pred"])),
        "ours_before_s": before["s"],
        "ours_after_s": after["s"],
        "ours_fit_s": mean["fit_s"],
        "ours_predict_s": mean["predict_s"],
        "reference_masc_fit_s": ref_masc_fit_s,
        "reference_velpic_fit_s": ref_velpic_fit_s,
        "reference_predict_s": ref_predict_s,
        "ours_cpu_s": mean["cpu_s"],
        "reference_cpu_s": reference_cpu_s,
        "cpu_ratio": reference_cpu_s / mean["cpu_s"],
        "masc_test_accuracy": float(np.mean(before["masc_pred"] == y_test)),
        "velpic_test_accuracy": float(np.mean(before["velpic_pred"] == y_test)),
        **families,
    }


# ------------------------------------------------------------------------------------------
# every family


class _Arrays:
    """What ``LayerContext`` reads from an activations file, from arrays in memory."""

    def __init__(self, train: dict, test: dict):
        self.arrays = {"train": train, "test": test}

    def array(self, split, layer):
        return self.arrays[split][layer]


def _layer_families(names: str | None) -> list:
    from latentgen import registry

    chosen = [n.strip() for n in names.split(",")] if names else [
        n for n, f in registry.PROBE_FAMILIES.items() if not f.needs_checkpoint]
    for name in chosen:
        if registry.get_probe_family(name).needs_checkpoint:
            raise ValueError(f"family {name!r} runs the network: it cannot be timed on a layer")
    return [(registry.PROBE_FAMILIES[n], registry.load(registry.PROBE_FAMILIES[n].impl))
            for n in registry.PROBE_FAMILIES if n in chosen]


def _options(families: list, device, variance: float = 0.99):
    from latentgen import registry
    from latentgen.devices import resolve_device
    from latentgen.probing.contexts import ProbeOptions

    extra_v, extra_n = (), ()
    if any(f.name == "masc_sensitivity" for f, _ in families):
        extra_v = tuple(v for _, v, n in registry.MASC_SENSITIVITY if n is None)
        extra_n = tuple(n for _, _, n in registry.MASC_SENSITIVITY if n is not None)
    return ProbeOptions(variance, "all", 1000, resolve_device(device), registry.LOGISTIC_SEED, extra_v, extra_n)


def _layer_context(x_train, x_test, labels, options, name="fc4"):
    from latentgen.probing.contexts import LayerContext

    classes = np.arange(int(max(labels["train_true"].max(), labels["test"].max())) + 1)
    return LayerContext(_Arrays({name: x_train}, {name: x_test}), name, ("bench", "bench", 0.0, 1, 0), labels,
                        classes, options)


def time_families(x_train, y_true, x_test, y_test, args) -> dict:
    """MASC + VeLPIC alone, then every family on both label sets, on one layer (module docstring)."""
    from latentgen import registry
    from latentgen.data.labels import corrupt_labels
    from latentgen.probing.baselines import LogisticRegressionProbe
    from latentgen.probing.checkpoint import probe_layer, resolve_fit_labels

    num_classes = int(max(y_true.max(), y_test.max())) + 1
    labels = {"test": y_test, "train_true": y_true,
              "train_corrupted": corrupt_labels(y_true, args.corruption, num_classes, seed=registry.LABEL_SEED)}
    families = _layer_families(args.families)
    fit_labels = resolve_fit_labels(args.fit_labels)
    # first calls pay one-off costs (torch's autograd and Adam, scikit-learn imports): not a family's
    warm = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    LogisticRegressionProbe(epochs=1, device=args.device).fit(warm, np.arange(64) % 2)
    import sklearn.discriminant_analysis  # noqa: F401

    alone = [(f, impl) for f, impl in _layer_families("masc,velpic")]
    context = _layer_context(x_train, x_test, labels, _options(alone, args.device, args.variance))
    t0 = time.perf_counter()
    probe_layer(context, alone, {"corrupted": None}, ("corrupted",))
    alone_s = time.perf_counter() - t0

    timings: dict[str, float] = {}
    context = _layer_context(x_train, x_test, labels, _options(families, args.device, args.variance))
    t0 = time.perf_counter()
    rows = probe_layer(context, families, dict.fromkeys(fit_labels), fit_labels,
                       on_family=lambda name, labels_, s: timings.__setitem__(f"family_{name}_{labels_}_s", s))
    all_s = time.perf_counter() - t0
    per_family = {f.name: sum(v for k, v in timings.items() if k.startswith(f"family_{f.name}_")) for f, _ in families}
    slowest = max(per_family, key=per_family.get)
    accuracies = {f"accuracy_{r.probe}_{r.fit_labels}": r.accuracy for r in rows if r.split == "test"}
    return {"families": ",".join(f.name for f, _ in families), "families_fit_labels": ",".join(fit_labels),
            "families_alone_s": alone_s, "families_all_s": all_s, "families_ratio": all_s / alone_s,
            "families_slowest": slowest, "families_slowest_s": per_family[slowest], **timings, **accuracies}


# ------------------------------------------------------------------------------------------
# ResNet-18 peak memory

RESNET_WIDTH, RESNET_TRAIN, RESNET_TEST, RESNET_CLASSES = 16384, 50000, 10000, 10


def _random_layer(n: int, d: int, seed: int) -> np.ndarray:
    """Seeded ReLU(N(0, 1)) rows, float32, made in place (no float64 copy)."""
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    np.maximum(x, 0, out=x)
    return x


def _rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(spec: dict) -> dict:
    """In a fresh process: one layer of ``spec`` shape, the families of ``spec``, peak RSS."""
    import resource

    from latentgen.data.labels import corrupt_labels
    from latentgen.probing.checkpoint import probe_layer

    n, d, n_test = spec["n_train"], spec["width"], spec["n_test"]
    rng = np.random.default_rng(spec["seed"])
    y_true = rng.integers(0, RESNET_CLASSES, n)
    labels = {"test": rng.integers(0, RESNET_CLASSES, n_test), "train_true": y_true,
              "train_corrupted": corrupt_labels(y_true, 0.6, RESNET_CLASSES, seed=42)}
    x_train, x_test = _random_layer(n, d, spec["seed"] + 1), _random_layer(n_test, d, spec["seed"] + 2)
    families = _layer_families(spec["families"])
    context = _layer_context(x_train, x_test, labels, _options(families, spec["device"]), name="l0")
    before = _rss_bytes()
    t0 = time.perf_counter()
    fit_labels = tuple(spec.get("fit_labels", registry.FIT_LABEL_SETS))
    rows = probe_layer(context, families, dict.fromkeys(fit_labels), fit_labels)
    seconds = time.perf_counter() - t0
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, _rss_bytes("VmHWM"))
    return {"before_bytes": before, "peak_bytes": peak, "seconds": seconds,
            "nan_rows": sum(1 for r in rows if r.accuracy != r.accuracy)}


def _run_child(spec: dict, timeout: float | None) -> dict:
    import json
    import subprocess
    import sys

    code = ("import json, sys; from latentgen.bench.probes import memory_child; "
            "print('RESULT ' + json.dumps(memory_child(json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"memory measurement of {spec['families']} at width {spec['width']} failed "
                       f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def resnet_memory(args) -> dict:
    """Peak RSS of one ResNet-wide layer's probes, per family and all together (module docstring)."""
    gib = float(1 << 30)
    scales = sorted(float(s) for s in args.scales.split(","))
    families = [f.name for f, _ in _layer_families(args.families)]
    wanted = {g.strip() for g in args.memory_groups.split(",")}
    groups = [*(families if "each" in wanted else []), *([",".join(families)] if "all" in wanted else [])]
    result: dict = {"width": RESNET_WIDTH, "n_train": RESNET_TRAIN, "n_test": RESNET_TEST, "classes": RESNET_CLASSES,
                    "scales": ",".join(map(str, scales)), "cpus": os.cpu_count(),
                    "load_average_1min_before": os.getloadavg()[0]}
    for group in groups:
        label = "all" if "," in group else group
        peaks = []
        for s in scales:
            spec = {"width": max(1, round(RESNET_WIDTH * s)), "n_train": max(RESNET_CLASSES * 4, round(RESNET_TRAIN * s)),
                    "n_test": max(1, round(RESNET_TEST * s)), "families": group, "seed": args.seed,
                    "device": args.device, "fit_labels": args.fit_labels.split(",")}
            measured = _run_child(spec, timeout=None)
            peaks.append(measured["peak_bytes"])
            result[f"{label}_s{s:g}_peak_gib"] = measured["peak_bytes"] / gib
            result[f"{label}_s{s:g}_before_gib"] = measured["before_bytes"] / gib
            result[f"{label}_s{s:g}_seconds"] = measured["seconds"]
            result[f"{label}_s{s:g}_nan_rows"] = measured["nan_rows"]
        if len(scales) >= 2:  # peak = a + b s², least squares
            A = np.stack([np.ones(len(scales)), np.square(scales)], axis=1)
            (a, b), *_ = np.linalg.lstsq(A, np.array(peaks, dtype=float), rcond=None)
            result[f"{label}_full_size_peak_gib"] = (a + b) / gib
    singles = [result[f"{f}_full_size_peak_gib"] for f in families if f"{f}_full_size_peak_gib" in result]
    if singles:
        result["families_max_full_size_peak_gib"] = max(singles)
    result["load_average_1min_after"] = os.getloadavg()[0]
    return result


def _resolved(device) -> str:
    from latentgen.devices import resolve_device

    return str(resolve_device(device))
