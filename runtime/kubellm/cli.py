"""The one command line: ``kubellm <command>``, the composition root of the operator and the runtime.

Each runtime command is what a pod of one kind runs (``train`` for a FineTuneJob, ``serve`` for
a ModelDeployment, ``experiment`` for a PromptExperiment); ``run`` takes the manifests and runs
them locally without a cluster: it is the operator's reconcile logic (:mod:`kubellm.operator.local`)
starting those same commands as local processes. This module is the only one that knows both
packages; they import only the contract (:mod:`kubellm.contract`), never each other.

A command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when chosen, so ``kubellm --help`` never loads torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

__all__ = ["COMMANDS", "build_parser", "main"]


class CommandModule(Protocol):
    """What a command module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...  # pragma: no cover

    def run(self, args: argparse.Namespace) -> int: ...  # pragma: no cover


def _run_command() -> CommandModule:
    from kubellm.operator.local import command  # noqa: PLC0415

    return command


def _train_command() -> CommandModule:
    from kubellm.runtime.training import command  # noqa: PLC0415

    return command


def _serve_command() -> CommandModule:
    from kubellm.runtime.serving import command  # noqa: PLC0415

    return command


def _experiment_command() -> CommandModule:
    from kubellm.runtime.experiments import command  # noqa: PLC0415

    return command


# name -> (the module implementing it, imported when chosen; one-line help)
COMMANDS: dict[str, tuple[Callable[[], CommandModule], str]] = {
    "run": (_run_command, "run FineTuneJob/ModelDeployment/PromptExperiment manifests locally"),
    "train": (_train_command, "fine-tune a model (what a FineTuneJob's pod runs)"),
    "serve": (_serve_command, "serve a model over an OpenAI-compatible API (what a ModelDeployment's pods run)"),
    "experiment": (_experiment_command, "A/B-test prompt variants (what a PromptExperiment's pod runs)"),
}


def _package_version() -> str:
    try:
        return version("kubellm")
    except PackageNotFoundError:
        return "unknown"


class MissingExtraError(Exception):
    """A command's package is not installed."""


def _load(name: str) -> CommandModule:
    try:
        return COMMANDS[name][0]()
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(("kubellm", "kopf", "kubernetes")):
            raise
        raise MissingExtraError(
            f"kubellm {name} needs the operator and runtime extras: pip install 'kubellm[operator,runtime]' ({error})"
        ) from error


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; the ``chosen`` command's module adds its own arguments."""
    parser = argparse.ArgumentParser(prog="kubellm", description="Fine-tune, serve and A/B-test LLMs.")
    parser.add_argument("--version", action="version", version=f"kubellm {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubellm`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    try:
        args = build_parser(chosen).parse_args(args_list)
        return _load(args.command).run(args)
    except MissingExtraError as error:
        print(f"kubellm: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
