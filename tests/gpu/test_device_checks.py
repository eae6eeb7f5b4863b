"""tests/gpu/device_checks.sh, the prepared GPU checks, run here on the CPU at toy sizes (DEVICE=cpu
QUICK=1): its commands and its summary must work before a GPU session spends device time on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("device_checks.sh")


@pytest.mark.slow
def test_the_mlp_and_training_bench_stages_run_and_compare_with_the_projection(mnist_root, tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(tmp_path / "out"),
           "LATENTGEN_TEST_DATA": str(mnist_root), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "mlp", "tests", "bench_training"], env=env, capture_output=True,
                          text=True, timeout=600)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stderr
    for stage in ("mlp_estimate", "mlp_train", "mlp_probe"):
        assert f"{stage}: exit 0" in summary
    assert "tests: skipped on the CPU" in summary
    # the training benchmarks (the graphed CNN's only where CUDA is): their JSONs, and exit 0 above
    for name in ("train", "train_shared_mlp", "train_shared_cnn"):
        assert json.loads((tmp_path / "out" / f"bench_{name}.json").read_text())["device"] == "cpu"
    assert not (tmp_path / "out" / "bench_train_shared_cnn_graph.log").exists()
    result = json.loads((tmp_path / "out" / "mlp.json").read_text())
    for job in ("mlp_train", "mlp_probe"):
        assert result[job]["measured_s"] is not None and result[job]["projected_s"] > 0
        assert result[job]["ratio"] == pytest.approx(result[job]["measured_s"] / result[job]["projected_s"])
    rows = (tmp_path / "out" / "work" / "run.csv").read_text().splitlines()
    assert rows[0].startswith("model,dataset,corruption,run,epoch,layer,probe") and len(rows) > 1


@pytest.mark.slow
def test_a_stage_cut_short_by_the_deadline_says_where_it_got_to(tmp_path):
    # the whole-paper estimate takes minutes on the CPU; DEADLINE_S=42 leaves it 32 s: it is stopped,
    # and the summary holds its last timestamped progress lines (what a lent GPU's call brings back)
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path / "out"), "DEADLINE_S": "42",
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "estimate"], env=env, capture_output=True, text=True, timeout=300)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode != 0 and "estimate: exit 124 after" in summary, summary
    progress = [line for line in summary.splitlines() if line.startswith("estimate: estimate [")]
    assert 1 <= len(progress) <= 3 and ("training steps" in summary or "probes" in summary), summary


def test_an_unknown_stage_is_refused(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(SCRIPT), "everything"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown stage everything" in done.stderr


def test_missing_packages_are_named_before_any_stage_runs(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path / "out"), "PYTHON": str(bare / "bin" / "python")}
    done = subprocess.run(["bash", str(SCRIPT), "mlp"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "missing Python packages: torch numpy scipy sklearn" in done.stderr
    assert "jsonschema" in done.stderr and not (tmp_path / "out" / "mlp_train.log").exists()


def test_the_lent_machine_wrapper_refuses_to_run_without_its_inputs(tmp_path):
    wrapper = SCRIPT.with_name("lent_machine.sh")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(["bash", str(wrapper), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "OUT is not set" in done.stderr
    done = subprocess.run(["bash", str(wrapper)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage:" in done.stderr
