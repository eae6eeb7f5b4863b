"""GPU slot pool: concurrent jobs get distinct GPUs, a waiting job gets a freed one,
SLURM allocations are left alone. Uses a fake device count (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentgen.workflow import gpu_slots

# a job that records its GPU, the time it got it, waits for a release file, then exits
JOB = r"""
import os, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
out.write_text(f"{os.environ['CUDA_VISIBLE_DEVICES']} {os.environ.get('LATENTGEN_GPU_SLOT', '')} {time.monotonic()} "
               f"{os.environ.get('LATENTGEN_GPU_SHARE', '-')}\n")
release = pathlib.Path(sys.argv[2])
while not release.exists():
    time.sleep(0.05)
"""


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.pop("SLURM_JOB_ID", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(LATENTGEN_GPU_LOCK_DIR=str(tmp_path / "locks"), **extra)
    return env


def _start(tmp_path, name, env, *options):
    out = tmp_path / f"{name}.txt"
    release = tmp_path / f"{name}.release"
    proc = subprocess.Popen([sys.executable, "-m", "latentgen.workflow.gpu_slots", *options, "--",
                             sys.executable, "-c", JOB, str(out), str(release)], env=env)
    return proc, out, release


def _wait_for(path: Path, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().split()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_concurrent_jobs_get_distinct_gpus_and_a_waiting_job_gets_a_freed_slot(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="2")
    a = _start(tmp_path, "a", env)
    b = _start(tmp_path, "b", env)
    got_a, got_b = _wait_for(a[1]), _wait_for(b[1])
    assert {got_a[0], got_b[0]} == {"0", "1"}

    c = _start(tmp_path, "c", env)
    time.sleep(1.5)
    assert not c[1].exists(), "a third job ran while both slots were taken"
    b[2].touch()  # job b ends, its slot frees
    assert b[0].wait(30) == 0
    got_c = _wait_for(c[1])
    assert got_c[0] == got_b[0], "the waiting job did not get the freed GPU"
    for proc, _, release in (a, c):
        release.touch()
        assert proc.wait(30) == 0


def test_a_killed_job_frees_its_slot(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1")
    a = _start(tmp_path, "a", env)
    _wait_for(a[1])
    a[0].kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
    a[0].wait(30)
    b = _start(tmp_path, "b", env)
    assert _wait_for(b[1])[0] == "0"
    b[2].touch()
    assert b[0].wait(30) == 0


def test_exit_code_of_the_command_is_passed_through(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1")
    done = subprocess.run([sys.executable, "-m", "latentgen.workflow.gpu_slots", "--", sys.executable, "-c",
                           "import sys; sys.exit(7)"], env=env)
    assert done.returncode == 7


def test_jobs_per_gpu_shares_a_device(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1", LATENTGEN_JOBS_PER_GPU="2")
    a, b = _start(tmp_path, "a", env), _start(tmp_path, "b", env)
    got = [_wait_for(a[1]), _wait_for(b[1])]
    assert [g[0] for g in got] == ["0", "0"]
    assert sorted(g[1] for g in got) == ["0", "12"]  # two halves of one GPU (24 units)
    for proc, _, release in (a, b):
        release.touch()
        assert proc.wait(30) == 0


def test_shares_of_different_size_fill_one_gpu_by_weight(tmp_path):
    # one GPU: a half (K=2) and two quarters (K=4) fill it; a third quarter waits for one to end
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1")
    half = _start(tmp_path, "half", env, "--jobs-per-gpu", "2")
    _wait_for(half[1])
    quarters = [_start(tmp_path, f"q{i}", env, "--jobs-per-gpu", "4") for i in range(2)]
    assert [_wait_for(q[1])[0] for q in quarters] == ["0", "0"]
    # each job is told its share (it plans with that part of the free memory: latentgen.devices)
    assert _wait_for(half[1])[3] == "2" and [_wait_for(q[1])[3] for q in quarters] == ["4", "4"]
    late = _start(tmp_path, "late", env, "--jobs-per-gpu", "4")
    time.sleep(1.5)
    assert not late[1].exists(), "a job started on a GPU whose shares were all taken"
    quarters[0][2].touch()
    assert quarters[0][0].wait(30) == 0
    assert _wait_for(late[1])[0] == "0"
    # a whole-GPU job cannot start beside shared ones, and starts once they all end
    whole = _start(tmp_path, "whole", env)
    time.sleep(1.0)
    assert not whole[1].exists()
    for proc, _, release in (half, quarters[1], late):
        release.touch()
        assert proc.wait(30) == 0
    _wait_for(whole[1])
    whole[2].touch()
    assert whole[0].wait(30) == 0


def test_a_whole_gpu_job_goes_to_a_free_gpu_beside_a_shared_one(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="2")
    shared = _start(tmp_path, "shared", env, "--jobs-per-gpu", "8")
    assert _wait_for(shared[1])[0] == "0"
    whole = _start(tmp_path, "whole", env)
    assert _wait_for(whole[1])[0] == "1"
    for proc, _, release in (shared, whole):
        release.touch()
        assert proc.wait(30) == 0


@pytest.mark.parametrize("options, env_value, message", [
    (("--jobs-per-gpu", "5"), None, "--jobs-per-gpu must be one of 1, 2, 3, 4, 6, 8, 12, 24"),
    ((), "7", "LATENTGEN_JOBS_PER_GPU must be one of"),
    ((), "two", "LATENTGEN_JOBS_PER_GPU must be a positive integer"),
])
def test_a_share_that_does_not_divide_a_gpu_is_refused(tmp_path, options, env_value, message):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1", **({"LATENTGEN_JOBS_PER_GPU": env_value} if env_value else {}))
    done = subprocess.run([sys.executable, "-m", "latentgen.workflow.gpu_slots", *options, "--", sys.executable,
                           "-c", "print('ran')"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and message in done.stderr and "ran" not in done.stdout


def test_pool_hands_out_the_listed_visible_devices(tmp_path):
    env = _env(tmp_path, CUDA_VISIBLE_DEVICES="5,7")
    a, b = _start(tmp_path, "a", env), _start(tmp_path, "b", env)
    assert {_wait_for(a[1])[0], _wait_for(b[1])[0]} == {"5", "7"}
    for proc, _, release in (a, b):
        release.touch()
        assert proc.wait(30) == 0


def test_under_slurm_the_allocation_is_untouched(tmp_path):
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="4", SLURM_JOB_ID="1234", CUDA_VISIBLE_DEVICES="3")
    done = subprocess.run([sys.executable, "-m", "latentgen.workflow.gpu_slots", "--", sys.executable, "-c",
                           "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], 'LATENTGEN_GPU_SLOT' in os.environ)"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.split() == ["3", "False"]
    assert not (tmp_path / "locks").exists()


def test_bad_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LATENTGEN_NUM_GPUS", "zero")
    with pytest.raises(ValueError, match="LATENTGEN_NUM_GPUS"):
        gpu_slots.visible_devices()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES lists 1"):
        gpu_slots.visible_devices(2)
    env = _env(tmp_path, LATENTGEN_NUM_GPUS="1")
    done = subprocess.run([sys.executable, "-m", "latentgen.workflow.gpu_slots", "--"], env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "no command" in done.stderr


def test_acquire_times_out_when_every_slot_is_held(tmp_path):
    slot, device, fds = gpu_slots.acquire_slot(["0"], tmp_path)
    assert len(fds) == gpu_slots.GPU_UNITS
    try:
        with pytest.raises(TimeoutError, match="no GPU with 1/2 of it free"):
            gpu_slots.acquire_slot(["0"], tmp_path, jobs_per_gpu=2, poll_s=0.05, timeout_s=0.3)
    finally:
        for fd in fds:
            os.close(fd)
    slot2, _, fds2 = gpu_slots.acquire_slot(["0"], tmp_path, timeout_s=1)
    for fd in fds2:
        os.close(fd)
    assert slot == slot2 == 0 and device == "0"


def test_pools_listing_a_gpu_differently_share_its_locks(tmp_path):
    # a workflow started with CUDA_VISIBLE_DEVICES=1 and one that sees 0,1 both use physical GPU 1:
    # its locks are named by the id, so the second one must not get GPU 1 while the first holds it
    _, device, fds = gpu_slots.acquire_slot(["1"], tmp_path)
    fds2 = []
    try:
        assert device == "1"
        _, other, fds2 = gpu_slots.acquire_slot(["0", "1"], tmp_path, timeout_s=1)
        assert other == "0"
        with pytest.raises(TimeoutError):
            gpu_slots.acquire_slot(["0", "1"], tmp_path, poll_s=0.05, timeout_s=0.3)
        # UUIDs of MIG slices become safe file names
        assert gpu_slots.lock_file(tmp_path, "MIG-4f1c/7/0", 3).name == "gpuMIG_4f1c_7_0.unit3.lock"
    finally:
        for fd in fds + fds2:
            os.close(fd)
