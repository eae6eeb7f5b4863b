"""`latentgen probe-run`: one job probes a whole training run from activations held in memory.

Oracle: the per-checkpoint path it replaces (`latentgen activations` → HDF5 → `latentgen probe`,
then the tables concatenated) on the same real training run: the bytes must be equal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentgen.__main__ import main
from latentgen._io import concatenate_csv
from latentgen.probing.activations import dump_activations, open_activations
from latentgen.probing.checkpoint_activations import CheckpointActivations, MemoryBudgetError, layer_groups
from latentgen.probing.checkpoint import probe_checkpoint, write_probe_csv
from latentgen.probing.run import InputRowCache, KILL_ENV, RunProbeJob, ProbeSettings, probe_run, tracked_epochs
from latentgen.training.loop import train
from latentgen.training.hyperparameters import default_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FINAL_FAMILIES = ("masc", "velpic", "transfer", "ncm", "masc_sensitivity")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A real MLP run on digits (600 images, 5 epochs; grid 0, 1, 2, 4 and the final 5)."""
    folder = tmp_path_factory.mktemp("run")
    config = default_train_config("mlp", "digits", corruption=0.4, run=1, train_subset=600, max_epochs=5,
                                  grid_dense_until=2, grid_dense_step=2, grid_step=2)
    train(config, folder / "run", dataset=digits, device="cpu", verbose=False)
    return folder / "run"


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """The per-checkpoint path: activation file, `latentgen probe`, concatenation."""
    folder = tmp_path_factory.mktemp("reference")
    manifest = json.loads((trained / "manifest.json").read_text())
    final = manifest["final_epoch"]
    tables = {}
    for epoch in manifest["epochs"]:
        h5 = dump_activations(trained / "checkpoints" / f"epoch{epoch}.pt", folder / f"epoch{epoch}.h5", device="cpu")
        args = ["probe", "--activations", str(h5), "--out", str(folder / f"epoch{epoch}.csv"), "--device", "cpu"]
        if epoch == final:
            args += ["--families", ",".join(FINAL_FAMILIES), "--fit-labels", "corrupted,true"]
        assert main(args) == 0
        tables[epoch] = folder / f"epoch{epoch}.csv"
    tracked = tracked_epochs(manifest, "grid")
    concatenate_csv([tables[e] for e in tracked], folder / "run.csv")
    return {"run": folder / "run.csv", "final": tables[final], "tracked": tracked, "final_epoch": final,
            "tables": tables}


def _job(trained, out_dir: Path, **changes) -> RunProbeJob:
    job = RunProbeJob(run_dir=trained, out=out_dir / "run1.csv", final_out=out_dir / "run1.final.csv",
                      parts=out_dir / "run1", final=ProbeSettings(FINAL_FAMILIES, ("corrupted", "true")))
    for key, value in changes.items():
        setattr(job, key, value)
    return job


def test_tracked_epochs_follow_the_runs_grid(trained, reference):
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["epochs"] == [0, 1, 2, 4, 5]
    assert reference["tracked"] == [0, 1, 2, 4] and reference["final_epoch"] == 5
    assert tracked_epochs(manifest, "grid", probe_final=True) == [0, 1, 2, 4, 5]
    assert tracked_epochs(manifest, "final") == []
    with pytest.raises(ValueError, match="checkpoints must be one of grid, final"):
        tracked_epochs(manifest, "every")


def test_run_and_final_tables_equal_the_per_checkpoint_path_byte_for_byte(trained, reference, tmp_path):
    cache = InputRowCache()
    probed = probe_run(_job(trained, tmp_path), device="cpu", input_cache=cache, log=lambda *_: None)
    assert sorted(probed) == [0, 1, 2, 4, 5]
    assert (tmp_path / "run1.csv").read_bytes() == reference["run"].read_bytes()
    assert (tmp_path / "run1.final.csv").read_bytes() == reference["final"].read_bytes()
    assert not (tmp_path / "run1").exists(), "the parts must be removed once the outputs are written"
    # the input layer's rows were fit at the first checkpoint and reused at the next three (masc,
    # velpic); the final checkpoint's options differ (the sensitivity thresholds): fit there anew
    assert cache.hits == 3 * 2 and cache.misses == 2 + 6
    assert not list(tmp_path.rglob("*.h5"))


