"""The runtime image's one command line: ``kubellm <command>``.

Each command is what a pod of one kind runs (``train`` for a FineTuneJob, ``serve`` for a
ModelDeployment, ``experiment`` for a PromptExperiment); ``run`` takes the same manifests
and runs them locally without a cluster.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["build_parser", "main"]

_PENDING = {
    "run": "local runs of manifests (`kubellm run -f PATH`) land with the quickstart work",
    "train": "fine-tuning lands with the training runtime",
    "serve": "the inference server lands with the serving runtime",
    "experiment": "prompt experiments land with the experiments runtime",
}


def _package_version() -> str:
    try:
        return version("kubellm")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="kubellm", description="Fine-tune, serve and A/B-test LLMs.")
    parser.add_argument("--version", action="version", version=f"kubellm {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run FineTuneJob/ModelDeployment/PromptExperiment manifests locally")
    run.add_argument("-f", "--filename", required=True, help="a manifest file or a folder of manifests")
    for name in ("train", "serve", "experiment"):
        cmd = sub.add_parser(name, help=_PENDING[name])
        cmd.add_argument("--config", help="YAML or JSON configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubellm`` console script."""
    args = build_parser().parse_args(argv)
    print(f"kubellm {args.command}: not yet implemented: {_PENDING[args.command]}.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
