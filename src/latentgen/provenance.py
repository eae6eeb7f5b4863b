"""Provenance sidecars: where a metrics file or a figure came from.

Every metrics CSV and every figure gets a JSON file next to it (``c0.4.csv`` ->
``c0.4.json``, ``fig3.pdf`` -> ``fig3.json``) holding the hash of the configuration
that produced it, the git commit of the code, the versions of the packages that
decide numbers, the seeds, and the sha256 of every input and output file. With it a
result can be checked against its inputs long after it was made
(:func:`verify_sidecar`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

from latentgen._io import config_hash, package_versions, sha256_file, write_json_atomic

SCHEMA_VERSION = 1


def sidecar_path(path: str | os.PathLike) -> Path:
    """The provenance file that belongs to ``path``: same folder and stem, ``.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path} is itself a JSON file; a sidecar would overwrite it")
    return path.with_suffix(".json")


def git_info(where: str | os.PathLike | None = None) -> dict:
    """Commit and dirty flag of the git checkout containing ``where`` (the package by default).

    Returns ``{"commit": None, "dirty": None}`` outside a checkout or without git.
    """
    where = Path(where) if where is not None else Path(__file__).resolve().parent
    if where.is_file():
        where = where.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # only tracked files count: untracked results folders must not mark the code dirty
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def file_digests(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``{path: sha256}`` for each file, in the order given; a missing file is an error."""
    digests = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"provenance: input file {p} does not exist")
        digests[str(p)] = sha256_file(p)
    return digests


def parse_json(text: str | None, what: str):
    """The value of a JSON command-line option (``--config-json``, ``--seeds``); ``None`` stays
    ``None``. ValueError naming ``what`` when it is not valid JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def build_record(
    *,
    inputs: Iterable[str | os.PathLike] = (),
    outputs: Iterable[str | os.PathLike] = (),
    config: Mapping | None = None,
    seeds: Mapping | None = None,
    extra: Mapping | None = None,
) -> dict:
    """The provenance record for ``outputs`` made from ``inputs`` under ``config``."""
    record = {
        "schema": SCHEMA_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash(dict(config)) if config is not None else None,
        "config": dict(config) if config is not None else None,
        "git": git_info(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "command": sys.argv,
        "seeds": dict(seeds) if seeds else {},
        "inputs": file_digests(inputs),
        "outputs": file_digests(outputs),
    }
    if extra:
        record.update(extra)
    return record


def write_sidecar(target: str | os.PathLike, record: Mapping, path: str | os.PathLike | None = None) -> Path:
    """Write ``record`` atomically as the sidecar of ``target`` (or to ``path``); return its path."""
    out = Path(path) if path is not None else sidecar_path(target)
    write_json_atomic(out, dict(record))
    return out


def read_sidecar(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"provenance sidecar {path} does not exist")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"provenance sidecar {path} is not valid JSON: {exc}") from None
    for key in ("config_hash", "versions", "inputs", "outputs"):
        if key not in record:
            raise ValueError(f"provenance sidecar {path} lacks the key {key!r}")
    return record


def verify_sidecar(path: str | os.PathLike) -> list[str]:
    """Problems found when re-hashing the files a sidecar lists (empty list: all match)."""
    record = read_sidecar(path)
    problems = []
    for section in ("inputs", "outputs"):
        for file, digest in record[section].items():
            if not Path(file).is_file():
                problems.append(f"{section[:-1]} {file} is missing")
            elif sha256_file(file) != digest:
                problems.append(f"{section[:-1]} {file} has changed (sha256 differs)")
    return problems
