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

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def add_arguments(parser) -> None:
    parser.add_argument("--n-train", type=int, default=60000, help="training rows (default 60000)")
    parser.add_argument("--n-test", type=int, default=10000, help="test rows (default 10000)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                        help="folder holding MNIST/raw (default ../shared/data)")
    parser.add_argument("--variance", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0, help="MLP initialisation seed")
    parser.add_argument("--device", default="auto", help="device for our probes: auto, cpu or cuda")
    parser.add_argument("--reference-blas-threads", type=int, default=None,
                        help="limit the reference's BLAS threads (default: the library's own choice); "
                             "1 shields it from multi-threaded BLAS collapsing on shared cores")


# ------------------------------------------------------------------------------------------
# data


def _mnist_fc4(data_root, n_train: int, n_test: int, seed: int):
    from latentgen.datasets import load_dataset
    from latentgen.forward import iter_activations
    from latentgen.models import build_model

    data = load_dataset("mnist", data_root=data_root)
    model = build_model("mlp", "mnist", seed=seed).eval()

    def fc4(x):
        return torch.cat([acts["fc4"] for _, acts in iter_activations(model, x, ["fc4"], 10000)]).numpy()

    return (fc4(data.train_x[:n_train]), data.train_y[:n_train].numpy(),
            fc4(data.test_x[:n_test]), data.test_y[:n_test].numpy())


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
    from latentgen.probes import fit_probes

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
    root = Path(args.data_root)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        x_train, y_train, x_test, y_test = _mnist_fc4(root, args.n_train, args.n_test, args.seed)
        data = f"MNIST fc4 activations of the paper's MLP (random init, seed {args.seed})"
    else:
        x_train, y_train, x_test, y_test = _synthetic(args.n_train, args.n_test, args.seed)
        data = f"SYNTHETIC seeded matrix (MNIST not found under {root})"
    data_s = time.perf_counter() - t0
    classes = np.unique(y_train)

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
    }


def _resolved(device) -> str:
    from latentgen.devices import resolve_device

    return str(resolve_device(device))
