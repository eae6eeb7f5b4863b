"""The SLURM profile and the preflight against a real SLURM cluster on this machine.

A session fixture starts a single-node SLURM 22.05 (slurmctld, slurmd, slurmdbd, one fake GPU)
with ../shared/slurm/start-local-slurm.sh. Skipped, with the reason, only where that cannot
work: not root, no Debian package tools, no script, or Debian's package archive unreachable.

* cluster-check on the live cluster: the local profile passes; a missing partition, an unknown
  account and more GPUs than a node has are blocking; then the same without job accounting.
* End to end: `snakemake --profile tests/fixtures/slurm-profile` builds Figure 3 of a reduced demo
  configuration through SLURM while the same configuration runs locally. SLURM kills the
  training job half-way (scancel: SIGTERM, then SIGKILL, as at a time limit); the waiting
  Snakemake is lost too (plugin 2.8.0 never notices a "CANCELLED by <uid>" job), unlocked and
  rerun. Checked: nothing complete was left by the kill; every job but the local rules went
  through SLURM (sacct lists each submission, each job's SLURM log is named by its job id and
  names the rules it ran); GPU rules were given a GPU (gres/gpu=1), the others none; the small
  jobs were grouped; the rerun training resumed; the training log and Figure 3's CSV equal the
  local run's.

Snakemake runs under `timeout -k` throughout: the SLURM plugin can wait forever and ignores a
first SIGTERM.
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from latentgen.workflow import plan

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO.parent / "shared" / "slurm" / "start-local-slurm.sh"
LOCAL_PROFILE = REPO / "tests" / "fixtures" / "slurm-profile"
DEMO_CONFIG = REPO / "profiles" / "demo" / "demo.yaml"
CLUSTER_DIR = Path("/tmp/slurm-local")  # the script's default --dir
SLURM_CONF = CLUSTER_DIR / "etc" / "slurm.conf"
# rules the workflow runs on the submit host (localrules), never through SLURM
LOCAL_RULES = {"download", "all"}
GPU_RULES = set(plan.GPU_RULES)  # the rules that ask for a GPU (the profile sets them)


def _env() -> dict:
    env = dict(os.environ, SLURM_CONF=str(SLURM_CONF))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for key in list(env):  # a test run inside a SLURM job must not leak its job into ours
        if key.startswith(("SLURM_", "SBATCH_", "SRUN_")) and key != "SLURM_CONF":
            del env[key]
    return env


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args, "--dir", str(CLUSTER_DIR)], capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _cluster_running() -> bool:
    if not SLURM_CONF.exists():
        return False
    status = _script("status", timeout=60).stdout
    return "slurmctld: running" in status and "slurmd: running" in status


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start (or reuse) the local cluster with accounting; stop it at the end if we started it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it installs packages and runs munged/slurmd)")
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} not found (the shared SLURM script sits next to the repository)")
    if not (shutil.which("apt-get") and shutil.which("dpkg-query")):
        pytest.skip("no Debian package tools (apt-get, dpkg-query): cannot install SLURM here")
    was_running = _cluster_running()
    start = time.monotonic()
    proc = _script()
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if re.search(r"Temporary failure resolving|Could not resolve|Failed to fetch|Unable to locate package|"
                     r"has no installation candidate|Unable to fetch", output):
            pytest.skip(f"Debian's package archive is not reachable, SLURM cannot be installed: "
                        f"{output.strip().splitlines()[-1]}")
        pytest.fail(f"start-local-slurm.sh failed ({proc.returncode}):\n{output[-3000:]}")
    print(f"\nlocal SLURM cluster up in {seconds:.1f} s (already running: {was_running})")
    yield {"start_seconds": seconds}
    if not was_running:
        _script("stop", timeout=120)


def _latentgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentgen", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=REPO)


def _profile_variant(tmp_path: Path, name: str, edit=lambda t: t, extra: str = "") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_text(edit((LOCAL_PROFILE / "config.yaml").read_text()) + extra)
    return folder


# --------------------------------------------------------------------------- preflight


def test_cluster_check_on_the_live_cluster(slurm_cluster, tmp_path):
    good = _latentgen("cluster-check", "--profile", str(LOCAL_PROFILE))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "accounting: on" in good.stdout
    assert "account 'local': root may submit with it" in good.stdout
    assert re.search(r"rules train: GPU job accepted by 'sbatch --test-only' \(sbatch: Job \d+ to start",
                     good.stdout)

    bad = _profile_variant(tmp_path, "bad", lambda t: t.replace('slurm_account: "local"', 'slurm_account: "nolab"')
                           .replace('slurm_partition: "debug"\n    gpu: 1\n    runtime: 720',
                                    'slurm_partition: "gpu_a100"\n    gpu: 1\n    runtime: 720'))
    proc = _latentgen("cluster-check", "--profile", str(bad))
    assert proc.returncode == 1, proc.stdout
    assert "partition 'gpu_a100' does not exist" in proc.stdout and "partitions here: debug" in proc.stdout
    assert "account 'nolab' is not one of root's accounts" in proc.stdout

    # the node has one GPU: a job asking for two would pend forever
    greedy = _profile_variant(tmp_path, "greedy", lambda t: t.replace("gpu: 1\n    runtime: 720",
                                                                      "gpu: 2\n    runtime: 720"))
    proc = _latentgen("cluster-check", "--profile", str(greedy))
    assert proc.returncode == 1, proc.stdout
    assert "rules train: ask for 2 GPUs; nodes of 'debug' have at most 1" in proc.stdout


# --------------------------------------------------------------------------- end to end


def _reduced_demo_config(path: Path) -> dict:
    """The demo experiment cut to what Figure 3 needs from one model, degree and run.

    Two probed checkpoints (epochs 0 and 1) keep the SLURM jobs few; 12 epochs in batches of 8
    keep the training running long enough (seconds) to be killed half-way."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    mlp = dict(cfg["models"]["mlp_digits"])
    mlp.update(max_epochs=12, train_args={**mlp.get("train_args", {}), "batch_size": 8})
    cfg.update(outdir="results", corruptions=[0.4], runs=[1], models={"mlp_digits": mlp},
               grid={"dense_until": 1, "dense_step": 1, "step": 1000})
    cfg["figures"] = {**cfg["figures"], "groups": {"main": ["mlp_digits"]}, "build": ["fig3"]}
    cfg["repair"] = {"models": []}  # the repair stage is tested locally (tests/workflow/test_workflow.py)
    cfg["relabel"] = {"models": []}  # and so are the 2025 paper's stages
    cfg["tables"] = {"build": [], "claims": False}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def _snakemake(args: list[str], cwd: Path, log: Path, limit: int) -> subprocess.Popen:
    command = ["timeout", "-k", "10", str(limit), sys.executable, "-m", "snakemake",
               "--snakefile", str(REPO / "Snakefile"), *args]
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)


