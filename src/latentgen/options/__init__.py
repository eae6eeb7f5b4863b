"""The command-line options of every ``latentgen`` command, in a layer the library owns.

``latentgen.options.<name>`` defines ``add_arguments(parser)`` for the command ``latentgen.commands.<name>``;
the CLI (``latentgen.__main__``) and the workflow's config check (``latentgen.workflow.config``: every
option the config passes to a command is parsed by that command's own definition) both read them
here, without importing the commands (torch-free). Adding a command: its module in
``latentgen.commands`` (``run(args)``, docstring = help), its options here, one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib

RAW_FILES_HELP = "folder with the raw dataset files (not needed for digits)"


def add_data_source(parser: argparse.ArgumentParser, data_root_help: str = RAW_FILES_HELP) -> None:
    """``--data-root`` or ``--prepared`` (at most one): where a command reads a dataset's images."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-root", help=data_root_help)
    source.add_argument("--prepared", help="prepared dataset .npz from `latentgen download`")


# command name -> module in latentgen.commands and latentgen.options (imported lazily: torch is slow to import)
COMMANDS = {
    "download": "download",
    "corrupt": "corrupt",
    "train": "train",
    "activations": "activations",
    "probe": "probe",
    "probe-run": "probe_run",
    "concat": "concat",
    "metrics": "metrics",
    "figure": "figure",
    "table": "table",
    "claims": "claims",
    "repair": "repair",
    "relabel": "relabel",
    "cluster-check": "cluster_check",
    "estimate": "estimate",
    "probe-model": "probe_model",
    "repair-model": "repair_model",
}


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # one-line reason, non-zero exit
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """The options of ``latentgen COMMAND`` added to ``parser``."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    importlib.import_module(f"latentgen.options.{COMMANDS[command]}").add_arguments(parser)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of one command (the config check parses the workflow's options with it)."""
    parser = OneLineErrorParser(prog=f"latentgen {command}")
    add_arguments(command, parser)
    return parser
