"""The workflow configuration, checked whole before any job runs.

``check_config(config, schema)`` returns the configuration with its defaults filled in, or
raises ``ConfigError`` naming the key, the bad value and, for a misspelt key or name, the
closest valid one. Four layers, each stated once elsewhere and only read here:

1. the JSON schema (``workflow/schemas/config.schema.yaml``): the workflow's own keys, their
   types and defaults;
2. the registry (``latentgen.registry``): architecture, dataset, figure, repair-method and
   layer names, and which architecture supports which dataset;
3. the commands' own argument parsers: every key of ``train_args``, ``label_args``,
   ``activation_args``, ``probe_args``, of a model (``max_epochs``, ``train_subset``, ``grid``)
   and of ``repair`` is looked up among the options the command accepts and its value parsed by
   the option's own type (``latentgen.argtypes``: ranges included) and choices — exactly what
   the command itself would do with it;
4. cross-references (figure groups name configured models, a pair appears once, ...).

Torch-free: the Snakefile calls it at parse time, so ``snakemake -n`` refuses a bad config.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

from latentgen import registry

# options each command gets from the workflow itself, and the config key that sets them instead
WORKFLOW_SET = {
    "train": {"arch": "models.NAME.arch", "dataset": "models.NAME.dataset", "corruption": "corruptions",
              "run": "runs", "out": "outdir", "data_root": "data_root", "prepared": "data_root",
              "labels": "corruptions", "label_seed": "seeds.labels", "seed": "seeds.train_base",
              "device": "device", "threads": "threads.train", "quiet": "(always quiet)",
              "grid_dense_until": "grid.dense_until", "grid_dense_step": "grid.dense_step", "grid_step": "grid.step",
              "max_epochs": "models.NAME.max_epochs", "train_subset": "models.NAME.train_subset"},
    "corrupt": {"dataset": "models.NAME.dataset", "corruption": "corruptions", "seed": "seeds.labels",
                "out": "outdir", "data_root": "data_root", "prepared": "data_root"},
    "activations": {"checkpoint": "(each checkpoint)", "out": "outdir", "data_root": "data_root",
                    "prepared": "data_root", "labels": "corruptions", "device": "device",
                    "threads": "threads.activations"},
    "probe": {"activations": "(each checkpoint)", "out": "outdir", "checkpoint": "(each checkpoint)",
              "data_root": "data_root", "prepared": "data_root", "device": "device", "threads": "threads.probe"},
    "probe-run": {"run_dir": "(each run)", "out": "outdir", "final_out": "outdir", "parts": "outdir",
                  "data_root": "data_root", "prepared": "data_root", "labels": "corruptions", "device": "device",
                  "threads": "threads.probe", "checkpoints": "figures.groups", "probe_final": "models.NAME.probe_final",
                  "final_families": "probes.families", "final_fit_labels": "probes.fit_labels",
                  "final_extra_labels": "probes.clean_model_subspaces", "keep_activations": "activations",
                  "input_cache": "outdir", "activation_batch_size": "activation_args.batch_size",
                  "layers": "activation_args.layers", "batchnorm": "activation_args.batchnorm",
                  "compression": "activation_args.compression"},
    "repair": {"checkpoint": "(each checkpoint)", "labels": "corruptions", "out": "outdir", "data_root": "data_root",
               "prepared": "data_root", "device": "device", "threads": "threads.repair", "config_json": "(provenance)",
               "quiet": "(always quiet)", "layer_sets": "repair.layer_sets"},
}
# config sections that are a command's options
ARGUMENT_SECTIONS = {"label_args": "corrupt", "activation_args": "activations", "probe_args": "probe-run"}
# repair keys that are `latentgen repair` options (the rest are the workflow's)
REPAIR_OPTIONS = ("rhos", "methods", "fisher", "factor_subset", "seed")
GRID_OPTIONS = {"dense_until": "grid_dense_until", "dense_step": "grid_dense_step", "step": "grid_step"}
MODEL_OPTIONS = ("max_epochs", "train_subset")


class ConfigError(ValueError):
    """A configuration the workflow refuses; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


