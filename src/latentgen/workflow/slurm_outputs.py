"""What a SLURM cluster says about itself, parsed: ``scontrol show config``, ``sinfo``, the user's
accounts and ``sbatch --test-only`` (``latentgen cluster-check``; the checks: ``latentgen.workflow.cluster``).
Each function takes a command's text, so they are tested on captured output."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config`` → {key: value} (header and section lines are skipped)."""
    config = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z][\w/.\[\]]*)\s*=\s?(.*)$", line.strip())
        if match:
            config[match.group(1)] = match.group(2).strip()
    return config


def accounting_enabled(config: dict[str, str]) -> bool:
    """True when the controller stores jobs in an accounting database (``sacct`` works)."""
    storage = config.get("AccountingStorageType", "").strip().lower()
    return bool(storage) and not storage.endswith("/none") and storage != "(null)"


def parse_seconds(text: str) -> int | None:
    """``"300 sec"``, ``"300"``, ``"5 min"``, ``"1h"`` → seconds; None if unreadable."""
    match = re.match(r"^\s*(\d+)\s*([a-zA-Z]*)", str(text))
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2).lower()
    scale = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
             "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
             "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
    return value * scale[unit] if unit in scale else None


def parse_slurm_time_limit(text: str) -> int | None:
    """A SLURM time limit (``sinfo %l``) in minutes; None means unlimited.

    Formats: ``infinite``/``UNLIMITED``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``.
    """
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", "none", ""):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in text.split(":")]
        parts += [0] * (3 - len(parts))  # D-HH, D-HH:MM
        hours, minutes, seconds = parts
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = parts
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_gres_gpus(gres: str) -> tuple[int, list[str]]:
    """GPUs per node and their types from a GRES string (``sinfo %G``).

    ``gpu:1`` → (1, []); ``gpu:a100:4(S:0-1),mps:400`` → (4, ["a100"]); ``(null)`` → (0, []).
    """
    count, types = 0, []
    for item in re.split(r",(?![^(]*\))", gres.strip()):
        item = re.sub(r"\(.*\)$", "", item.strip())
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        if len(parts) == 1:
            count += 1
        elif len(parts) == 2:
            count += int(parts[1]) if parts[1].isdigit() else 1
            if not parts[1].isdigit():
                types.append(parts[1])
        else:
            types.append(parts[1])
            count += int(parts[2]) if parts[2].isdigit() else 1
    return count, types


@dataclass
class Partition:
    name: str
    default: bool = False
    available: str = "up"
    time_limit_min: int | None = None  # None: unlimited
    nodes: int = 0
    usable_nodes: int = 0  # idle, mixed, allocated, completing
    max_cpus: int = 0
    max_mem_mb: int = 0
    max_gpus_per_node: int = 0
    gpu_types: list[str] = field(default_factory=list)


SINFO_FORMAT = "%P|%a|%l|%D|%T|%c|%m|%G"
_USABLE_STATES = ("idle", "mix", "alloc", "comp", "plnd")


def _leading_int(text: str) -> int:
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else 0


def parse_sinfo(text: str) -> dict[str, Partition]:
    """``sinfo -h -o '%P|%a|%l|%D|%T|%c|%m|%G'`` → {partition name: Partition}.

    sinfo prints one line per partition and node configuration/state; lines are merged.
    """
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 8:
            raise ValueError(f"unexpected sinfo line (want 8 '|'-separated fields): {line!r}")
        name, avail, limit, nodes, state, cpus, mem, gres = (f.strip() for f in fields)
        default = name.endswith("*")
        name = name.rstrip("*")
        part = partitions.setdefault(name, Partition(name=name))
        part.default = part.default or default
        part.available = avail
        part.time_limit_min = parse_slurm_time_limit(limit)
        part.nodes += _leading_int(nodes)
        if state.lower().startswith(_USABLE_STATES) and not state.endswith(("*", "~", "#", "!", "%", "$", "@")):
            part.usable_nodes += _leading_int(nodes)
        part.max_cpus = max(part.max_cpus, _leading_int(cpus))
        part.max_mem_mb = max(part.max_mem_mb, _leading_int(mem))
        gpus, types = parse_gres_gpus(gres)
        part.max_gpus_per_node = max(part.max_gpus_per_node, gpus)
        part.gpu_types += [t for t in types if t not in part.gpu_types]
    return partitions


def parse_accounts(text: str) -> set[str]:
    """One account per line (``sacctmgr -n -s list user U format=account%256``) → set."""
    return {line.strip().split("|")[0].lower() for line in text.splitlines() if line.strip()}


def parse_test_only(returncode: int, output: str) -> tuple[bool, str]:
    """``sbatch --test-only`` result → (accepted, the one line that says why)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if returncode == 0 and any("to start at" in line for line in lines):
        return True, next(line for line in lines if "to start at" in line)
    reasons = [line for line in lines if "error" in line.lower() or "failure" in line.lower()]
    return False, "; ".join(reasons or lines or [f"sbatch exited with {returncode}"])
