"""The 2025 paper's baselines on a device (``latentgen.probing.device_baselines``) against the CPU code.

Run as ``python -m latentgen.bench baselines_device [--device cuda] [--n-train N] [--n-test N]``.
Data: the paper's MLP fc4 (2,048 wide, MNIST, random initialisation ``--seed``; without MNIST a
seeded synthetic matrix of that shape, and ``data`` says so), fit on the authors' corrupted
labels (``--corruption``, seed 42) and, for logistic regression, on the true ones too.

Timed in the same run, each pair on the same rows: 5-NN (``CosineKNN`` against
``cosine_kneighbors``), LDA (``fit_lda`` + predict against ``fit_lda_device`` +
``lda_predict_device``), QDA (``AuthorsQDA`` against ``DeviceQDA``; ``--no-qda`` skips it) and
logistic regression (one ``LogisticRegressionProbe`` per label set, one after the other, against
``fit_logistic_many``; ``--epochs``). ``*_ratio`` = CPU seconds of wall time / the device's.
Beside them: whether the 5-NN neighbours are identical and how many query rows the CPU decided
(near ties), the fraction of test predictions LDA and QDA agree on (and QDA's rows scored on the
host), whether every logistic fit equals its single fit bit for bit (on the CPU: the same device).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np


def add_arguments(parser) -> None:
    from latentgen.bench.probes import DEFAULT_DATA_ROOT

    parser.add_argument("--n-train", type=int, default=60000, help="training rows (default 60000)")
    parser.add_argument("--n-test", type=int, default=10000, help="test rows (default 10000)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="folder with MNIST/raw")
    parser.add_argument("--seed", type=int, default=0, help="MLP initialisation seed")
    parser.add_argument("--corruption", type=float, default=0.4, help="label corruption degree (default 0.4)")
    parser.add_argument("--device", default="auto", help="device of the device path: auto, cpu or cuda")
    parser.add_argument("--epochs", type=int, default=20, help="logistic regression epochs (default 20)")
    parser.add_argument("--no-qda", action="store_true", help="skip QDA (the slowest pair on a CPU)")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args) -> dict:
    import torch

    from latentgen.probing.baselines import CosineKNN, LogisticRegressionProbe
    from latentgen.bench.probes import fc4_activations
    from latentgen.probing.device_baselines import DeviceQDA, cosine_kneighbors, fit_lda_device, fit_logistic_many, \
        lda_predict_device
    from latentgen.devices import resolve_device
    from latentgen.probing.discriminant import AuthorsQDA, fit_lda
    from latentgen.data.labels import corrupt_labels

    device = resolve_device(args.device)
    x_train, y_true, x_test, y_test, data = fc4_activations(args.data_root, args.n_train, args.n_test, args.seed)
    y = corrupt_labels(np.asarray(y_true), args.corruption, int(np.max(y_true)) + 1, seed=42)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = {"data": data, "device": str(device), "cpus": os.cpu_count(), "n_train": len(x_train),
              "n_test": len(x_test), "n_features": int(x_train.shape[1]),
              "load_average_1min_before": os.getloadavg()[0]}

    if device.type == "cuda":  # CUDA's start-up and kernels' first loads are not the method's time
        cosine_kneighbors(x_train[:64], x_test[:8], 5, device)
        sync()

    reference, cpu_s = _timed(lambda: CosineKNN(5).fit(x_train).kneighbors(x_test))
    (ours, resolved), dev_s = _timed(lambda: cosine_kneighbors(x_train, x_test, 5, device, return_resolved=True))
    result.update(knn_cpu_s=cpu_s, knn_device_s=dev_s, knn_ratio=cpu_s / dev_s,
                  knn_identical=bool(np.array_equal(ours, reference)), knn_rows_decided_on_cpu=int(len(resolved)))

    cpu_pred, cpu_s = _timed(lambda: fit_lda(x_train, y).predict(x_test))
    dev_pred, dev_s = _timed(lambda: lda_predict_device(fit_lda_device(x_train, y, device), x_test, device))
    result.update(lda_cpu_s=cpu_s, lda_device_s=dev_s, lda_ratio=cpu_s / dev_s,
                  lda_agreement=float(np.mean(cpu_pred == dev_pred)),
                  lda_accuracy_gap=abs(float(np.mean(cpu_pred == y_test)) - float(np.mean(dev_pred == y_test))))

    if not args.no_qda:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # "Variables are collinear", once per class
            cpu_pred, cpu_s = _timed(lambda: AuthorsQDA().fit(x_train, y).predict(x_test))
            qda = DeviceQDA(device=device)
            dev_pred, dev_s = _timed(lambda: qda.fit(x_train, y).predict(x_test))
        result.update(qda_cpu_s=cpu_s, qda_device_s=dev_s, qda_ratio=cpu_s / dev_s,
                      qda_agreement=float(np.mean(cpu_pred == dev_pred)), qda_rows_scored_on_host=int(len(qda.resolved_)))

    problems = [(x_train, y), (x_train, np.asarray(y_true))]
    singles, cpu_s = _timed(lambda: [LogisticRegressionProbe(epochs=args.epochs, device=device).fit(*p)
                                     for p in problems])
    many, dev_s = _timed(lambda: fit_logistic_many(problems, epochs=args.epochs, device=device))
    result.update(logistic_problems=len(problems), logistic_single_fits_s=cpu_s, logistic_one_loop_s=dev_s,
                  logistic_ratio=cpu_s / dev_s,
                  logistic_identical=all(np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
                                         for a, b in zip(many, singles)))
    result["load_average_1min_after"] = os.getloadavg()[0]
    return result
