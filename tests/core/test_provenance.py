"""Provenance sidecars: hashes that match the files, the code's commit, config hash."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from latentgen import provenance
from latentgen._io import config_hash


def test_sidecar_path():
    assert str(provenance.sidecar_path("results/fig3.pdf")) == "results/fig3.json"
    assert str(provenance.sidecar_path("results/metrics/mlp/digits/c0.4.csv")) == "results/metrics/mlp/digits/c0.4.json"
    with pytest.raises(ValueError, match="JSON"):
        provenance.sidecar_path("x.json")


def test_record_hashes_inputs_and_outputs_and_verifies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    (tmp_path / "out.pdf").write_bytes(b"%PDF-fake")
    config = {"runs": [1, 2], "corruptions": [0.2]}
    record = provenance.build_record(inputs=["in.csv"], outputs=["out.pdf"], config=config,
                                     seeds={"labels": 42})
    assert record["inputs"] == {"in.csv": hashlib.sha256(b"a,b\n1,2\n").hexdigest()}
    assert record["outputs"] == {"out.pdf": hashlib.sha256(b"%PDF-fake").hexdigest()}
    assert record["config_hash"] == config_hash({"corruptions": [0.2], "runs": [1, 2]})
    assert record["seeds"] == {"labels": 42}
    assert "numpy" in record["versions"]
    path = provenance.write_sidecar("out.pdf", record)
    assert path.name == "out.json"
    assert json.loads(path.read_text())["inputs"] == record["inputs"]
    assert provenance.verify_sidecar(path) == []

    (tmp_path / "in.csv").write_text("a,b\n1,3\n")
    (tmp_path / "out.pdf").unlink()
    problems = provenance.verify_sidecar(path)
    assert any("in.csv has changed" in p for p in problems)
    assert any("out.pdf is missing" in p for p in problems)


def test_missing_input_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        provenance.build_record(inputs=[tmp_path / "nope.csv"])


def test_git_info_reads_the_commit_of_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)
    run("init", "-q")
    (repo / "f.txt").write_text("x")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = run("rev-parse", "HEAD").stdout.strip()
    assert provenance.git_info(repo) == {"commit": head, "dirty": False}
    (repo / "f.txt").write_text("y")
    assert provenance.git_info(repo) == {"commit": head, "dirty": True}
    (tmp_path / "plain").mkdir()
    assert provenance.git_info(tmp_path / "plain") == {"commit": None, "dirty": None}


def test_read_sidecar_refuses_broken_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        provenance.read_sidecar(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="config_hash"):
        provenance.read_sidecar(bad)