def closest(name, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, or nothing."""
    match = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def corruption_tag(c) -> str:
    """How a degree appears in paths: 0.2 -> '0.2', 1 -> '1.0'."""
    return repr(round(float(c), 6))


# --------------------------------------------------------------------------------------------
# 1. the JSON schema


def load_schema(path: str | Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _key(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts[-1 if parts else 0:] = [f"{parts[-1] if parts else ''}[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _resolve_ref(schema: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"schema: only local $ref are supported, got {ref!r}")
        target = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _schema_error(error, schema: dict) -> ConfigError:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        node = _resolve_ref(schema, error.schema)
        allowed = list(node.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            name = extra[0]
            valid = f" (valid keys: {', '.join(allowed)})" if allowed else ""
            return ConfigError(_key([*path, name]), f"unknown key{closest(name, allowed) or valid}")
    if error.validator == "required":
        return ConfigError(_key(path), error.message)
    return ConfigError(_key(path), f"{error.instance!r} is refused: {error.message}")


def check_schema(cfg: Mapping, schema: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(list(e.absolute_path))))
    if errors:
        raise _schema_error(errors[0], schema)


def fill_defaults(instance: Any, node: dict, schema: dict) -> Any:
    """``instance`` with the schema's ``default`` values filled in, recursively (objects whose
    values share one schema, such as ``models``, included). The input is not modified."""
    node = _resolve_ref(schema, node)
    if not isinstance(instance, dict):
        return instance
    out = dict(instance)
    properties = node.get("properties", {})
    for name, sub in properties.items():
        sub = _resolve_ref(schema, sub)
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = fill_defaults(out[name], sub, schema)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for name in out:
            if name not in properties:
                out[name] = fill_defaults(out[name], extra, schema)
    return out


# --------------------------------------------------------------------------------------------
# 3. options checked by the commands' own parsers


def command_options(command: str) -> dict[str, argparse.Action]:
    """Optional arguments of ``latentgen COMMAND`` by destination name (from its parser)."""
    from latentgen.options import command_parser

    parser = command_parser(command)
    # argparse has no public listing of a parser's actions; _actions is its stable internal one
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def parse_option(command: str, action: argparse.Action, value, key: str):
    """``value`` parsed as ``latentgen COMMAND`` parses its option ``action``; ConfigError if refused."""
    flag = action.option_strings[-1]
    where = f"`latentgen {command} {flag}`"
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise ConfigError(key, f"{value!r} is refused by {where}: expected true or false")
        return value
    many = action.nargs in ("+", "*")
    if isinstance(value, list) and not many:
        raise ConfigError(key, f"{value!r} is refused by {where}: expected one value, not a list")
    items = value if isinstance(value, list) else [value]
    if many and not items and action.nargs == "+":
        raise ConfigError(key, f"{where} needs at least one value")
    parsed = []
    for item in items:
        converted = _as_text(item)
        if action.type is not None:
            try:
                converted = action.type(converted)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                hint = closest(item, action.choices) if action.choices is not None else ""
                raise ConfigError(key, f"{item!r} is refused by {where}: {exc}{hint}") from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(key, f"{item!r} is refused by {where}: not one of {', '.join(map(str, action.choices))}"
                                   f"{closest(converted, action.choices)}")
        parsed.append(converted)
    return parsed if many else parsed[0]


def check_command_options(command: str, options: Mapping, prefix: str, workflow_set=None) -> dict:
    """Each key of ``options`` (flag name without dashes) checked against ``latentgen COMMAND``;
    returns the parsed values. Keys the workflow sets itself are refused with the key to use."""
    accepted = command_options(command)
    reserved = WORKFLOW_SET.get(command, {}) if workflow_set is None else workflow_set
    parsed = {}
    for name, value in options.items():
        key = f"{prefix}.{name}"
        dest = str(name).replace("-", "_")
        if dest in reserved:
            raise ConfigError(key, f"the workflow sets `latentgen {command} --{dest.replace('_', '-')}` itself; "
                                   f"use {reserved[dest]!r} instead")
        if dest not in accepted:
            usable = [d for d in accepted if d not in reserved]
            raise ConfigError(key, f"`latentgen {command}` has no option --{dest.replace('_', '-')}"
                                   f"{closest(dest, usable)}; its options: {', '.join(sorted(usable))}")
        parsed[dest] = parse_option(command, accepted[dest], value, key)
    return parsed


def command_line(command: str, options: Mapping) -> str:
    """Options of ``latentgen COMMAND`` as shell words: {'batch_size': 32, 'shuffle': True,
    'no_transfer': True, 'rhos': [1, .9]} -> "--batch-size 32 --shuffle true --no-transfer --rhos 1 0.9".
    A switch is written when true (a --x/--no-x pair: the one the value says); lists become several
    values, mappings JSON."""
    accepted = command_options(command)
    parts = []
    for name, value in options.items():
        dest = str(name).replace("-", "_")
        flag = accepted[dest].option_strings[-1] if dest in accepted else f"--{dest.replace('_', '-')}"
        if dest in accepted and isinstance(accepted[dest], argparse.BooleanOptionalAction):
            parts.append(accepted[dest].option_strings[0 if value else 1])  # --x / --no-x: both say something
            continue
        if dest in accepted and accepted[dest].nargs == 0:
            parts += [flag] if value else []
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts += [flag, *(shlex.quote(_as_text(v)) for v in values)]
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# 2. + 4. registry names and cross-references


def _name(kind_table: Mapping, value, key: str, what: str, external: bool = False):
    if value in kind_table or (external and (registry.find_architecture(value) if what == "architecture"
                                             else registry.find_dataset(value)) is not None):
        return
    also = {"architecture": ", or torchvision:NAME, timm:NAME, FILE.py:factory",
            "dataset": ", or imagefolder:PATH"}.get(what, "") if external else ""
    raise ConfigError(key, f"unknown {what} {value!r}{closest(value, kind_table)}; known: {', '.join(kind_table)}{also}")


def resolve_models(cfg: dict) -> dict:
    """Each model with its grid merged (registry default < config grid < model grid)."""
    models = {}
    for name, model in cfg["models"].items():
        model = dict(model)
        model["grid"] = {**registry.GRID_DEFAULT, **cfg.get("grid", {}), **model.get("grid", {})}
        models[name] = model
    return models


def _check_models(cfg: dict) -> None:
    pairs = {}
    for name, model in cfg["models"].items():
        prefix = f"models.{name}"
        arch, dataset = model["arch"], model["dataset"]
        _name(registry.ARCHITECTURES, arch, f"{prefix}.arch", "architecture", external=True)
        _name(registry.DATASETS, dataset, f"{prefix}.dataset", "dataset", external=True)
        supported = registry.get_architecture(arch).datasets
        if dataset not in supported:
            raise ConfigError(f"{prefix}.dataset", f"architecture {arch!r} does not support dataset {dataset!r} "
                                                   f"(supported: {', '.join(supported)})")
        if (arch, dataset) in pairs:
            raise ConfigError(prefix, f"{arch} on {dataset} is already configured as models.{pairs[arch, dataset]}; "
                                      "each model–dataset pair may appear once")
        pairs[arch, dataset] = name
        check_command_options("train", model.get("train_args", {}), f"{prefix}.train_args")
        mirrored = {k: model[k] for k in MODEL_OPTIONS if model.get(k) is not None}
        check_command_options("train", mirrored, prefix, workflow_set={})
        accepted = command_options("train")
        for where, grid in ((f"{prefix}.grid", model.get("grid", {})), ("grid", cfg.get("grid", {}))):
            for k, v in grid.items():
                parse_option("train", accepted[GRID_OPTIONS[k]], v, f"{where}.{k}")


def _check_figures(cfg: dict) -> None:
    from latentgen.paper.figures import FIGURES

    groups = cfg["figures"]["groups"]
    for group, names in groups.items():
        for i, name in enumerate(names):
            if name not in cfg["models"]:
                raise ConfigError(f"figures.groups.{group}[{i}]", f"model {name!r} is not in 'models'"
                                  f"{closest(name, cfg['models'])} (configured: {', '.join(cfg['models'])})")
            if cfg["models"][name].get("labels") is not None:
                raise ConfigError(f"figures.groups.{group}[{i}]", f"model {name!r} trains on its label file (one "
                                  "degree); the figures plot every configured degree")
    configured = {round(float(c), 6) for c in cfg["corruptions"]}
    for i, fig in enumerate(cfg["figures"]["build"]):
        _name(FIGURES, fig, f"figures.build[{i}]", "figure")
        group, rows = FIGURES[fig].group, FIGURES[fig].corruptions
        if not groups.get(group):
            raise ConfigError("figures.build", f"{fig} plots the {group!r} models but "
                                               f"'figures.groups.{group}' lists none")
        if rows is not None and not configured.intersection(round(float(r), 6) for r in rows):
            raise ConfigError("figures.build", f"{fig} plots corruption degrees {list(rows)}, none of "
                                               f"which is in 'corruptions' {cfg['corruptions']}")


def _check_repair(cfg: dict) -> dict:
    repair = dict(cfg["repair"])
    _model_names(cfg, repair["models"], "repair.models")
    if repair.get("methods") is None:  # the registry says which methods the workflow sweeps
        repair["methods"] = [name for name, method in registry.REPAIR_METHODS.items() if method.workflow]
    if repair.get("fisher") is True or repair.get("fisher") == "true":
        print("latentgen: config key 'repair.fisher': 'true' is deprecated, spell it 'exact' (the exact true "
              "Fisher)", file=sys.stderr)
        repair["fisher"] = "exact"
    options = {k: repair[k] for k in REPAIR_OPTIONS if repair.get(k) is not None}
    repair.update(check_command_options("repair", options, "repair"))
    for arch, sets in repair.get("layer_sets", {}).items():
        _name(registry.ARCHITECTURES, arch, f"repair.layer_sets.{arch}", "architecture", external=True)
        for i, text in enumerate(sets):
            try:
                registry.expand_layer_set(arch, text)
            except ValueError as exc:
                raise ConfigError(f"repair.layer_sets.{arch}[{i}]", str(exc)) from None
    return repair


def _model_names(cfg: dict, names, key: str) -> None:
    for i, name in enumerate(names):
        if name not in cfg["models"]:
            raise ConfigError(f"{key}[{i}]", f"model {name!r} is not in 'models'{closest(name, cfg['models'])} "
                                             f"(configured: {', '.join(cfg['models'])})")


def _check_probes(cfg: dict) -> dict:
    """The 2025 paper's probes: families and label sets as `latentgen probe` accepts them."""
    probes = dict(cfg["probes"])
    accepted = command_options("probe")
    if probes.get("families") is None:
        probes["families"] = list(registry.PROBE_FAMILIES)
    if probes.get("fit_labels") is None:
        probes["fit_labels"] = list(accepted["fit_labels"].choices or registry.FIT_LABEL_SETS)
    for key in ("families", "fit_labels"):
        probes[key] = [_as_text(v) for v in probes[key]]  # YAML reads a bare `true` as a boolean
        parse_option("probe", accepted[key], probes[key], f"probes.{key}")
    return probes


