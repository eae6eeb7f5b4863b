"""SLURM preflight for ``latentgen cluster-check``: will this cluster run this profile?

Reads what the cluster says about itself (``scontrol show config``, ``sinfo``, the user's
accounts) and what the Snakemake profile asks for (``default-resources``, ``set-resources``,
``set-threads``, ``slurm-status-command``), and reports, before anything is submitted, the
problems that otherwise show up as a job pending forever or a Snakemake that never returns:

* no job accounting but the plugin's status command is ``sacct`` (it waits forever), or
  ``MinJobAge`` too short for ``squeue`` to see finished jobs;
* a partition or account that does not exist, a placeholder nobody edited;
* a GPU request on a partition without GPUs, more memory/time than the partition offers;
* a request ``sbatch --test-only`` refuses.

The parse functions take the commands' text, so they are tested on captured output; the
:class:`Slurm` class is the only place that runs commands.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latentgen.workflow.slurm_outputs import (Partition, SINFO_FORMAT, accounting_enabled, parse_accounts,
                                              parse_gres_gpus, parse_scontrol_config, parse_seconds, parse_sinfo,
                                              parse_test_only)

# Profile values containing this marker are placeholders the user must edit.
PLACEHOLDER = "EDIT_ME"
# The plugin polls at most every 180 s; with `squeue` status a finished job must stay
# visible at least that long (MinJobAge), or Snakemake waits for it forever.
MIN_JOB_AGE_FOR_SQUEUE_S = 180

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


# --------------------------------------------------------------------------- the profile


def parse_runtime_minutes(value) -> int | None:
    """Snakemake's ``runtime`` (minutes, or ``"90m"``, ``"2h"``, ``"1d12h"``) → minutes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().strip("'\"").replace(" ", "")
    if text.isdigit():
        return int(text)
    scale = {"s": 1 / 60, "m": 1, "min": 1, "h": 60, "d": 1440, "w": 10080}
    parts = re.findall(r"(\d+(?:\.\d+)?)(min|[smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return int(round(sum(float(n) * scale[u] for n, u in parts)))


def parse_mem_mb(value) -> int | None:
    """``mem_mb`` (an int) or ``mem`` (``"16G"``, ``"500 MB"``) → MB."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)([bB]?|i[bB])", str(value).strip().strip("'\""))
    if not match:
        return None
    scale = {"": 1, "k": 1 / 1000, "m": 1, "g": 1000, "t": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def _unquote(value):
    if isinstance(value, str):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return int(value) if value.isdigit() else value
    return value


def _resource_items(value, what: str) -> dict:
    """``{k: v}`` or ``["k=v", ...]`` (both accepted by Snakemake profiles) → dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        items = {}
        for entry in value:
            if not isinstance(entry, str) or "=" not in entry:
                raise ValueError(f"{what}: entry {entry!r} is not NAME=VALUE")
            key, _, val = entry.partition("=")
            items[key.strip()] = _unquote(val)
        return items
    raise ValueError(f"{what} must be a mapping or a list of NAME=VALUE, not {type(value).__name__}")


def _rule_items(value, what: str) -> dict[str, dict]:
    """``set-resources`` as {rule: {k: v}} or ["rule:k=v", ...] → {rule: {k: v}}."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(rule): _resource_items(res, f"{what}: {rule}") for rule, res in value.items()}
    if isinstance(value, list):
        rules: dict[str, dict] = {}
        for entry in value:
            if not isinstance(entry, str) or ":" not in entry or "=" not in entry:
                raise ValueError(f"{what}: entry {entry!r} is not RULE:NAME=VALUE")
            rule, _, rest = entry.partition(":")
            rules.setdefault(rule.strip(), {}).update(_resource_items([rest], what))
        return rules
    raise ValueError(f"{what} must be a mapping or a list of RULE:NAME=VALUE")


@dataclass
class JobRequest:
    """What one kind of job asks SLURM for (the default, or a set of rules)."""

    rules: tuple[str, ...]  # () = default resources
    partition: str | None = None
    account: str | None = None
    gpus: int = 0
    gres: str | None = None
    runtime_min: int | None = None
    mem_mb: int | None = None
    cpus: int = 1
    raw: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "default resources" if not self.rules else "rules " + ", ".join(self.rules)

    @property
    def gpus_wanted(self) -> int:
        if self.gpus:
            return self.gpus
        if self.gres:
            count, _ = parse_gres_gpus(self.gres)
            return count
        return 0

    def key(self) -> tuple:
        return (self.partition, self.account, self.gpus, self.gres, self.runtime_min, self.mem_mb, self.cpus)


@dataclass
class Profile:
    path: Path
    settings: dict
    requests: list[JobRequest]

    @property
    def status_command(self) -> str | None:
        return self.settings.get("slurm-status-command")

    def placeholders(self) -> list[tuple[str, str]]:
        """(where, value) for every resource value still containing PLACEHOLDER."""
        found = []
        for key, value in _resource_items(self.settings.get("default-resources"), "default-resources").items():
            if PLACEHOLDER in str(value):
                found.append((f"default-resources: {key}", str(value)))
        rules = _rule_items(self.settings.get("set-resources"), "set-resources")
        for rule, items in rules.items():
            for key, value in items.items():
                if PLACEHOLDER in str(value):
                    found.append((f"set-resources: {rule}: {key}", str(value)))
        return found

    @property
    def init_seconds(self) -> int:
        return int(self.settings.get("slurm-init-seconds-before-status-checks", 40))


def _int_or(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _request(rules: tuple[str, ...], resources: dict, threads: int) -> JobRequest:
    mem = resources.get("mem_mb")
    mem_mb = parse_mem_mb(mem) if mem is not None else (
        parse_mem_mb(resources["mem"]) if "mem" in resources else None)
    runtime = resources.get("runtime")
    return JobRequest(
        rules=rules,
        partition=str(resources["slurm_partition"]) if resources.get("slurm_partition") else None,
        account=str(resources["slurm_account"]) if resources.get("slurm_account") else None,
        gpus=_int_or(resources.get("gpu"), 0),
        gres=str(resources["gres"]) if resources.get("gres") else None,
        runtime_min=parse_runtime_minutes(runtime) if runtime is not None else None,
        mem_mb=mem_mb,
        cpus=_int_or(resources.get("cpus_per_task"), threads),
        raw=resources,
    )


def load_profile(path: str | Path) -> Profile:
    """Read a Snakemake profile folder (or its ``config.yaml``) into job requests.

    One request for the default resources, then one per group of rules whose merged
    resources (defaults overridden by ``set-resources``, threads from ``set-threads``) are equal.
    """
    path = Path(path)
    config_file = path / "config.yaml" if path.is_dir() else path
    if not config_file.exists():
        raise FileNotFoundError(f"profile not found: {config_file}")
    settings = yaml.safe_load(config_file.read_text()) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{config_file}: a profile must be a YAML mapping")
    defaults = _resource_items(settings.get("default-resources"), "default-resources")
    per_rule = _rule_items(settings.get("set-resources"), "set-resources")
    threads_value = settings.get("set-threads") or {}
    threads = ({str(k): _int_or(v, 1) for k, v in threads_value.items()} if isinstance(threads_value, dict)
               else {e.split("=")[0].strip(): _int_or(e.split("=")[1], 1) for e in threads_value})
    requests = [_request((), defaults, 1)]
    merged: dict[tuple, JobRequest] = {}
    for rule in sorted(set(per_rule) | set(threads)):
        request = _request((rule,), {**defaults, **per_rule.get(rule, {})}, threads.get(rule, 1))
        key = request.key()
        if key in merged:
            merged[key].rules += (rule,)
        else:
            merged[key] = request
    requests += list(merged.values())
    return Profile(path=config_file, settings=settings, requests=requests)


# --------------------------------------------------------------------------- the cluster


class Slurm:
    """Runs the SLURM client commands (replace with a fake in tests)."""

    def __init__(self, timeout: float = 30):
        self.timeout = timeout

    def run(self, args: list[str]) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError:
            return 127, "", f"{args[0]}: command not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{' '.join(args)}: no answer within {self.timeout:g} s"
        return proc.returncode, proc.stdout, proc.stderr

    def which(self, name: str) -> bool:
        return shutil.which(name) is not None

    def user(self) -> str:
        return getpass.getuser()


def sbatch_test_args(request: JobRequest) -> list[str]:
    """The ``sbatch --test-only`` call that mirrors what the plugin submits for ``request``."""
    args = ["sbatch", "--test-only", "--job-name", "latentgen-cluster-check"]
    if request.partition:
        args += ["-p", request.partition]
    if request.account:
        args += ["-A", request.account]
    if request.runtime_min:
        args += ["-t", str(request.runtime_min)]
    if request.mem_mb:
        args += ["--mem", str(request.mem_mb)]
    args += [f"--cpus-per-task={max(1, request.cpus)}"]
    if request.gres:
        args += [f"--gres={request.gres}"]
    if request.gpus:
        args += [f"--gpus={request.gpus}"]
    if not request.gpus_wanted:
        args += ["--ntasks=1"]
    return args + ["--wrap", "true"]


@dataclass
class Finding:
    level: str  # ok, warn, FAIL, info
    topic: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level:>4}] {self.topic}: {self.message}"


class Findings(list):
    def add(self, level: str, topic: str, message: str) -> None:
        self.append(Finding(level, topic, message))

    @property
    def blocking(self) -> bool:
        return any(f.level == FAIL for f in self)


def check_cluster(profile: Profile, slurm: Slurm, submit_test: bool = True) -> list[Finding]:
    """All findings for running ``profile`` on the cluster ``slurm`` talks to."""
    found = Findings()
    missing = [cmd for cmd in ("scontrol", "sinfo", "sbatch") if not slurm.which(cmd)]
    if missing:
        found.add(FAIL, "slurm", f"{', '.join(missing)} not found on PATH: run this (and Snakemake) on a "
                                 "login node of the cluster, with the SLURM client commands available")
        return found
    rc, out, err = slurm.run(["scontrol", "show", "config"])
    if rc != 0:
        found.add(FAIL, "slurm", f"'scontrol show config' failed ({err.strip() or rc}): is the controller "
                                 "reachable?")
        return found
    config = parse_scontrol_config(out)
    found.add(INFO, "slurm", f"SLURM {config.get('SLURM_VERSION', '?')}, cluster "
                             f"{config.get('ClusterName', '?')}, profile {profile.path}")
    _check_status_command(config, profile, slurm, found)
    for where, value in profile.placeholders():
        found.add(FAIL, "profile", f"{where} is still the placeholder {value!r}: edit {profile.path}")
    rc, out, err = slurm.run(["sinfo", "-h", "-o", SINFO_FORMAT])
    if rc != 0:
        found.add(FAIL, "partitions", f"'sinfo' failed: {err.strip() or rc}")
        return found
    partitions = parse_sinfo(out)
    _check_partitions(partitions, profile, found)
    _check_accounts(profile, slurm, accounting_enabled(config), found)
    if submit_test and found.blocking:
        found.add(INFO, "sbatch", "'sbatch --test-only' skipped: fix the problems above first")
    elif submit_test:
        _check_submission(profile, slurm, found)
    return found


def _check_status_command(config: dict, profile: Profile, slurm: Slurm, found: Findings) -> None:
    """sacct needs accounting; squeue needs finished jobs to stay listed (MinJobAge)."""
    status = profile.status_command
    min_age = parse_seconds(config.get("MinJobAge", "")) or 0
    # the plugin itself falls back to sacct below 3 x the first check interval
    needed_age = max(MIN_JOB_AGE_FOR_SQUEUE_S, 3 * profile.init_seconds)
    if accounting_enabled(config):
        found.add(OK, "accounting", f"on ({config.get('AccountingStorageType')}): the plugin's default "
                                    "status command 'sacct' works")
        if status == "squeue" and min_age < needed_age:
            found.add(WARN, "accounting", f"profile sets slurm-status-command: squeue but MinJobAge is "
                                          f"{min_age} s (< {needed_age} s): the plugin falls back to sacct; "
                                          "remove the setting")
        return
    if status != "squeue" and slurm.which("sacct"):
        found.add(FAIL, "accounting", "off (AccountingStorageType=accounting_storage/none), but the plugin "
                                      "will ask 'sacct' for job states and wait forever: add "
                                      f"'slurm-status-command: squeue' to {profile.path}")
    else:
        found.add(OK, "accounting", "off; job states come from squeue (slurm-status-command: squeue)")
    if min_age < needed_age:
        found.add(FAIL, "accounting", f"MinJobAge is {min_age} s: with squeue status a finished job must stay "
                                      f"listed >= {needed_age} s or Snakemake never sees it finish; ask the "
                                      f"admins for MinJobAge >= {needed_age} (slurm.conf)")
    else:
        found.add(OK, "accounting", f"MinJobAge {min_age} s >= {needed_age} s: squeue sees finished jobs")


def _check_partitions(partitions: dict[str, Partition], profile: Profile, found: Findings) -> None:
    """Each partition the profile names, then each request against the nodes of its partition."""
    default = next((p.name for p in partitions.values() if p.default), None)
    names = ", ".join(sorted(partitions)) or "none"
    users: dict[str | None, list[str]] = {}
    for request in profile.requests:
        if not (request.partition and PLACEHOLDER in request.partition):
            users.setdefault(request.partition or default, []).append(request.label)
    for name, labels in users.items():
        part = partitions.get(name) if name else None
        if part is None:
            what = (f"partition {name!r} does not exist (or you may not use it)" if name
                    else "no slurm_partition given and the cluster has no default partition")
            found.add(FAIL, "partitions", f"{what}; used by {'; '.join(labels)}; partitions here: {names}")
        elif part.available != "up":
            found.add(FAIL, "partitions", f"partition {name!r} is {part.available}, not up")
        else:
            gpus = (f"{part.max_gpus_per_node} GPU(s) per node"
                    + (f" ({', '.join(part.gpu_types)})" if part.gpu_types else "")
                    if part.max_gpus_per_node else "no GPUs")
            limit = "no time limit" if part.time_limit_min is None else f"time limit {part.time_limit_min} min"
            found.add(OK, "partitions", f"partition {name!r}: up, {part.nodes} node(s), {gpus}, {limit}, "
                                        f"largest node {part.max_cpus} CPUs / {part.max_mem_mb} MB")
            if part.usable_nodes == 0:
                found.add(WARN, "partitions", f"partition {name!r} has no node up right now: jobs will wait")

    for request in profile.requests:
        name = request.partition or default
        part = partitions.get(name) if name else None
        if part is None:
            continue
        wanted = request.gpus_wanted
        if wanted and part.max_gpus_per_node == 0:
            found.add(FAIL, "gpus", f"{request.label}: ask for {wanted} GPU(s) but partition {name!r} has no "
                                    "GPUs; put these rules on a GPU partition (set-resources: RULE: "
                                    "slurm_partition) or set gpu: 0 to run them on CPUs")
        elif wanted > part.max_gpus_per_node:
            found.add(FAIL, "gpus", f"{request.label}: ask for {wanted} GPUs; nodes of {name!r} have at most "
                                    f"{part.max_gpus_per_node}")
        elif wanted:
            found.add(OK, "gpus", f"{request.label}: {wanted} GPU(s) on {name!r}")
        if (request.runtime_min and part.time_limit_min is not None
                and request.runtime_min > part.time_limit_min):
            found.add(FAIL, "time", f"{request.label}: runtime {request.runtime_min} min exceeds the time limit "
                                    f"of {name!r} ({part.time_limit_min} min); lower runtime (training "
                                    "resumes where a time limit cut it, with retries)")
        if request.mem_mb and part.max_mem_mb and request.mem_mb > part.max_mem_mb:
            found.add(FAIL, "memory", f"{request.label}: mem_mb {request.mem_mb} exceeds the largest node of "
                                      f"{name!r} ({part.max_mem_mb} MB)")
        if request.cpus > part.max_cpus > 0:
            found.add(FAIL, "cpus", f"{request.label}: {request.cpus} threads but nodes of {name!r} have "
                                    f"{part.max_cpus} CPUs")


def _check_accounts(profile: Profile, slurm: Slurm, accounting: bool, found: Findings) -> None:
    """The plugin validates slurm_account with sacctmgr, then sshare, and stops if neither answers."""
    named = sorted({r.account for r in profile.requests if r.account and PLACEHOLDER not in r.account})
    if not named:
        if not any(r.account for r in profile.requests):
            found.add(INFO, "accounts", "no slurm_account in the profile: the plugin guesses one from your "
                                        "last jobs")
        return
    user = slurm.user()
    rc, out, _ = slurm.run(["sacctmgr", "-n", "-s", "list", "user", user, "format=account%256"])
    known = parse_accounts(out) if rc == 0 else set()
    if not known:
        rc, out, _ = slurm.run(["sshare", "-U", "--format", "Account%256", "--noheader"])
        if rc != 0:
            found.add(FAIL, "accounts", f"slurm_account is set ({', '.join(named)}) but neither sacctmgr nor "
                                        "sshare can list your accounts, so the plugin stops with an error: "
                                        f"remove slurm_account from {profile.path} (this cluster has no "
                                        "accounting)")
            return
        known = parse_accounts(out)
    if not known:
        if not accounting:
            found.add(INFO, "accounts", f"slurm_account {', '.join(named)}: not checkable without accounting "
                                        "(SLURM does not use accounts then); the plugin passes it on unchecked")
        return
    for account in named:
        if account.lower() in known:
            found.add(OK, "accounts", f"account {account!r}: {user} may submit with it")
        else:
            found.add(FAIL, "accounts", f"account {account!r} is not one of {user}'s accounts "
                                        f"({', '.join(sorted(known))}); edit slurm_account in {profile.path}")


def _check_submission(profile: Profile, slurm: Slurm, found: Findings) -> None:
    """Ask the scheduler itself, once per distinct request, GPU requests first."""
    seen = set()
    for request in sorted(profile.requests, key=lambda r: -r.gpus_wanted):
        if request.key() in seen:
            continue
        seen.add(request.key())
        args = sbatch_test_args(request)
        rc, out, err = slurm.run(args)
        accepted, why = parse_test_only(rc, out + "\n" + err)
        kind = "GPU job" if request.gpus_wanted else "job"
        if accepted:
            found.add(OK, "sbatch", f"{request.label}: {kind} accepted by 'sbatch --test-only' ({why})")
        else:
            found.add(FAIL, "sbatch", f"{request.label}: 'sbatch --test-only' refused the {kind}: {why} "
                                      f"[{' '.join(args)}]")
