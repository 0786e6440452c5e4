"""The distributed launcher: PyTorch's ``torchrun``, keeping a worker's bad-input exit code.

``torchrun`` exits 1 whatever its workers returned, so a bad config (2) or a failed data check
(3) in a distributed run would look like a crash and be retried ``backoffLimit x nodes`` times.
This runs the same launcher (``torch.distributed.run``, same arguments) and, when a worker
failed, exits with the first failure's code if it is a bad-input code, else 1.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun

from kubellm.contract.schema import EXIT_BAD_INPUT
from kubellm.contract.training import EXIT_DATA_QUALITY

__all__ = ["BAD_INPUT_EXIT_CODES", "launch", "launcher_exit_code"]

BAD_INPUT_EXIT_CODES = frozenset({EXIT_BAD_INPUT, EXIT_DATA_QUALITY})


def launcher_exit_code(failures: Iterable[tuple[float, int]], bad_input: Collection[int] = BAD_INPUT_EXIT_CODES) -> int:
    """The launcher's exit code from its workers' ``(timestamp, exit code)`` failures, in torchrun's order.

    The first failure by time is the cause (its peers fail after it, losing the group): its own
    code when that means bad input, otherwise 1, as ``torchrun`` says. Timestamps are whole
    seconds, so a tie goes to the failure recorded first, as in torchrun's ``get_first_failure``:
    torchrun records the workers that failed before the ones it then stopped with SIGTERM.
    """
    first = min(failures, key=lambda failure: failure[0], default=None)
    return first[1] if first is not None and first[1] in bad_input else 1


def launch(argv: list[str]) -> int:
    """Run ``torchrun`` with ``argv``; 0 on success, else the code :func:`launcher_exit_code` picks."""
    try:
        torchrun(argv)
    except ChildFailedError as error:
        return launcher_exit_code((failure.timestamp, failure.exitcode) for failure in error.failures.values())
    return 0


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
