"""The runtime image's one command line: ``kubellm <command>``.

Each command is what a pod of one kind runs (``train`` for a FineTuneJob, ``serve`` for a
ModelDeployment, ``experiment`` for a PromptExperiment); ``run`` takes the same manifests
and runs them locally without a cluster.

A command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when chosen, so ``kubellm --help`` never loads torch. ``run`` is the
operator's reconcile logic without a cluster, so it lives with the operator
(:mod:`kubellm.operator.local`) and needs the ``operator`` extra; it is loaded by name only,
and the runtime package itself never imports the operator.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol, cast

__all__ = ["COMMANDS", "build_parser", "main"]


class CommandModule(Protocol):
    """What a command module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...  # pragma: no cover

    def run(self, args: argparse.Namespace) -> int: ...  # pragma: no cover


# name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("kubellm.operator.local.command", "run FineTuneJob/ModelDeployment/PromptExperiment manifests locally"),
    "train": ("kubellm.runtime.training.command", "fine-tune a model (what a FineTuneJob's pod runs)"),
    "serve": (
        "kubellm.runtime.serving.command",
        "serve a model over an OpenAI-compatible API (what a ModelDeployment's pods run)",
    ),
    "experiment": (
        "kubellm.runtime.experiments.command",
        "A/B-test prompt variants (what a PromptExperiment's pod runs)",
    ),
}


def _package_version() -> str:
    try:
        return version("kubellm")
    except PackageNotFoundError:
        return "unknown"


class MissingExtraError(Exception):
    """A command's package is not installed."""


def _load(module_name: str) -> CommandModule:
    try:
        return cast(CommandModule, importlib.import_module(module_name))
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(("kubellm", "kopf", "kubernetes")):
            raise
        raise MissingExtraError(
            f"{module_name} needs the operator and runtime extras: pip install 'kubellm[operator,runtime]' ({error})"
        ) from error


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; the ``chosen`` command's module adds its own arguments."""
    parser = argparse.ArgumentParser(prog="kubellm", description="Fine-tune, serve and A/B-test LLMs.")
    parser.add_argument("--version", action="version", version=f"kubellm {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module_name).add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubellm`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    try:
        args = build_parser(chosen).parse_args(args_list)
        return _load(COMMANDS[args.command][0]).run(args)
    except MissingExtraError as error:
        print(f"kubellm: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