def test_final_only_writes_a_header_only_run_table(trained, reference, tmp_path):
    probe_run(_job(trained, tmp_path, checkpoints="final"), device="cpu", log=lambda *_: None)
    assert (tmp_path / "run1.csv").read_text().splitlines() == [reference["run"].read_text().splitlines()[0]]
    assert (tmp_path / "run1.final.csv").read_bytes() == reference["final"].read_bytes()


def test_a_shared_input_cache_folder_gives_the_same_rows(trained, reference, tmp_path):
    folder = tmp_path / "cache"
    first = InputRowCache(folder)
    probe_run(_job(trained, tmp_path / "a"), device="cpu", input_cache=first, log=lambda *_: None)
    assert len(list(folder.glob("*.json"))) == first.misses == 8
    second = InputRowCache(folder)  # another job: every input-layer row comes from the folder
    probe_run(_job(trained, tmp_path / "b"), device="cpu", input_cache=second, log=lambda *_: None)
    assert second.misses == 0 and second.hits == 5 * 2 + 4
    assert (tmp_path / "b" / "run1.csv").read_bytes() == reference["run"].read_bytes()
    assert (tmp_path / "b" / "run1.final.csv").read_bytes() == reference["final"].read_bytes()


def test_layer_groups_within_the_budget_give_the_same_rows(trained, reference, tmp_path):
    checkpoint = trained / "checkpoints" / "epoch2.pt"
    with CheckpointActivations.load(checkpoint, device="cpu") as whole:
        widths, rows = whole.sizes(), len(whole.labels("train")) + len(whole.labels("test"))
        assert whole.forward_passes == 0  # nothing is computed before it is read
        one_group = probe_checkpoint(whole, device="cpu")
        assert whole.forward_passes == 1
    budget = max(widths.values()) * rows * 4  # the widest layer alone: several groups
    assert len(layer_groups(widths, rows, budget)) > 1
    with CheckpointActivations.load(checkpoint, device="cpu", memory_budget=budget) as grouped:
        assert probe_checkpoint(grouped, device="cpu") == one_group
        assert grouped.forward_passes == len(layer_groups(widths, rows, budget))
    write_probe_csv(one_group, tmp_path / "epoch2.csv")
    assert (tmp_path / "epoch2.csv").read_bytes() == reference["tables"][2].read_bytes()
    # ... and the arrays themselves are the file's
    with CheckpointActivations.load(checkpoint, device="cpu") as memory, \
            open_activations(reference["tables"][2].with_suffix(".h5")) as stored:
        for split in ("train", "test"):
            for layer in stored.layers:
                assert np.array_equal(memory.array(split, layer), stored.array(split, layer))


def test_logistic_regression_fit_over_a_group_of_layers_at_once_equals_its_single_fits(trained, monkeypatch):
    """The probe job advances the logistic fits of every layer of a group and label set in one
    loop (registry ``fit_many``); its rows are the single fits' (the oracle: ``fit_many`` off)."""
    import dataclasses

    from latentgen import registry
    from latentgen.probing import device_baselines

    calls = []
    one_loop = device_baselines.fit_logistic_many
    monkeypatch.setattr(device_baselines, "fit_logistic_many",
                        lambda problems, **kw: calls.append(len(problems)) or one_loop(problems, **kw))
    checkpoint = trained / "checkpoints" / "epoch4.pt"
    options = dict(families=["logistic"], fit_labels=["corrupted", "true"], device="cpu", seed=3)
    with CheckpointActivations.load(checkpoint, device="cpu") as whole:
        together = probe_checkpoint(whole, **options)
        hidden = [name for name in whole.layers if name != "input"]
        widths, rows = whole.sizes(), len(whole.labels("train")) + len(whole.labels("test"))
    assert calls == [2 * len(hidden)], "one loop for every hidden layer and both label sets"
    budget = max(widths.values()) * rows * 4  # the widest layer alone: several groups
    with CheckpointActivations.load(checkpoint, device="cpu", memory_budget=budget) as grouped:
        assert probe_checkpoint(grouped, **options) == together
        assert len(grouped.groups) > 1 and sum(calls[1:]) == 2 * len(hidden) and len(calls) - 1 == sum(
            any(name != "input" for name in group) for group in grouped.groups)
    single = dataclasses.replace(registry.PROBE_FAMILIES["logistic"], fit_many="")
    monkeypatch.setattr(registry, "PROBE_FAMILIES", {**registry.PROBE_FAMILIES, "logistic": single})
    calls.clear()
    with CheckpointActivations.load(checkpoint, device="cpu") as whole:
        assert probe_checkpoint(whole, **options) == together
    assert calls == []
    assert len(together) == 2 * len(hidden) and all(0 < row.accuracy <= 1 for row in together)


