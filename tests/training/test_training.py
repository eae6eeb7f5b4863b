"""Training: grid, defaults, the loop against a DataLoader reference, stop rule, resume after a
real SIGKILL (bitwise), refusals, and checkpoint loading (weights_only, corrupt files)."""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from latentgen.data.labels import corrupt_labels, write_label_file
from latentgen.models.architectures import build_model
from latentgen.training.runs import KILL_ENV
from latentgen.registry import checkpoint_grid, on_grid
from latentgen.training.loop import labels_digest, read_train_log, target_reached, train
from latentgen.training.hyperparameters import config_grid, default_train_config
from latentgen.training.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, digits):
    """A finished 3-epoch MLP run on 150 digits images (every epoch on the grid)."""
    out = tmp_path_factory.mktemp("run") / "mlp"
    config = default_train_config("mlp", "digits", corruption=0.4, run=1, train_subset=150, max_epochs=3,
                                  grid_dense_until=2, grid_step=1)
    manifest = train(config, out, dataset=digits, device="cpu", verbose=False)
    return config, out, manifest


# ------------------------------------------------------------------------------------------
# grid and defaults


def test_grid_matches_spec_section_5():
    expected = [0, 1] + list(range(2, 21, 2)) + list(range(25, 61, 5))
    assert checkpoint_grid(60) == expected
    assert checkpoint_grid(60, step=10) == [0, 1] + list(range(2, 21, 2)) + [30, 40, 50, 60]
    assert checkpoint_grid(7) == [0, 1, 2, 4, 6]
    assert [e for e in range(200) if on_grid(e)] == checkpoint_grid(199)
    config = default_train_config("mlp", "mnist")
    assert config_grid(config, 58) == checkpoint_grid(58) + [58]  # the final epoch is always saved
    assert config_grid(config, 55) == checkpoint_grid(55)
    assert checkpoint_grid(12, dense_until=4, dense_step=2, step=3) == [0, 1, 2, 4, 7, 10]


def test_defaults_follow_spec_section_4():
    mlp = default_train_config("mlp", "mnist")
    assert (mlp.optimizer, mlp.lr, mlp.momentum, mlp.batch_size, mlp.target_acc) == ("sgd", 1e-3, 0.9, 32, 1.0)
    assert (mlp.shuffle, mlp.max_epochs, mlp.label_seed) == (False, 500, 42)
    cnn = {ds: default_train_config("cnn", ds) for ds in ("mnist", "fashion_mnist", "cifar10")}
    assert [(c.optimizer, c.lr) for c in cnn.values()] == [("adam", 2e-4)] * 3
    assert [c.batch_size for c in cnn.values()] == [128, 128, 32]  # the code (D2)
    assert [c.target_acc for c in cnn.values()] == [0.999, 0.991, 1.0]
    paper = [default_train_config("cnn", ds, hparams="paper").batch_size for ds in ("mnist", "fashion_mnist", "cifar10")]
    assert paper == [32, 32, 128]
    tiny = default_train_config("alexnet", "tiny_imagenet")
    assert (tiny.optimizer, tiny.lr, tiny.betas, tiny.batch_size, tiny.target_acc, tiny.grid_step) == \
        ("adam", 1e-4, (0.9, 0.999), 500, 0.999, 10)
    c100 = default_train_config("alexnet", "cifar100")
    assert (c100.lr, c100.batch_size, c100.target_acc, c100.grid_step) == (1e-4, 128, 0.991, 5)
    res = default_train_config("resnet18", "cifar10")
    assert (res.optimizer, res.lr, res.momentum, res.batch_size, res.target_acc) == ("sgd", 1e-3, 0.9, 32, 1.0)
    assert default_train_config("mlp", "mnist", batch_size=7, shuffle=True).batch_size == 7


def test_seeds_resolve_per_run_and_cnn_init_is_fixed():
    mlp = default_train_config("mlp", "mnist", run=2).resolved()
    assert (mlp.seed, mlp.init_seed) == (43, 43)
    cnn = default_train_config("cnn", "mnist", run=3).resolved()
    assert (cnn.seed, cnn.init_seed) == (44, 0)
    assert default_train_config("cnn", "mnist", init_seed=5).resolved().init_seed == 5