def _sacct(run_id: str) -> dict[str, dict]:
    since = (datetime.datetime.now() - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    proc = subprocess.run(["sacct", "-X", "-P", "-n", "--name", run_id, "--starttime", since,
                           "-o", "JobIDRaw,State,ReqTRES,AllocTRES"], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    jobs = {}
    for line in proc.stdout.splitlines():
        jobid, state, req, alloc = line.split("|")
        jobs[jobid] = {"state": state.split()[0], "req": req, "alloc": alloc}
    return jobs


def _job_state(jobid: str) -> str:
    proc = subprocess.run(["sacct", "-X", "-P", "-n", "-j", jobid, "-o", "State"], capture_output=True,
                          text=True, timeout=60, env=_env())
    return proc.stdout.strip()


def _inner_rules(slurm_log: Path) -> list[str]:
    """Rules a SLURM job ran: the innermost Snakemake prints each as 'localrule NAME:' (or
    'localcheckpoint NAME:')."""
    return re.findall(r"^\s*local(?:rule|checkpoint) (\w+):", slurm_log.read_text(), flags=re.M)


def _tres_gpus(tres: str) -> int:
    match = re.search(r"gres/gpu=(\d+)", tres)
    return int(match.group(1)) if match else 0


def _csv_without_seconds(path: Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [row[:drop] + row[drop + 1:] for row in rows]


@pytest.mark.slow
def test_figure3_through_slurm_equals_a_local_run(slurm_cluster, tmp_path):
    config = tmp_path / "reduced.yaml"
    _reduced_demo_config(config)
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    on_slurm.mkdir()
    local.mkdir()
    started = time.monotonic()
    # the reference, at the same time (the SLURM run mostly waits)
    local_log = tmp_path / "local.log"
    local_proc = _snakemake(["--configfile", str(config), "--cores", "2"], local, local_log, 240)
    slurm_args = ["--configfile", str(config), "--profile", str(LOCAL_PROFILE), "--slurm-keep-successful-logs"]

    # 1. run until the training has finished an epoch, then have SLURM kill the training job
    #    (scancel: SIGTERM, then SIGKILL after KillWait, as at a time limit)
    first_log = tmp_path / "slurm-1.log"
    first = _snakemake(slurm_args + ["--retries", "0"], on_slurm, first_log, 200)
    run = on_slurm / "results" / "runs" / "mlp" / "digits" / "c0.4" / "run1"
    killed, kept = None, {}
    while first.poll() is None and killed is None:
        if (run / "resume.pt").exists() and not (run / "manifest.json").exists():
            submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_train/", first_log.read_text())
            if submitted:
                # what the interrupted training had written, to see that the rerun keeps it
                kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (run / "checkpoints").glob("*.pt")}
                killed = submitted[0]
                subprocess.run(["scancel", killed], check=True, env=_env(), timeout=30)
        time.sleep(0.05)
    assert killed is not None, f"the training finished before it could be killed:\n{first_log.read_text()[-3000:]}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until SLURM has ended it (SIGKILL after KillWait)
        state = _job_state(killed)
        if state and not state.startswith(("RUNNING", "COMPLETING", "PENDING")):
            break
        time.sleep(0.5)
    assert _job_state(killed).startswith("CANCELLED"), \
        f"training job {killed} ended {_job_state(killed)!r} before SLURM's kill took effect (train longer)"
    assert not (run / "manifest.json").exists(), "a killed training must not leave a complete output"
    # plugin 2.8.0 never sees a job that sacct reports as "CANCELLED by <uid>" and would wait for it
    # forever; lose that Snakemake as with a dropped login session (Ctrl-C works too, but its
    # shutdown waits out the current status-check interval, up to minutes)
    try:
        first.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    unlock = _snakemake(slurm_args + ["--unlock"], on_slurm, tmp_path / "unlock.log", 120)
    assert unlock.wait(timeout=150) == 0, (tmp_path / "unlock.log").read_text()[-3000:]

    # 2. rerun the same command: the training resumes
    second_log = tmp_path / "slurm-2.log"
    second = _snakemake(slurm_args, on_slurm, second_log, 300)
    assert second.wait(timeout=330) == 0, f"rerun on SLURM failed:\n{second_log.read_text()[-4000:]}"
    slurm_seconds = time.monotonic() - started
    assert local_proc.wait(timeout=240) == 0, local_log.read_text()[-4000:]
    print(f"\nSLURM runs (killed, then rerun) {slurm_seconds:.0f} s, local reference alongside")

    # -- every job went through SLURM, and sacct knows each submission
    submissions, jobs, finished = {}, {}, collections.Counter()
    for log in (first_log, second_log):
        text = log.read_text()
        submissions.update(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", text))
        jobs.update(_sacct(re.search(r"SLURM run ID: (\S+)", text).group(1)))
        finished.update(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text))
    assert set(jobs) == set(submissions), "sacct must list exactly the jobs Snakemake submitted"
    ran_on_slurm = collections.Counter()
    for jobid, log in submissions.items():
        log = Path(log)
        assert log.name == f"{jobid}.log" and log.exists()  # each job's SLURM log carries its job id
        if jobs[jobid]["state"] == "COMPLETED":
            ran_on_slurm.update(_inner_rules(log))
    expected = collections.Counter({rule: n for rule, n in finished.items() if rule not in LOCAL_RULES})
    assert ran_on_slurm == expected
    assert {"corrupt", "train", "probe_run", "metrics", "fig3"} <= set(expected)

    # -- GPU rules got a GPU (sbatch --gpus=1 → gres/gpu=1), the others none
    for jobid, log in submissions.items():
        rules = set(_inner_rules(Path(log)))
        wants_gpu = bool(rules & GPU_RULES)
        assert _tres_gpus(jobs[jobid]["req"]) == (1 if wants_gpu else 0), (rules, jobs[jobid])
        assert _tres_gpus(jobs[jobid]["alloc"]) == (1 if wants_gpu else 0), (rules, jobs[jobid])
    # ... asked for as `--gpus=1` (per job), not `--gres=gpu:1` (per node): slurmctld still knows
    # the jobs that ended less than MinJobAge (300 s) ago
    visible = 0
    for jobid, log in submissions.items():
        if set(_inner_rules(Path(log))) & GPU_RULES:
            shown = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True,
                                   env=_env(), timeout=60)
            if shown.returncode == 0:
                visible += 1
                assert "TresPerJob=gres:gpu:1" in shown.stdout.split(), shown.stdout
                assert "TresPerNode=" not in shown.stdout
    assert visible >= 1

    # -- grouping: the metrics tables travel together; one probe job probes the run's checkpoints
    groups = collections.Counter(Path(log).parent.name for log in submissions.values()
                                 if Path(log).parent.name.startswith("group_"))
    assert groups == {"group_summarize_metrics": 1}
    assert expected["probe_run"] == 1  # epochs 0 and 1 of the one run

    # -- the killed training: a second train job, which resumed (earlier checkpoints untouched)
    train_jobs = sorted((j for j, log in submissions.items() if "/rule_train/" in log), key=int)
    assert train_jobs[0] == killed and len(train_jobs) == 2
    assert jobs[train_jobs[1]]["state"] == "COMPLETED"
    assert kept, "the killed training had written no checkpoint"
    for name, stat in kept.items():
        path = run / "checkpoints" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stat, f"{name} was rewritten: not resumed"
    assert not (run / "resume.pt").exists()  # removed once the run completed

    # -- the same numbers as the local run
    local_run = local / "results" / "runs" / "mlp" / "digits" / "c0.4" / "run1"
    assert _csv_without_seconds(run / "train_log.csv") == _csv_without_seconds(local_run / "train_log.csv")
    slurm_csv = (on_slurm / "results" / "fig3.csv").read_text()
    assert slurm_csv == (local / "results" / "fig3.csv").read_text()
    assert len(slurm_csv.splitlines()) > 1 and (on_slurm / "results" / "fig3.pdf").stat().st_size > 0


# --------------------------------------------------------------------------- no accounting


def test_cluster_check_without_accounting(slurm_cluster, tmp_path):
    """Restart the cluster without slurmdbd accounting; restore it afterwards."""
    try:
        proc = _script("--no-accounting")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        sacct = subprocess.run(["sacct", "-X"], capture_output=True, text=True, env=_env(), timeout=60)
        assert "accounting storage is disabled" in (sacct.stdout + sacct.stderr).lower()

        plain = _latentgen("cluster-check", "--profile", str(LOCAL_PROFILE))
        assert plain.returncode == 1, plain.stdout
        assert "accounting: off" in plain.stdout and "add 'slurm-status-command: squeue'" in plain.stdout

        squeue = _profile_variant(tmp_path, "squeue", extra="slurm-status-command: squeue\n")
        fixed = _latentgen("cluster-check", "--profile", str(squeue))
        assert fixed.returncode == 0, fixed.stdout
        assert "MinJobAge 300 s >= 180 s" in fixed.stdout
        assert "GPU job accepted by 'sbatch --test-only'" in fixed.stdout

        # and the profile's no-accounting alternative really runs a job (with sacct it would hang)
        work = tmp_path / "work"
        work.mkdir()
        (work / "Snakefile").write_text('rule job_id:\n    output: "job_id.txt"\n'
                                        '    shell: "echo $SLURM_JOB_ID > {output}"\n')
        log = tmp_path / "squeue.log"
        with open(log, "w") as out:
            run = subprocess.run(["timeout", "-k", "10", "120", sys.executable, "-m", "snakemake", "--profile",
                                  str(squeue)], cwd=work, stdout=out, stderr=subprocess.STDOUT, env=_env())
        assert run.returncode == 0, log.read_text()[-3000:]
        job_id = (work / "job_id.txt").read_text().strip()
        assert re.search(rf"submitted with SLURM jobid {job_id} ", log.read_text())
    finally:
        restored = _script()
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "accounting: on" in _latentgen("cluster-check", "--profile", str(LOCAL_PROFILE),
                                          "--no-submit-test").stdout