def test_a_budget_below_one_layer_is_refused_naming_it(trained, tmp_path, capsys):
    with pytest.raises(MemoryBudgetError, match=r"layer 'input' needs .* \(\d+ rows × \d+ float32\) but the memory budget"):
        CheckpointActivations.load(trained / "checkpoints" / "epoch1.pt", device="cpu", memory_budget=1000)
    code = main(["probe-run", "--run-dir", str(trained), "--out", str(tmp_path / "r.csv"), "--final-out",
                 str(tmp_path / "f.csv"), "--device", "cpu", "--memory-budget", "100K"])
    assert code == 1 and not (tmp_path / "r.csv").exists()
    assert "layer 'input' needs 239.8 KiB" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5G", "lots", "nanG"])
def test_bad_memory_budget_is_a_parser_error(value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe-run", "--run-dir", str(tmp_path), "--out", "a.csv", "--final-out", "b.csv",
              "--memory-budget", value])
    assert exit_info.value.code == 2
    assert "--memory-budget" in capsys.readouterr().err


def test_keep_activations_exports_todays_files(trained, reference, tmp_path):
    job = _job(trained, tmp_path, keep_activations=tmp_path / "activations")
    probe_run(job, device="cpu", log=lambda *_: None)
    assert (tmp_path / "run1.csv").read_bytes() == reference["run"].read_bytes()
    files = sorted(p.name for p in (tmp_path / "activations").glob("*.h5"))
    assert files == [f"epoch{e}.h5" for e in (0, 1, 2, 4, 5)]
    with open_activations(tmp_path / "activations" / "epoch5.h5") as acts:
        assert acts.meta["epoch"] == 5 and acts.layers == ["input", "fc1", "fc2", "fc3", "fc4"]


def _cli(trained, out: Path) -> list[str]:
    return [sys.executable, "-m", "latentgen", "probe-run", "--run-dir", str(trained), "--out", str(out / "run1.csv"),
            "--final-out", str(out / "run1.final.csv"), "--final-families", ",".join(FINAL_FAMILIES),
            "--final-fit-labels", "corrupted,true", "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("kill_at", ["2:part", "5:outputs"])
def test_killed_and_rerun_ends_with_the_same_bytes(trained, reference, tmp_path, kill_at):
    env = {**os.environ, KILL_ENV: kill_at}
    killed = subprocess.run(_cli(trained, tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "run1.csv").exists() and not (tmp_path / "run1.final.csv").exists()
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left"
    done = sorted(p.name for p in (tmp_path / "run1").glob("epoch*.csv"))
    assert done == ([f"epoch{e}.csv" for e in (0, 1, 2)] if kill_at == "2:part"
                    else [f"epoch{e}.csv" for e in (0, 1, 2, 4, 5)])
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run1").glob("epoch*.csv")}
    rerun = subprocess.run(_cli(trained, tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"probed {5 - len(done)} checkpoint(s)" in rerun.stdout  # the finished ones are not probed again
    assert (tmp_path / "run1.csv").read_bytes() == reference["run"].read_bytes()
    assert (tmp_path / "run1.final.csv").read_bytes() == reference["final"].read_bytes()
    assert stamps and not (tmp_path / "run1").exists()


def test_parts_made_with_other_options_are_not_reused(trained, reference, tmp_path):
    env = {**os.environ, KILL_ENV: "1:part"}
    other = _cli(trained, tmp_path) + ["--variance", "0.9"]
    assert subprocess.run(other, env=env, capture_output=True, timeout=300).returncode == -9
    assert len(list((tmp_path / "run1").glob("epoch*.csv"))) == 2
    rerun = subprocess.run(_cli(trained, tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "probed 5 checkpoint(s)" in rerun.stdout
    assert (tmp_path / "run1.csv").read_bytes() == reference["run"].read_bytes()


def test_an_unfinished_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    code = main(["probe-run", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "r.csv"),
                 "--final-out", str(tmp_path / "f.csv"), "--device", "cpu"])
    assert code == 1


def test_a_copied_run_probes_the_same(trained, reference, tmp_path):
    """The job reads the checkpoints through the run folder's manifest, wherever the folder is."""
    copy = tmp_path / "moved"
    shutil.copytree(trained, copy)
    probe_run(_job(copy, tmp_path), device="cpu", log=lambda *_: None)
    assert (tmp_path / "run1.csv").read_bytes() == reference["run"].read_bytes()
