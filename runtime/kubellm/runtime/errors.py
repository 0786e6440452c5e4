"""The one family of command failures: each knows its one-line message, its reason and its exit code.

Every ``kubellm`` command ends a failure the same way: one line on stderr
(``kubellm <command>: <message>``), the exit code of the error's class, and (where the command
reports to the operator) ``reason`` in status. Exit codes the operator's Job podFailurePolicy
acts on are part of the contract (:data:`~kubellm.contract.schema.EXIT_BAD_INPUT`,
:data:`~kubellm.contract.training.EXIT_DATA_QUALITY`): no retry can fix those inputs.
"""

from __future__ import annotations

from typing import ClassVar

from kubellm.contract.schema import EXIT_BAD_INPUT, EXIT_FAILED

__all__ = ["CommandError", "ConfigError", "DatasetError", "one_line"]


class CommandError(Exception):
    """A failure a command reports in one line and ends with :attr:`exit_code`.

    The default is a failure a retry may fix (exit 1); subclasses for input that cannot work
    end with :data:`~kubellm.contract.schema.EXIT_BAD_INPUT`.
    """

    exit_code: ClassVar[int] = EXIT_FAILED
    reason: ClassVar[str] = "Failed"
    """CamelCase name of the failure, as status and the report carry it."""


class ConfigError(CommandError):
    """The run document, a flag or an environment variable cannot work."""

    exit_code = EXIT_BAD_INPUT
    reason = "InvalidConfig"


class DatasetError(CommandError):
    """A dataset cannot be read: a missing file, a malformed line, a missing column."""

    exit_code = EXIT_BAD_INPUT
    reason = "InvalidDataset"


def one_line(error: BaseException, limit: int = 500) -> str:
    """The error's message with its whitespace folded, at most ``limit`` characters."""
    return " ".join(str(error).split())[:limit]
