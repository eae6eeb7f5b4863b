"""The warm forking job runner: same output, exit code, working folder and environment as a
plain process; signals forwarded; a killed caller takes its child down; off by default."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentgen import prefork


@pytest.fixture
def env(tmp_path):
    env = dict(os.environ)
    env.pop("SLURM_JOB_ID", None)
    env.update(LATENTGEN_PREFORK="1", LATENTGEN_PREFORK_DIR=str(tmp_path / "pf"), LATENTGEN_PREFORK_IDLE="20")
    return env


def _run(args, env, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "latentgen.prefork", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kw)


def _servers(env) -> list[str]:
    folder = Path(env["LATENTGEN_PREFORK_DIR"])
    return [line for log in folder.glob("*.log") for line in log.read_text().splitlines() if "serving" in line]


def test_forked_command_matches_a_plain_process(env, tmp_path):
    key = prefork.server_key()
    plain = subprocess.run([sys.executable, "-m", "latentgen", "figure", "--help"], capture_output=True, text=True)
    forked = _run(["figure", "--help"], env, tmp_path)
    assert forked.returncode == plain.returncode == 0
    assert forked.stdout == plain.stdout
    assert len(list(Path(env["LATENTGEN_PREFORK_DIR"]).glob("*.sock"))) == 1

    # the caller's working folder: a relative output lands there
    done = _run(["download", "--dataset", "digits", "--out", "d.npz"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "d.npz").is_file()
    # exit code and stderr of a failing command
    bad = _run(["activations", "--checkpoint", "missing.pt", "--out", "x.h5"], env, tmp_path)
    assert bad.returncode == 1 and "missing.pt" in bad.stderr
    # the caller's environment: LATENTGEN_DEBUG turns the one-line error into a traceback
    debug = _run(["activations", "--checkpoint", "missing.pt", "--out", "x.h5"], {**env, "LATENTGEN_DEBUG": "1"},
                 tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    if prefork.server_key() == key:  # (unless the code changed meanwhile, which starts a new server)
        assert len(_servers(env)) == 1, "every call should have used the one warm server"


def test_off_by_default_and_under_slurm(env, tmp_path):
    for extra in ({"LATENTGEN_PREFORK": "0"}, {"SLURM_JOB_ID": "42"}):
        folder = tmp_path / f"pf{len(extra)}{list(extra)[0]}"
        done = _run(["figure", "--help"], {**env, **extra, "LATENTGEN_PREFORK_DIR": str(folder)}, tmp_path)
        assert done.returncode == 0 and "--name" in done.stdout
        assert not folder.exists(), f"a server was started with {extra}"


def test_a_signal_reaches_the_child_and_a_killed_caller_takes_it_down(env, tmp_path):
    def start(out):
        return subprocess.Popen([sys.executable, "-m", "latentgen.prefork", "train", "--arch", "mlp", "--dataset",
                                 "digits", "--corruption", "1.0", "--run", "1", "--out", str(out),
                                 "--max-epochs", "400", "--device", "cpu", "--threads", "1", "--quiet"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_for_epochs(out, n=3, timeout=90):
        log = out / "train_log.csv"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if log.exists() and len(log.read_text().splitlines()) > n:
                return
            time.sleep(0.05)
        raise AssertionError("training never got going")

    def assert_stopped(out):
        log = out / "train_log.csv"
        time.sleep(1.0)
        before = log.stat().st_mtime_ns, (out / "resume.pt").stat().st_mtime_ns
        time.sleep(3.0)
        after = log.stat().st_mtime_ns, (out / "resume.pt").stat().st_mtime_ns
        assert before == after, "the child kept training after its caller was gone"
        assert not (out / "manifest.json").exists()

    for how, expected in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)):
        out = tmp_path / f"run_{how.name}"
        proc = start(out)
        wait_for_epochs(out)
        proc.send_signal(how)
        assert proc.wait(30) == expected
        assert_stopped(out)


def test_server_key_follows_code_interpreter_and_threads(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    shutil.copytree(Path(prefork.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    key = prefork.server_key(package)
    assert prefork.server_key(package) == key
    target = package / "paper" / "figures.py"  # a module in a subpackage counts too
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    changed = prefork.server_key(package)
    assert changed != key
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert prefork.server_key(package) != changed


def test_the_server_outlives_a_long_child_and_counts_its_cpu(env, tmp_path):
    env = {**env, "LATENTGEN_PREFORK_IDLE": "1"}
    done = _run(["train", "--arch", "mlp", "--dataset", "digits", "--corruption", "0.0", "--run", "1", "--out",
                 str(tmp_path / "run"), "--max-epochs", "25", "--device", "cpu", "--threads", "1", "--quiet"],
                env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "manifest.json").exists()
    log = next(Path(env["LATENTGEN_PREFORK_DIR"]).glob("*.log"))
    end = time.monotonic() + 30
    while "served" not in log.read_text() and time.monotonic() < end:
        time.sleep(0.1)
    summary = [line for line in log.read_text().splitlines() if "served" in line]
    assert summary and "served 1 commands; 1 finished children" in summary[0], log.read_text()
    assert float(summary[0].split("used ")[1].split(" s")[0]) > 0.1
