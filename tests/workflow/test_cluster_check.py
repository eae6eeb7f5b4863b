"""latentgen.workflow.cluster (the SLURM preflight) on text captured from a real SLURM 22.05 cluster
(tests/fixtures/slurm, from ../shared/slurm/start-local-slurm.sh with and without accounting), and
the two SLURM profiles. No cluster needed; tests/workflow/test_slurm.py runs the same against a live one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latentgen.workflow import cluster
from latentgen.workflow.cluster import (FAIL, Slurm, check_cluster, load_profile, parse_mem_mb, parse_runtime_minutes,
                                        sbatch_test_args)
from latentgen.workflow.slurm_outputs import (accounting_enabled, parse_accounts, parse_gres_gpus,
                                              parse_scontrol_config, parse_seconds, parse_sinfo,
                                              parse_slurm_time_limit, parse_test_only)

REPO = Path(__file__).resolve().parents[2]
CAPTURED = REPO / "tests" / "fixtures" / "slurm"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
LOCAL_PROFILE = REPO / "tests" / "fixtures" / "slurm-profile" / "config.yaml"


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


# A site with several partitions, in the form `sinfo -h -o '%P|%a|%l|%D|%T|%c|%m|%G'` prints it
# (one line per partition, node configuration and state).
SITE_SINFO = """\
cpu*|up|2-00:00:00|10|idle|64|256000|(null)
cpu*|up|2-00:00:00|2|drained|64|256000|(null)
cpu*|up|2-00:00:00|4|mixed|128|512000+|(null)
gpu|up|1-00:00:00|4|mixed|32|512000|gpu:a100:4(S:0-1)
gpu|up|1-00:00:00|1|down*|32|512000|gpu:a100:4(S:0-1)
gpu|up|1-00:00:00|2|idle|48|768000|gpu:h100:8(S:0-1),mps:800
short|up|30:00|1|idle|8|32000|gpu:1
maint|down|infinite|3|idle|8|16000|(null)
"""


# --------------------------------------------------------------------------- parsers


def test_scontrol_config_with_and_without_accounting():
    on = parse_scontrol_config(captured("scontrol_show_config.accounting.txt"))
    off = parse_scontrol_config(captured("scontrol_show_config.no_accounting.txt"))
    assert on["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert off["AccountingStorageType"] == "accounting_storage/none"
    assert accounting_enabled(on) and not accounting_enabled(off)
    assert on["SLURM_VERSION"] == off["SLURM_VERSION"] == "22.05.8"
    # every "Key = value" line of the capture becomes an entry, values with spaces intact
    lines = [l for l in captured("scontrol_show_config.accounting.txt").splitlines() if " = " in l]
    assert len(on) == len({l.split("=")[0].strip() for l in lines})
    assert on["MinJobAge"] == "300 sec" and parse_seconds(on["MinJobAge"]) == 300
    assert on["AccountingStorageTRES"].endswith("gres/gpu")
    assert not accounting_enabled({}) and not accounting_enabled({"AccountingStorageType": "(null)"})


@pytest.mark.parametrize("text, seconds", [
    ("300 sec", 300), ("45", 45), ("5 min", 300), ("1h", 3600), ("2 days", 172800), ("", None), ("sec", None),
    ("3 fortnights", None),
])
def test_parse_seconds(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text, minutes", [
    ("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:00", 30), ("30:30", 31), ("2:00:00", 120),
    ("1-00:00:00", 1440), ("1-12", 2160), ("2-03:04", 2 * 1440 + 3 * 60 + 4), ("0-00:00:01", 1),
])
def test_parse_slurm_time_limit(text, minutes):
    assert parse_slurm_time_limit(text) == minutes


@pytest.mark.parametrize("gres, expected", [
    ("gpu:1", (1, [])), ("(null)", (0, [])), ("gpu", (1, [])), ("gpu:a100:4(S:0-1)", (4, ["a100"])),
    ("gpu:h100:8(S:0-1),mps:800", (8, ["h100"])), ("mps:400,gpu:tesla:2(S:0)", (2, ["tesla"])),
    ("gpu:a100:2,gpu:v100:2", (4, ["a100", "v100"])), ("gpu:a100", (1, ["a100"])), ("shard:4", (0, [])),
])
def test_parse_gres_gpus(gres, expected):
    assert parse_gres_gpus(gres) == expected


def test_parse_sinfo_of_the_local_cluster():
    parts = parse_sinfo(captured("sinfo.local.txt"))
    assert list(parts) == ["debug"]
    debug = parts["debug"]
    assert debug.default and debug.available == "up" and debug.time_limit_min is None
    assert (debug.nodes, debug.usable_nodes, debug.max_gpus_per_node) == (1, 1, 1)
    # CPUs and memory as the capture says (the script gives the node the machine's cores/memory)
    fields = captured("sinfo.local.txt").strip().split("|")
    assert (debug.max_cpus, debug.max_mem_mb) == (int(fields[5]), int(fields[6]))


def test_parse_sinfo_merges_lines_of_a_partition():
    parts = parse_sinfo(SITE_SINFO)
    assert sorted(parts) == ["cpu", "gpu", "maint", "short"]
    cpu, gpu, short, maint = parts["cpu"], parts["gpu"], parts["short"], parts["maint"]
    assert cpu.default and not gpu.default
    assert (cpu.nodes, cpu.usable_nodes, cpu.max_cpus, cpu.max_mem_mb) == (16, 14, 128, 512000)
    assert (cpu.max_gpus_per_node, cpu.time_limit_min) == (0, 2 * 1440)
    assert (gpu.nodes, gpu.usable_nodes, gpu.max_gpus_per_node) == (7, 6, 8)
    assert gpu.gpu_types == ["a100", "h100"] and gpu.time_limit_min == 1440
    assert (short.time_limit_min, short.max_gpus_per_node) == (30, 1)
    assert maint.available == "down" and maint.time_limit_min is None


def test_parse_sinfo_refuses_another_format():
    with pytest.raises(ValueError, match="unexpected sinfo line"):
        parse_sinfo("PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\ndebug* up infinite 1 idle localhost\n")


def test_parse_accounts_and_test_only_captures():
    assert parse_accounts(captured("sacctmgr_accounts.txt")) == {"local", "root"}
    assert parse_accounts("") == set()
    ok, why = parse_test_only(0, captured("sbatch_test_only.accepted.txt"))
    assert ok and why.startswith("sbatch: Job ") and "to start at" in why
    ok, why = parse_test_only(1, captured("sbatch_test_only.refused.txt"))
    assert not ok and why == "allocation failure: Requested node configuration is not available"
    ok, why = parse_test_only(1, "sbatch: error: invalid partition specified: nope\n"
                                 "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert not ok and "invalid partition specified: nope" in why
    assert parse_test_only(1, "") == (False, "sbatch exited with 1")


@pytest.mark.parametrize("value, minutes", [
    (720, 720), ("720", 720), ("2h", 120), ("90m", 90), ("1h30m", 90), ("1d12h", 2160), ("45min", 45),
    ("'2h'", 120), ("soon", None), ("2h later", None), (True, None),
])
def test_parse_runtime_minutes(value, minutes):
    assert parse_runtime_minutes(value) == minutes


@pytest.mark.parametrize("value, mb", [
    (4000, 4000), ("16G", 16000), ("16 GB", 16000), ("500 MB", 500), ("500M", 500), ("2T", 2_000_000),
    ("lots", None),
])
def test_parse_mem_mb(value, mb):
    assert parse_mem_mb(value) == mb


# --------------------------------------------------------------------------- profiles


def _flatten(obj, prefix=()):
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, prefix + (str(key),)))
        return out
    return {prefix: obj}


def test_local_profile_differs_from_the_slurm_profile_only_in_site_values():
    real = _flatten(yaml.safe_load(SLURM_PROFILE.read_text()))
    local = _flatten(yaml.safe_load(LOCAL_PROFILE.read_text()))
    differing = {path for path in set(real) | set(local) if real.get(path) != local.get(path)}
    site_keys = {"slurm_partition", "slurm_account", "mem_mb"}
    polling = {("slurm-init-seconds-before-status-checks",), ("seconds-between-status-checks",)}
    allowed = {p for p in differing if p[-1] in site_keys and p[0] in ("default-resources", "set-resources")}
    allowed |= polling | {("software-deployment-method",)}
    assert differing - allowed == set(), "the local test profile must differ only in site values"
    # and where they differ, the local values are the local cluster's
    for path in differing:
        if path[-1] == "slurm_partition":
            assert local[path] == "debug"
        elif path[-1] == "slurm_account":
            assert local[path] == "local"
        elif path in polling:
            assert local[path] == 2
    assert ("software-deployment-method",) not in local  # no conda on the test machine
    # the same rules get resources and groups in both
    assert set(yaml.safe_load(LOCAL_PROFILE.read_text())["set-resources"]) == \
        set(yaml.safe_load(SLURM_PROFILE.read_text())["set-resources"])


def test_slurm_profile_has_placeholders_only_for_site_names():
    profile = load_profile(SLURM_PROFILE.parent)
    where = {w for w, _ in profile.placeholders()}
    assert where and all(w.endswith(("slurm_partition", "slurm_account")) for w in where)
    assert "default-resources: slurm_account" in where
    # and nothing else in the file carries the marker (comments excluded)
    values = _flatten(yaml.safe_load(SLURM_PROFILE.read_text()))
    marked = {p for p, v in values.items() if cluster.PLACEHOLDER in str(v)}
    assert {": ".join(p) for p in marked} == where
    assert load_profile(LOCAL_PROFILE).placeholders() == []


def test_load_profile_merges_defaults_and_rules():
    settings = yaml.safe_load(SLURM_PROFILE.read_text())
    profile = load_profile(SLURM_PROFILE)
    default = profile.requests[0]
    assert default.rules == () and default.label == "default resources"
    assert default.partition == settings["default-resources"]["slurm_partition"]
    assert default.mem_mb == settings["default-resources"]["mem_mb"] and default.gpus == 0
    by_rule = {rule: r for r in profile.requests[1:] for rule in r.rules}
    assert set(by_rule) == set(settings["set-resources"])
    for rule, resources in settings["set-resources"].items():
        request = by_rule[rule]
        merged = {**settings["default-resources"], **resources}
        assert request.partition == merged["slurm_partition"]
        assert request.account == merged["slurm_account"]  # inherited from the defaults
        assert request.gpus == merged.get("gpu", 0)
        assert request.runtime_min == merged["runtime"] and request.mem_mb == merged["mem_mb"]
    # rules asking for the same thing are reported together
    same = [r for r in profile.requests if len(r.rules) > 1]
    for request in same:
        assert len({tuple(sorted(settings["set-resources"][rule].items())) for rule in request.rules}) == 1


def test_load_profile_reads_the_list_forms(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "executor: slurm\n"
        "default-resources: [\"slurm_partition='short'\", 'slurm_account=\"lab\"', mem_mb=2000, runtime=2h]\n"
        "set-resources: ['train:gpu=2', 'train:slurm_partition=gpu', 'probe:mem=16G']\n"
        "set-threads: [train=8]\n")
    profile = load_profile(tmp_path)
    default, *rules = profile.requests
    assert (default.partition, default.account, default.mem_mb, default.runtime_min) == ("short", "lab", 2000, 120)
    by_rule = {r.rules: r for r in rules}
    assert (by_rule[("train",)].gpus, by_rule[("train",)].partition, by_rule[("train",)].cpus) == (2, "gpu", 8)
    assert by_rule[("probe",)].mem_mb == 2000  # mem_mb (default) wins over mem, as in Snakemake
    assert by_rule[("probe",)].raw["mem"] == "16G"


def test_load_profile_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="profile not found"):
        load_profile(tmp_path / "nowhere")
    bad = tmp_path / "bad.yaml"
    bad.write_text("set-resources: ['train=gpu=1']\n")
    with pytest.raises(ValueError, match="train=gpu=1"):
        load_profile(bad)
    bad.write_text("default-resources: [mem_mb]\n")
    with pytest.raises(ValueError, match="not NAME=VALUE"):
        load_profile(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="YAML mapping"):
        load_profile(bad)


def test_sbatch_test_args_mirror_the_plugin():
    gpu_request = next(r for r in load_profile(LOCAL_PROFILE).requests if "train" in r.rules)
    args = sbatch_test_args(gpu_request)
    assert args[:2] == ["sbatch", "--test-only"] and args[-2:] == ["--wrap", "true"]
    assert "--gpus=1" in args and "--ntasks=1" not in args
    assert args[args.index("-p") + 1] == "debug" and args[args.index("-A") + 1] == "local"
    assert args[args.index("-t") + 1] == str(gpu_request.runtime_min)
    cpu_args = sbatch_test_args(load_profile(LOCAL_PROFILE).requests[0])
    assert "--ntasks=1" in cpu_args and not any(a.startswith(("--gpus", "--gres")) for a in cpu_args)


def test_profile_names_rules_and_groups_of_the_workflow(tmp_path):
    """A renamed rule or group would silently drop its resources or grouping."""
    if not (REPO / "Snakefile").exists():
        pytest.skip("workflow not present")
    demo = REPO / "profiles" / "demo" / "demo.yaml"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--configfile", str(demo), "--list-rules"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rules = set(proc.stdout.split())
    settings = yaml.safe_load(SLURM_PROFILE.read_text())
    assert set(settings["set-resources"]) <= rules
    grouped = {entry.split("=")[0] for entry in settings["groups"]}
    assert grouped <= rules
    sources = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    workflow_groups = set(re.findall(r"group:\s*\n\s*\"([\w-]+)\"", sources))
    profile_groups = {entry.split("=")[1] for entry in settings["groups"]}
    for entry in settings["group-components"]:
        assert entry.split("=")[0] in workflow_groups | profile_groups


# --------------------------------------------------------------------------- the check


class FakeSlurm(Slurm):
    """Answers SLURM commands with captured text; records what was asked."""

    def __init__(self, config="scontrol_show_config.accounting.txt", sinfo=None, accounts=None,
                 test_only=(0, "sbatch_test_only.accepted.txt"), missing=(), config_edit=None):
        super().__init__()
        self.config = captured(config)
        if config_edit:
            self.config = config_edit(self.config)
        self.sinfo = captured("sinfo.local.txt") if sinfo is None else sinfo
        self.accounts = captured("sacctmgr_accounts.txt") if accounts is None else accounts
        self.test_only = (test_only[0], captured(test_only[1]))
        self.missing = set(missing)
        self.calls: list[list[str]] = []

    def which(self, name):
        return name not in self.missing

    def user(self):
        return "root"

    def run(self, args):
        self.calls.append(args)
        if args[:3] == ["scontrol", "show", "config"]:
            return 0, self.config, ""
        if args[0] == "sinfo":
            return 0, self.sinfo, ""
        if args[0] == "sacctmgr":
            return (0, self.accounts, "") if self.accounts else (1, "", "not running a supported plugin")
        if args[0] == "sshare":
            return 0, "", ""
        if args[:2] == ["sbatch", "--test-only"]:
            return self.test_only[0], "", self.test_only[1]
        raise AssertionError(f"unexpected command {args}")


def _profile(tmp_path, text_edit=None, extra=""):
    text = LOCAL_PROFILE.read_text()
    if text_edit:
        text = text_edit(text)
    path = tmp_path / "config.yaml"
    path.write_text(text + extra)
    return load_profile(path)


def _levels(findings, level=FAIL):
    return [f for f in findings if f.level == level]


def test_local_profile_on_the_local_cluster_passes(tmp_path):
    slurm = FakeSlurm()
    findings = check_cluster(load_profile(LOCAL_PROFILE), slurm)
    assert _levels(findings) == []
    test_calls = [c for c in slurm.calls if c[:2] == ["sbatch", "--test-only"]]
    # one --test-only per distinct request, GPU requests first
    assert len(test_calls) == len({r.key() for r in load_profile(LOCAL_PROFILE).requests})
    assert "--gpus=1" in test_calls[0]
    assert any(f.topic == "sbatch" and "GPU job accepted" in f.message for f in findings)


def test_no_accounting_needs_squeue_status(tmp_path):
    slurm = FakeSlurm(config="scontrol_show_config.no_accounting.txt", accounts="")
    failed = _levels(check_cluster(load_profile(LOCAL_PROFILE), slurm))
    assert len(failed) == 1 and "slurm-status-command: squeue" in failed[0].message
    assert not any(c[0] == "sbatch" for c in slurm.calls)  # nothing asked of sbatch before the fix
    fixed = _profile(tmp_path, extra="slurm-status-command: squeue\n")
    findings = check_cluster(fixed, FakeSlurm(config="scontrol_show_config.no_accounting.txt", accounts=""))
    assert _levels(findings) == []
    assert any("MinJobAge 300 s" in f.message for f in findings)
    assert any(f.topic == "accounts" and "not checkable" in f.message for f in findings)


def test_no_accounting_with_short_min_job_age_is_blocking(tmp_path):
    short = FakeSlurm(config="scontrol_show_config.no_accounting.txt", accounts="",
                      config_edit=lambda t: re.sub(r"MinJobAge\s*=.*", "MinJobAge = 60 sec", t))
    failed = _levels(check_cluster(_profile(tmp_path, extra="slurm-status-command: squeue\n"), short))
    assert len(failed) == 1 and "MinJobAge is 60 s" in failed[0].message and ">= 180" in failed[0].message


def test_missing_partition_and_account(tmp_path):
    profile = _profile(tmp_path, lambda t: t.replace('slurm_account: "local"', 'slurm_account: "nosuch"')
                       .replace('slurm_partition: "debug"\n    gpu: 1\n    runtime: 720',
                                'slurm_partition: "a100"\n    gpu: 1\n    runtime: 720'))
    slurm = FakeSlurm()
    failed = _levels(check_cluster(profile, slurm))
    messages = " | ".join(f.message for f in failed)
    assert "partition 'a100' does not exist" in messages and "rules train" in messages
    assert "partitions here: debug" in messages
    assert "account 'nosuch' is not one of root's accounts (local, root)" in messages
    assert not any(c[0] == "sbatch" for c in slurm.calls)


def test_gpu_request_on_a_partition_without_gpus(tmp_path):
    # train on the CPU partition of a multi-partition site
    profile = _profile(tmp_path, lambda t: t.replace('"debug"', '"gpu"')
                       .replace('slurm_partition: "gpu"\n    gpu: 1\n    runtime: 720',
                                'slurm_partition: "cpu"\n    gpu: 1\n    runtime: 720')
                       .replace("mem_mb: 1000", "mem_mb: 4000"))
    failed = _levels(check_cluster(profile, FakeSlurm(sinfo=SITE_SINFO, accounts=" local\n")))
    assert len(failed) == 1
    assert failed[0].topic == "gpus" and "partition 'cpu' has no GPUs" in failed[0].message
    assert "rules train" in failed[0].message


def test_time_memory_cpus_and_gpu_count_beyond_the_partition(tmp_path):
    profile = _profile(tmp_path, lambda t: t.replace('"debug"', '"short"').replace("runtime: 720", "runtime: 45")
                       .replace("mem_mb: 1000\n  group_slot", "mem_mb: 64000\n  group_slot")
                       .replace("gpu: 1\n    runtime: 240", "gpu: 2\n    runtime: 240"),
                       extra="set-threads: [probe_run=16]\n")
    failed = _levels(check_cluster(profile, FakeSlurm(sinfo=SITE_SINFO, accounts="local\n")))
    topics = sorted(f.topic for f in failed)
    text = " | ".join(f.message for f in failed)
    assert "runtime 45 min exceeds the time limit of 'short' (30 min)" in text
    assert "mem_mb 64000 exceeds the largest node of 'short' (32000 MB)" in text
    assert "rules probe_run: ask for 2 GPUs; nodes of 'short' have at most 1" in text
    assert "rules probe_run: 16 threads but nodes of 'short' have 8 CPUs" in text
    # the default request too: 64000 MB is more than a 'short' node has
    assert topics.count("memory") == len([r for r in profile.requests if r.mem_mb == 64000])


def test_refused_test_submission_is_blocking():
    slurm = FakeSlurm(test_only=(1, "sbatch_test_only.refused.txt"))
    failed = _levels(check_cluster(load_profile(LOCAL_PROFILE), slurm))
    assert failed and all(f.topic == "sbatch" for f in failed)
    assert "Requested node configuration is not available" in failed[0].message
    assert "--gpus=1" in failed[0].message  # the refused call is shown


def test_placeholders_and_missing_client_commands():
    failed = _levels(check_cluster(load_profile(SLURM_PROFILE), FakeSlurm()))
    placeholders = load_profile(SLURM_PROFILE).placeholders()
    assert len(failed) == len(placeholders)
    assert all("still the placeholder" in f.message for f in failed)
    failed = _levels(check_cluster(load_profile(LOCAL_PROFILE), FakeSlurm(missing={"sbatch"})))
    assert len(failed) == 1 and "login node" in failed[0].message


def test_cli_exit_status(tmp_path, capsys, monkeypatch):
    from latentgen.__main__ import main

    monkeypatch.setattr(cluster, "Slurm", lambda timeout: FakeSlurm())
    monkeypatch.setattr("latentgen.commands.cluster_check.Slurm", lambda timeout: FakeSlurm())
    assert main(["cluster-check", "--profile", str(LOCAL_PROFILE)]) == 0
    assert "cluster-check: ready" in capsys.readouterr().out
    assert main(["cluster-check", "--profile", str(SLURM_PROFILE)]) == 1
    out = capsys.readouterr().out
    assert "blocking problem(s)" in out and "EDIT_ME_account" in out
    assert main(["cluster-check", "--profile", str(tmp_path / "none")]) == 1
    assert "profile not found" in capsys.readouterr().err