@pytest.mark.parametrize("overrides,match", [
    ({"corruption": 1.5}, r"corruption must be in \[0, 1\]"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"lr": 0}, "learning rate"),
    ({"batch_size": 0}, "batch size"),
    ({"target_acc": 99.9}, "target accuracy must be a fraction"),
    ({"grid_step": 0}, "grid"),
    ({"speed": 3}, "unknown training setting"),
])
def test_bad_settings_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        default_train_config("mlp", "mnist", **overrides)


def test_unsupported_pair_is_refused():
    with pytest.raises(ValueError, match="'alexnet' does not support dataset 'mnist'"):
        default_train_config("alexnet", "mnist")


def test_target_is_compared_exactly():
    assert target_reached(999, 1000, 0.999) and not target_reached(998, 1000, 0.999)
    assert target_reached(60000, 60000, 1.0) and not target_reached(59999, 60000, 1.0)
    assert target_reached(9910, 10000, 0.991) and not target_reached(9909, 10000, 0.991)


# ------------------------------------------------------------------------------------------
# the loop


def test_loop_equals_a_dataloader_reference(small_run, digits):
    """The authors' loop, written independently: DataLoader(shuffle=False), zero_grad/backward/step,
    running accuracy over the epoch's batches; checkpoints must equal its weights bit for bit."""
    config, out, manifest = small_run
    n = 150
    labels = torch.from_numpy(corrupt_labels(digits.train_y.numpy(), 0.4, 10, seed=42))[:n]
    true = digits.train_y[:n]
    model = build_model("mlp", "digits", seed=42)  # run 1: torch seed 42
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(digits.train_x[:n], labels, true), batch_size=config.batch_size, shuffle=False)
    rows = read_train_log(out / "train_log.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    with torch.no_grad():
        assert rows[0]["test_acc"] == (model(digits.test_x).argmax(1) == digits.test_y).sum().item() / len(digits.test_y)
    assert rows[0]["train_acc_corrupted"] is None and rows[0]["loss"] is None
    for epoch in (1, 2, 3):
        correct = correct_true = 0
        loss_sum = 0.0
        model.train()
        for xb, yb, tb in loader:
            model.zero_grad()
            output = model(xb)
            loss = loss_fn(output, yb)
            loss.backward()
            optimizer.step()
            correct += (output.argmax(1) == yb).sum().item()
            correct_true += (output.argmax(1) == tb).sum().item()
            loss_sum += loss.item() * len(yb)
        model.eval()
        with torch.no_grad():
            test_acc = (model(digits.test_x).argmax(1) == digits.test_y).sum().item() / len(digits.test_y)
        row = rows[epoch]
        assert row["train_acc_corrupted"] == correct / n
        assert row["train_acc_true"] == correct_true / n
        assert row["test_acc"] == test_acc
        assert row["loss"] == pytest.approx(loss_sum / n, rel=1e-9)
        saved = read_checkpoint(out / "checkpoints" / f"epoch{epoch}.pt")
        for key, value in model.state_dict().items():
            assert torch.equal(saved["model_state"][key], value), (epoch, key)
        assert saved["meta"]["epoch"] == epoch
    assert manifest["epochs"] == [0, 1, 2, 3] and manifest["stop_reason"] == "max_epochs"
    assert not (out / "resume.pt").exists()


def test_log_file_has_the_documented_columns(small_run):
    _, out, _ = small_run
    with open(out / "train_log.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        first = next(reader)
    assert header == ["epoch", "loss", "train_acc_corrupted", "train_acc_true", "test_acc", "seconds"]
    assert first[0] == "0" and first[1:4] == ["", "", ""] and 0 <= float(first[4]) <= 1


def test_stop_rule_mlp_stops_only_at_exactly_100_percent(tmp_path, digits):
    config = default_train_config("mlp", "digits", train_subset=40, max_epochs=300, corruption=0.2)
    manifest = train(config, tmp_path / "run", dataset=digits, device="cpu", verbose=False)
    rows = read_train_log(tmp_path / "run" / "train_log.csv")
    assert manifest["stop_reason"] == "target_reached"
    assert rows[-1]["train_acc_corrupted"] == 1.0
    assert all(r["train_acc_corrupted"] < 1.0 for r in rows[1:-1])
    final = manifest["final_epoch"]
    assert final == rows[-1]["epoch"] < 300
    assert manifest["epochs"] == config_grid(config.resolved(), final)
    saved = sorted(int(p.stem[5:]) for p in (tmp_path / "run" / "checkpoints").glob("epoch*.pt"))
    assert saved == manifest["epochs"]


def test_stop_rule_with_a_fractional_target(tmp_path, digits):
    config = default_train_config("mlp", "digits", train_subset=100, max_epochs=300, target_acc=0.5)
    manifest = train(config, tmp_path / "run", dataset=digits, device="cpu", verbose=False)
    rows = read_train_log(tmp_path / "run" / "train_log.csv")
    assert manifest["stop_reason"] == "target_reached"
    assert rows[-1]["train_acc_corrupted"] >= 0.5 and all(r["train_acc_corrupted"] < 0.5 for r in rows[1:-1])


def test_shuffle_uses_a_seeded_order(tmp_path, digits):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = default_train_config("mlp", "digits", train_subset=100, max_epochs=1, shuffle=True, seed=seed, init_seed=1)
        train(config, tmp_path / name, dataset=digits, device="cpu", verbose=False)
        runs[name] = read_checkpoint(tmp_path / name / "checkpoints" / "epoch1.pt")["model_state"]["fc1.weight"]
    assert torch.equal(runs["a"], runs["b"]) and not torch.equal(runs["a"], runs["c"])


# ------------------------------------------------------------------------------------------
# resume after a real kill


def _cli_train(out, extra_env=None):
    cmd = [sys.executable, "-m", "latentgen", "train", "--arch", "mlp", "--dataset", "digits", "--corruption", "0.4",
           "--run", "2", "--out", str(out), "--train-subset", "300", "--max-epochs", "7", "--optimizer", "adam",
           "--lr", "0.001", "--shuffle", "true", "--grid-dense-until", "4", "--grid-step", "2", "--threads", "1",
           "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env.update(extra_env or {})
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    done = _cli_train(out)
    assert done.returncode == 0, done.stderr
    return out


def _log_without_seconds(path):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_train_log(path)]


def test_resume_after_sigkill_is_bitwise_identical(tmp_path, reference_run, digits):
    """Killed twice (after epoch 2's resume state; between epoch 4's checkpoint and its resume
    state, so epoch 4 is redone), then finished: every file equals the uninterrupted run's."""
    out = tmp_path / "run"
    for kill_at, has_epoch4 in (("2:resume", False), ("4:checkpoint", True)):
        killed = _cli_train(out, {KILL_ENV: kill_at})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not (out / "manifest.json").exists() and (out / "resume.pt").exists()
        assert (out / "checkpoints" / "epoch4.pt").exists() == has_epoch4

    # another configuration must not pick up this resume state
    other = default_train_config("mlp", "digits", corruption=0.4, run=2, train_subset=300, max_epochs=7,
                                 optimizer="adam", lr=0.002, shuffle=True, grid_dense_until=4, grid_step=2)
    with pytest.raises(ValueError, match="resume.pt was written by another configuration"):
        train(other, out, dataset=digits, device="cpu", verbose=False)

    resumed = _cli_train(out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 3" in resumed.stdout
    assert not (out / "resume.pt").exists()
    ref_files = sorted(p.name for p in (reference_run / "checkpoints").iterdir())
    assert ref_files == sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ref_files == sorted(f"epoch{e}.pt" for e in [0, 1, 2, 4, 6, 7])
    for name in ref_files:
        assert (out / "checkpoints" / name).read_bytes() == (reference_run / "checkpoints" / name).read_bytes(), name
    assert _log_without_seconds(out / "train_log.csv") == _log_without_seconds(reference_run / "train_log.csv")
    assert not list(out.rglob(".*.tmp"))


# ------------------------------------------------------------------------------------------
# refusals and checkpoint files


def test_finished_run_is_reused_or_refused(small_run, digits):
    config, out, manifest = small_run
    stamp = (out / "checkpoints" / "epoch3.pt").stat().st_mtime_ns
    assert train(config, out, dataset=digits, device="cpu", verbose=False) == manifest
    assert (out / "checkpoints" / "epoch3.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="finished run of another configuration"):
        train(default_train_config("mlp", "digits", corruption=0.6, run=1, train_subset=150, max_epochs=3,
                                   grid_dense_until=2, grid_step=1), out, dataset=digits, verbose=False)


def test_foreign_checkpoints_are_not_overwritten(small_run, tmp_path, digits):
    _, out, _ = small_run
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "epoch1.pt", tmp_path / "run" / "checkpoints" / "epoch1.pt")
    config = default_train_config("mlp", "digits", corruption=0.0, train_subset=50, max_epochs=1)
    with pytest.raises(ValueError, match="checkpoints of another configuration"):
        train(config, tmp_path / "run", dataset=digits, verbose=False)


def test_label_file_is_used_and_checked(tmp_path, digits):
    true = digits.train_y.numpy()
    corrupted = corrupt_labels(true, 0.6, 10, seed=7)
    write_label_file(tmp_path / "labels.npz", true, corrupted, seed=7, degree=0.6, num_classes=10, dataset="digits")
    config = default_train_config("mlp", "digits", corruption=0.6, train_subset=50, max_epochs=1)
    manifest = train(config, tmp_path / "run", dataset=digits, labels=tmp_path / "labels.npz", verbose=False)
    meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "epoch1.pt")["meta"]
    assert meta["labels_sha256"] == labels_digest(corrupted) == manifest["labels_sha256"]
    assert meta["labels"] == str((tmp_path / "labels.npz").resolve())
    assert labels_digest(corrupted) != labels_digest(corrupt_labels(true, 0.6, 10, seed=42))
    wrong = default_train_config("mlp", "digits", corruption=0.4, train_subset=50, max_epochs=1)
    with pytest.raises(ValueError, match="has corruption 0.6, but --corruption is 0.4"):
        train(wrong, tmp_path / "run2", dataset=digits, labels=tmp_path / "labels.npz", verbose=False)
    with pytest.raises(FileNotFoundError, match="label file not found"):
        train(config, tmp_path / "run3", dataset=digits, labels=tmp_path / "missing.npz", verbose=False)


def test_load_checkpoint_round_trip(small_run, digits):
    _, out, _ = small_run
    model, meta = load_checkpoint(out / "checkpoints" / "epoch2.pt")
    raw = torch.load(out / "checkpoints" / "epoch2.pt", weights_only=True)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw["model_state"][key])
    for key in ("arch", "dataset", "corruption", "run", "epoch", "num_classes", "labels_sha256", "train_config",
                "config_hash", "latentgen_version"):
        assert key in meta
    assert (meta["arch"], meta["dataset"], meta["epoch"], meta["run"], meta["corruption"]) == ("mlp", "digits", 2, 1, 0.4)
    fresh = build_model("mlp", "digits")
    fresh.load_state_dict(raw["model_state"])
    with torch.no_grad():
        assert torch.equal(model(digits.test_x), fresh.eval()(digits.test_x))


@pytest.mark.parametrize("arch", ["mlp", "cnn", "alexnet", "resnet18"])
def test_every_architecture_round_trips_through_a_checkpoint(tmp_path, digits, arch):
    model = build_model(arch, "digits", seed=9)
    with torch.no_grad():  # non-default BatchNorm statistics must survive too
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-1, 1)
    save_checkpoint(tmp_path / "c.pt", model, {"arch": arch, "dataset": "digits", "epoch": 0, "num_classes": 10})
    loaded, meta = load_checkpoint(tmp_path / "c.pt")
    assert meta["arch"] == arch and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(digits.test_x[:50]), model.eval()(digits.test_x[:50]))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoints_load_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "meta": {"arch": "mlp", "payload": _Evil(str(marker))}}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_corrupt_checkpoints_are_refused(small_run, tmp_path):
    _, out, _ = small_run
    good = (out / "checkpoints" / "epoch1.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated.pt is corrupt, truncated"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a latentgen checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    raw = torch.load(out / "checkpoints" / "epoch1.pt", weights_only=True)
    raw["meta"]["arch"] = "cnn"
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="does not fit cnn on digits"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_a_cuda_graph_is_refused_where_it_cannot_give_the_eager_numbers(tmp_path, digits):
    # the refusals are decided before any epoch; the equality itself is checked on a GPU (tests/gpu)
    from latentgen.training.graph_step import graph_refusal

    config = default_train_config("mlp", "digits", train_subset=40, max_epochs=1)
    with pytest.raises(ValueError, match="--cuda-graph needs a CUDA device, not cpu"):
        train(config, tmp_path / "run", dataset=digits, device="cpu", verbose=False, cuda_graph=True)
    assert not (tmp_path / "run" / "resume.pt").exists()
    cuda = torch.device("cuda")  # a device object only: nothing runs
    mlp = build_model("mlp", "digits", seed=0)
    assert graph_refusal(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9), cuda) is None
    assert graph_refusal(mlp, torch.optim.Adam(mlp.parameters()), cuda) is None  # its step runs eagerly
    assert "supports SGD and Adam, not RMSprop" in graph_refusal(mlp, torch.optim.RMSprop(mlp.parameters()), cuda)
    dropout = build_model("mlp", "digits", seed=0, dropout=0.5)
    assert "dropout" in graph_refusal(dropout, torch.optim.SGD(dropout.parameters(), lr=0.1), cuda)
    # AlexNet keeps the authors' classifier (Dropout included) for its state_dict, but never calls it
    alexnet = build_model("alexnet", "digits", seed=0)
    called = []
    for module in alexnet.classifier.modules():
        module.register_forward_hook(lambda *_: called.append(1))
    alexnet.train()
    alexnet(digits.train_x[:4]).sum().backward()
    assert not called and graph_refusal(alexnet, torch.optim.Adam(alexnet.parameters()), cuda) is None
    alexnet.unused_in_forward = ()  # were it called, its Dropout would refuse the graph
    assert "dropout" in graph_refusal(alexnet, torch.optim.Adam(alexnet.parameters()), cuda)
    done = subprocess.run([sys.executable, "-m", "latentgen", "train", "--arch", "mlp", "--dataset", "digits",
                           "--corruption", "0", "--run", "1", "--out", str(tmp_path / "cli"), "--device", "cpu",
                           "--max-epochs", "1", "--cuda-graph"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--cuda-graph needs a CUDA device" in done.stderr
    assert not (tmp_path / "cli" / "manifest.json").exists()


def test_the_cuda_graph_is_on_by_default_only_where_a_gpu_has_checked_it():
    # use_graph(requested=None): on a CUDA device, for an architecture flagged as checked bitwise on a
    # GPU (the MLP), unless its run cannot be graphed; never on the CPU; an explicit False always wins
    from latentgen import registry
    from latentgen.training.graph_step import use_graph

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # device objects only: nothing runs
    mlp = build_model("mlp", "digits", seed=0)
    sgd = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
    assert use_graph("mlp", mlp, sgd, cuda) is True
    assert use_graph("mlp", mlp, sgd, cpu) is False
    assert use_graph("mlp", mlp, sgd, cuda, requested=False) is False
    assert use_graph("mlp", mlp, torch.optim.Adam(mlp.parameters()), cuda) is False  # an Adam override: eager
    dropout = build_model("mlp", "digits", seed=0, dropout=0.5)
    assert use_graph("mlp", dropout, torch.optim.SGD(dropout.parameters(), lr=0.1), cuda) is False
    with pytest.raises(ValueError, match="dropout"):
        use_graph("mlp", dropout, torch.optim.SGD(dropout.parameters(), lr=0.1), cuda, requested=True)
    cnn = build_model("cnn", "digits", seed=0)  # Adam, its step eager after each replay: not checked on a GPU yet
    assert use_graph("cnn", cnn, torch.optim.Adam(cnn.parameters()), cuda) is False
    assert use_graph("cnn", cnn, torch.optim.Adam(cnn.parameters()), cuda, requested=True) is True
    resnet = build_model("resnet18", "digits", seed=0)  # SGD, but its graphed run is not checked on a GPU yet
    assert use_graph("resnet18", resnet, torch.optim.SGD(resnet.parameters(), lr=0.1), cuda) is False
    assert use_graph("resnet18", resnet, torch.optim.SGD(resnet.parameters(), lr=0.1), cuda, requested=True)
    assert [a for a, entry in registry.ARCHITECTURES.items() if entry.cuda_graph] == ["mlp"]


@pytest.mark.parametrize("arch", ["mlp", "resnet18", "cnn", "alexnet"])
def test_the_graphed_steps_body_is_the_eager_loops_step(digits, arch):
    # On the CPU the graph cannot be captured, but what it records can be run: GraphedStep's body
    # (static tensors, the epoch's sums) stepping every full batch, the short last batch eager,
    # must give the eager loop's weights and sums bit for bit (the CNN's Adam step runs eagerly after
    # each replay, the MLP's and ResNet's SGD step inside it). The ResNet's convolutions see the
    # static input's memory layout: laid out as the batches (digits come channels-last) or they
    # round differently (a contiguous static input changed its loss in the 3rd decimal)
    from latentgen.training import graph_step
    from latentgen.training.loop import make_optimizer, train_one_epoch

    class BodyOnly(graph_step.GraphedStep):  # GraphedStep's own __call__, the CUDA parts run as what they record
        def _warm_up(self):
            self._body()

        def _capture(self):
            return "captured"

        def _replay(self):  # the captured body: with the SGD step; Adam's runs eagerly after it (__call__)
            self._body(step=self.step_in_graph)

    config = default_train_config(arch, "digits")
    x, y_true = digits.train_x[:32 * 5 + 7], digits.train_y[:32 * 5 + 7]
    y = torch.from_numpy(corrupt_labels(y_true.numpy(), 0.4, 10, seed=0))
    results = []
    for graphed in (False, True):
        model = build_model(arch, "digits", seed=0)
        optimizer = make_optimizer(config, model.parameters())
        step = None
        if graphed:
            step = object.__new__(BodyOnly)  # the refusal of a CPU device is what __init__ adds
            step.model, step.optimizer, step.batch_size, step.loss_fn = model, optimizer, 32, nn.CrossEntropyLoss()
            step.x, step.y, step.y_true = torch.empty(32, *x.shape[1:]), torch.empty(32, dtype=torch.int64), \
                torch.empty(32, dtype=torch.int64)
            step.loss_sum = torch.zeros((), dtype=torch.float64)
            step.correct, step.correct_true = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
            step.graph, step.eager_steps = None, 0
            step.step_in_graph = graph_step.IN_GRAPH[type(optimizer)]
        stats = [train_one_epoch(model, optimizer, x, y, 32, y_true=y_true, graphed=step) for _ in range(2)]
        results.append((stats, model.state_dict()))
        if step is not None:  # laid out as the batches; a batch laid out otherwise would run eagerly
            assert step.x.stride() == x[:32].stride() and step.takes(x[:32])
            assert not step.takes(torch.empty(32, *x.shape[1:]).copy_(x[:32]))
    (eager_stats, eager_state), (body_stats, body_state) = results
    assert body_stats == eager_stats and eager_stats[1]["correct"] > 0
    assert all(torch.equal(eager_state[k], body_state[k]) for k in eager_state)
