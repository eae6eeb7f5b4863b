"""Command line: ``python -m latentgen <command> ...`` (also installed as ``latentgen``).

Each command lives in ``latentgen.commands.<name>`` (``run(args) -> int``; its module docstring
is its help text) and its options in ``latentgen.options.<name>``. Errors a user can fix
(bad arguments, missing files, corrupt inputs) end in one line on stderr and exit 1;
set ``LATENTGEN_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from latentgen.options import COMMANDS, OneLineErrorParser, add_arguments


def _load(name: str):
    return importlib.import_module(f"latentgen.commands.{COMMANDS[name]}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="latentgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name in COMMANDS:
        if wanted is not None and name != wanted:
            sub.add_parser(name)
            continue
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # a command whose module is not built yet
            if exc.name != f"latentgen.commands.{COMMANDS[name]}":
                raise
            continue
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(name, p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = getattr(args, "_module", None)
    if module is None:
        parser.exit(2, f"latentgen: error: command {args.command!r} is not available\n")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"latentgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        if os.environ.get("LATENTGEN_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"latentgen {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
