"""``python -m latentgen.bench <name> [options]``: run one benchmark.

Each benchmark module ``latentgen.bench.<name>`` provides ``add_arguments(parser)``
and ``run(args) -> dict``; the dict is printed as a table, or as one JSON object
with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS = ["probes", "train", "curvature", "probe_run", "baselines_device", "probe_model", "train_shared",
              "repair_sweep"]


def _table(result: dict) -> str:
    width = max(len(k) for k in result)
    lines = []
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgen.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", metavar="BENCHMARK", required=True)
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"latentgen.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"latentgen.bench.{name}":
                raise
            continue
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    args = parser.parse_args(argv)
    result = args._module.run(args)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
