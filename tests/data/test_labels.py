"""Label corruption: the authors' procedure (SPEC §2) bit for bit, its statistics, determinism,
nesting across degrees, bad input, and the label file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from latentgen.data.labels import LabelFile, corrupt_labels, read_label_file, write_label_file

DEGREES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.fixture
def global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def authors_corrupt(labels, c, n_classes, strict=False):
    """SPEC §2 as the authors wrote it: the global numpy generator, seeded with 42."""
    labels = np.array(labels)
    np.random.seed(42)
    draws = np.random.rand(len(labels))
    mask = draws < c if strict else draws <= c
    labels[mask] = np.random.choice(n_classes, mask.sum())
    return labels


def reference_mask(n, c, seed, strict=False):
    draws = np.random.RandomState(seed).rand(n)
    return draws < c if strict else draws <= c


def binomial_tolerance(p, n, z=5.0):
    return z * math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.mark.parametrize("k", [10, 100, 200])
@pytest.mark.parametrize("strict", [False, True])
def test_equals_authors_code(global_numpy_rng, k, strict):
    labels = np.random.RandomState(1).randint(0, k, size=5000)
    for c in DEGREES:
        ours = corrupt_labels(labels, c, k, seed=42, strict=strict)
        assert ours.dtype == np.int64
        assert np.array_equal(ours, authors_corrupt(labels, c, k, strict=strict))


@pytest.mark.parametrize("k", [10, 100])
@pytest.mark.parametrize("c", [0.2, 0.6, 1.0])
def test_fraction_changed_matches_expectation(k, c):
    n = 60000
    labels = np.random.RandomState(2).randint(0, k, size=n)
    for seed in (0, 42):
        changed = np.mean(corrupt_labels(labels, c, k, seed=seed) != labels)
        expected = c * (1 - 1 / k)  # chosen with prob c, then differs with prob 1 - 1/K
        assert abs(changed - expected) < binomial_tolerance(expected, n)


def test_replacements_uniform_over_all_classes():
    k, n, c, seed = 10, 50000, 0.8, 7
    labels = np.zeros(n, dtype=np.int64)  # all class 0: a replacement drawn uniformly hits 0 with prob 1/K
    corrupted = corrupt_labels(labels, c, k, seed=seed)
    mask = reference_mask(n, c, seed)
    assert np.array_equal(corrupted[~mask], labels[~mask])
    counts = np.bincount(corrupted[mask], minlength=k)
    assert stats.chisquare(counts).pvalue > 1e-6  # uniform, including the true class
    assert abs(counts[0] / mask.sum() - 1 / k) < binomial_tolerance(1 / k, mask.sum())


def test_deterministic_and_seeded():
    labels = np.random.RandomState(3).randint(0, 10, size=2000)
    a = corrupt_labels(labels, 0.5, 10, seed=11)
    assert np.array_equal(a, corrupt_labels(labels, 0.5, 10, seed=11))
    assert not np.array_equal(a, corrupt_labels(labels, 0.5, 10, seed=12))
    assert np.array_equal(corrupt_labels(labels, 0.5, 10), corrupt_labels(labels, 0.5, 10, seed=42))  # default seed
    original = labels.copy()
    corrupt_labels(labels, 1.0, 10)
    assert np.array_equal(labels, original)  # input untouched


def test_masks_nested_across_degrees():
    n, k, seed = 20000, 10, 42
    labels = np.random.RandomState(4).randint(0, k, size=n)
    previous_mask = np.zeros(n, dtype=bool)
    for c in DEGREES:
        mask = reference_mask(n, c, seed)
        changed = corrupt_labels(labels, c, k, seed=seed) != labels
        assert not np.any(changed & ~mask)  # only masked rows change
        assert not np.any(previous_mask & ~mask)  # masks grow with c
        assert abs(mask.mean() - c) < binomial_tolerance(c, n)
        previous_mask = mask


def test_edge_degrees():
    labels = np.random.RandomState(5).randint(0, 10, size=3000)
    assert np.array_equal(corrupt_labels(labels, 0.0, 10), labels)
    assert np.array_equal(corrupt_labels(labels, 0.0, 10, strict=True), labels)
    every = corrupt_labels(labels, 1.0, 10, strict=True)  # rand() < 1 always: every row redrawn
    expected = np.random.RandomState(42)
    expected.rand(len(labels))
    assert np.array_equal(every, expected.choice(10, len(labels)))
    assert np.array_equal(corrupt_labels(np.array([], dtype=np.int64), 0.5, 10), np.array([], dtype=np.int64))


@pytest.mark.parametrize("degree", [-0.1, 1.5, float("nan"), "high"])
def test_bad_degree(degree):
    with pytest.raises(ValueError, match="degree"):
        corrupt_labels(np.array([0, 1, 2]), degree, 10)


def test_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        corrupt_labels(np.array([0, 10]), 0.5, 10)
    with pytest.raises(ValueError, match="1-D integer"):
        corrupt_labels(np.array([0.5, 1.0]), 0.5, 10)
    with pytest.raises(ValueError, match="num_classes"):
        corrupt_labels(np.array([0, 1]), 0.5, 0)


def test_label_file_round_trip(tmp_path):
    true = np.random.RandomState(6).randint(0, 10, size=1000)
    corrupted = corrupt_labels(true, 0.6, 10, seed=9)
    path = write_label_file(tmp_path / "labels" / "c0.6.npz", true, corrupted, seed=9, degree=0.6, num_classes=10,
                            dataset="mnist")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c0.6.npz"]  # no temp files left
    with np.load(path, allow_pickle=False) as npz:  # the contract's keys, readable without latentgen
        assert {"true", "corrupted", "seed", "degree", "num_classes", "fraction_unchanged"} <= set(npz.files)
        assert npz["true"].dtype == np.int64 and npz["corrupted"].dtype == np.int64
    back = read_label_file(path)
    assert isinstance(back, LabelFile)
    assert np.array_equal(back.true, true) and np.array_equal(back.corrupted, corrupted)
    assert (back.seed, back.degree, back.num_classes, back.dataset, back.strict) == (9, 0.6, 10, "mnist", False)
    assert back.fraction_unchanged == np.mean(true == corrupted)


def test_label_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_label_file(tmp_path / "nope.npz")
    good = write_label_file(tmp_path / "good.npz", [1, 2, 3], [1, 2, 0], seed=1, degree=0.5, num_classes=4)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        read_label_file(truncated)
    not_npz = tmp_path / "notes.npz"
    not_npz.write_text("true,corrupted\n1,2\n")
    with pytest.raises(ValueError, match="notes.npz"):
        read_label_file(not_npz)
    partial = tmp_path / "partial.npz"
    np.savez(partial, true=np.arange(3))
    with pytest.raises(ValueError, match="lacks corrupted"):
        read_label_file(partial)
    with pytest.raises(ValueError, match="equal length"):
        write_label_file(tmp_path / "bad.npz", [1, 2, 3], [1, 2], seed=1, degree=0.5, num_classes=4)
    assert not (tmp_path / "bad.npz").exists()
