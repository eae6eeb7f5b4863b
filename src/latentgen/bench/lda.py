"""LDA: the gram route (``latentgen.probing.discriminant.fit_lda``) against scikit-learn's svd solver.

Run as ``python -m latentgen.bench probes --lda [--n-train N] [--n-test N]``: the paper's MLP fc4
(2,048 features, MNIST, random initialisation ``--seed``; a synthetic matrix of that shape without
MNIST) with the authors' corrupted labels (``--corruption``, seed 42). Timed: scikit-learn's
``LinearDiscriminantAnalysis().fit`` on the float32 rows (what the authors ran, with 1/n where
theirs had 1/(n − K)) and ``fit_lda`` (1/(n − K), the gram route). ``lda_ratio`` = scikit-learn's
wall time / ours. Reported beside: the within-class ranks, the between-class ranks, each test
accuracy and the fraction of test rows predicted alike (scikit-learn on float32 rounds its SVD in
float32; see ``latentgen.probing.discriminant``).
"""

from __future__ import annotations

import time

import numpy as np


def run_lda(x_train, y_true, x_test, y_test, args) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from latentgen.probing.discriminant import fit_lda
    from latentgen.data.labels import corrupt_labels

    y = corrupt_labels(np.asarray(y_true), args.corruption, int(np.max(y_true)) + 1, seed=42)
    t0 = time.perf_counter()
    reference = LinearDiscriminantAnalysis().fit(x_train, y)
    sklearn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = fit_lda(x_train, y, method="gram")
    ours_s = time.perf_counter() - t0
    predicted_ref, predicted = reference.predict(x_test), ours.predict(x_test)
    return {"lda_n_train": int(len(x_train)), "lda_n_features": int(x_train.shape[1]),
            "lda_sklearn_s": sklearn_s, "lda_gram_s": ours_s, "lda_ratio": sklearn_s / ours_s,
            "lda_within_rank": int(ours.within_rank_), "lda_between_rank_sklearn": int(reference.scalings_.shape[1]),
            "lda_between_rank_gram": int(ours.scalings_.shape[1]),
            "lda_accuracy_sklearn": float(np.mean(predicted_ref == y_test)),
            "lda_accuracy_gram": float(np.mean(predicted == y_test)),
            "lda_agreement": float(np.mean(predicted == predicted_ref))}