def _check_relabel(cfg: dict) -> dict:
    relabel = dict(cfg["relabel"])
    _model_names(cfg, relabel["models"], "relabel.models")
    accepted = command_options("relabel")
    # YAML reads a bare `true` as a boolean: the label set is the word
    relabel["subspaces"] = [parse_option("relabel", accepted["subspaces"], s, f"relabel.subspaces[{i}]")
                            for i, s in enumerate(relabel["subspaces"])]
    check_command_options("relabel", {k: relabel[k] for k in ("max_epochs", "patience") if relabel.get(k) is not None},
                          "relabel", workflow_set={})
    return relabel


def _check_tables(cfg: dict) -> dict:
    from latentgen.paper.tables import TABLES

    tables = dict(cfg["tables"])
    tables["models"] = list(cfg["models"]) if tables.get("models") is None else tables["models"]
    if tables.get("build") is None:  # every table whose inputs this config builds
        tables["build"] = [n for n in TABLES if "relabel" not in TABLES[n].needs or cfg["relabel"]["models"]]
    _model_names(cfg, tables["models"], "tables.models")
    for i, name in enumerate(tables["build"]):
        _name(TABLES, name, f"tables.build[{i}]", "table")
    if "table_relabel" in tables["build"] and not cfg["relabel"]["models"]:
        raise ConfigError("tables.build", "table_relabel needs relabel-and-retrain runs, but 'relabel.models' is "
                                          "empty (add models there, or drop table_relabel)")
    return tables


