"""Label noise beyond the authors' uniform shuffling: pair flips, a transition matrix, a label file
as the corruption itself — seeded, with the authors' nested mask, stored and hashed in the label
file, reachable from `latentgen corrupt` and the workflow's label_args."""

from __future__ import annotations

import numpy as np
import pytest

from latentgen._io import sha256_file
from latentgen.__main__ import main
from latentgen.data.labels import corrupt_labels, read_label_file

K = 10


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(0).integers(0, K, 200_000)


def test_pair_flips_exactly_the_authors_mask(labels):
    uniform = corrupt_labels(labels, 0.4, K, seed=42)
    pair = corrupt_labels(labels, 0.4, K, seed=42, noise="pair")
    mask = np.random.RandomState(42).rand(len(labels)) <= 0.4  # the authors' mask, drawn first
    assert np.array_equal(pair[mask], (labels[mask] + 1) % K) and np.array_equal(pair[~mask], labels[~mask])
    assert np.array_equal(uniform[~mask], labels[~mask])  # the same mask as the uniform noise's
    assert abs(np.mean(pair != labels) - 0.4) < 0.005


def test_a_shifted_identity_matrix_is_the_pair_flip(labels):
    shifted = np.roll(np.eye(K), 1, axis=1)  # row y: all mass on y + 1
    assert np.array_equal(corrupt_labels(labels, 0.6, K, seed=3, noise="matrix", transition=shifted),
                          corrupt_labels(labels, 0.6, K, seed=3, noise="pair"))


def test_matrix_noise_follows_the_transition_probabilities(labels):
    T = np.random.default_rng(1).dirichlet(np.ones(K), size=K)
    noisy = corrupt_labels(labels, 1.0, K, seed=5, noise="matrix", transition=T)  # every label redrawn
    for y in range(K):
        rows = noisy[labels == y]
        observed = np.bincount(rows, minlength=K) / len(rows)
        # ~20,000 draws per row: 4 standard errors
        assert np.all(np.abs(observed - T[y]) <= 4 * np.sqrt(T[y] * (1 - T[y]) / len(rows)) + 1e-9), y


@pytest.mark.parametrize("T, message", [
    (np.ones((K, K)), "row 0 of the transition matrix sums to 10"),
    (np.eye(3), "must be 10×10"),
    (-np.eye(K), "probabilities >= 0"),
])
def test_a_bad_transition_matrix_is_refused(labels, T, message):
    with pytest.raises(ValueError, match=message):
        corrupt_labels(labels[:100], 0.5, K, noise="matrix", transition=T)


def test_the_commands_write_the_kind_and_the_hash(tmp_path, capsys):
    out = tmp_path / "pair.npz"
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--noise", "pair", "--out", str(out)]) == 0
    pair = read_label_file(out)
    assert pair.noise == "pair" and pair.noise_sha256 == ""
    changed = pair.corrupted != pair.true
    assert np.array_equal(pair.corrupted[changed], (pair.true[changed] + 1) % 10)
    T = np.full((10, 10), 0.1)
    np.save(tmp_path / "T.npy", T)
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--noise", "matrix", "--noise-file",
                 str(tmp_path / "T.npy"), "--out", str(tmp_path / "matrix.npz")]) == 0
    matrix = read_label_file(tmp_path / "matrix.npz")
    assert matrix.noise == "matrix" and matrix.noise_sha256 == sha256_file(tmp_path / "T.npy")
    # a uniform matrix is the authors' noise in distribution, not in draws
    np.save(tmp_path / "mine.npy", pair.corrupted)
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--noise", "file", "--noise-file",
                 str(tmp_path / "mine.npy"), "--out", str(tmp_path / "file.npz")]) == 0
    own = read_label_file(tmp_path / "file.npz")
    assert np.array_equal(own.corrupted, pair.corrupted) and own.noise == "file"
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--noise", "matrix"], "noise 'matrix' needs a noise file"),
    (["--noise", "pair", "--noise-file", "T.npy"], "takes no noise file"),
    (["--noise", "file", "--noise-file", "short.npy"], "expected 1438 integer labels"),
])
def test_bad_noise_options_are_one_line_and_exit_1(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "T.npy", np.full((10, 10), 0.1))
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    assert main(["corrupt", "--dataset", "digits", "--corruption", "0.4", "--out", "x.npz", *argv]) == 1
    assert message in capsys.readouterr().err


def test_the_workflow_config_takes_the_noise_kind(repo_root, tmp_path):
    import yaml

    from latentgen.workflow.config import ConfigError, load_config

    cfg = yaml.safe_load((repo_root / "profiles" / "demo" / "demo.yaml").read_text())
    schema = repo_root / "workflow" / "schemas" / "config.schema.yaml"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**cfg, "label_args": {"noise": "pair"}}))
    assert load_config(path, schema)["label_args"] == {"noise": "pair"}
    path.write_text(yaml.safe_dump({**cfg, "label_args": {"noise": "gaussian"}}))
    with pytest.raises(ConfigError, match="label_args.noise.*gaussian"):
        load_config(path, schema)