# --------------------------------------------------------------------------------------------
# the whole check


def check_config(cfg: Mapping, schema: str | Path | dict) -> dict:
    """The configuration with defaults filled in and every key checked; ConfigError otherwise."""
    schema = load_schema(schema) if not isinstance(schema, dict) else schema
    if not isinstance(cfg, Mapping):
        raise ConfigError("(top level)", f"the configuration must be a mapping, got {type(cfg).__name__}")
    check_schema(cfg, schema)
    resolved = fill_defaults(dict(cfg), schema, schema)
    resolved["seeds"] = {"labels": registry.LABEL_SEED, "train_base": registry.TRAIN_SEED_BASE, **resolved["seeds"]}
    tags = [corruption_tag(c) for c in resolved["corruptions"]]
    if len(set(tags)) != len(tags):
        raise ConfigError("corruptions", f"degrees repeat after rounding: {resolved['corruptions']}")
    _name(registry.DEVICE_CHOICES, resolved["device"], "device", "device")
    from latentgen.config_entries import environment
    from latentgen.workflow.external_config import resolve_external

    resolved["models"], entries = resolve_external(resolved)  # torchvision:, timm:, imagefolder: ... entries
    resolved["external"] = environment(entries) if entries else ""
    _check_models(resolved)
    for section, command in ARGUMENT_SECTIONS.items():
        check_command_options(command, resolved.get(section, {}), section)
    graphed = [f"models.{n}.train_args" for n, m in resolved["models"].items()
               if (m.get("train_args") or {}).get("cuda_graph") is True]
    if graphed and resolved["device"] == "cpu":  # else every training job would stop at its start
        raise ConfigError(f"{graphed[0]}.cuda_graph", "true needs a CUDA device (device: cuda or auto), not device: cpu")
    if "build" not in resolved["figures"]:
        from latentgen.paper.figures import FIGURES

        resolved["figures"] = {**resolved["figures"], "build": list(FIGURES)}
    _check_figures(resolved)
    resolved["repair"] = _check_repair(resolved)
    resolved["probes"] = _check_probes(resolved)
    resolved["relabel"] = _check_relabel(resolved)
    resolved["tables"] = _check_tables(resolved)
    resolved["models"] = resolve_models(resolved)
    return resolved


def load_config(path: str | Path, schema: str | Path | dict) -> dict:
    """Read a YAML config file and check it (``check_config``)."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    return check_config(cfg or {}, schema)
