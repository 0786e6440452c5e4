"""The distributed launcher's exit code: the first failing worker's bad-input code, else 1."""

from __future__ import annotations

import pytest

from kubellm.contract.schema import EXIT_BAD_INPUT
from kubellm.contract.training import EXIT_DATA_QUALITY
from kubellm.runtime.training.launch import launcher_exit_code


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        ([(10.0, EXIT_DATA_QUALITY)], EXIT_DATA_QUALITY),
        ([(10.0, EXIT_BAD_INPUT), (10.5, EXIT_BAD_INPUT)], EXIT_BAD_INPUT),
        ([(12.0, 1), (11.0, EXIT_DATA_QUALITY)], EXIT_DATA_QUALITY),  # the first by time
        ([(11.0, 1), (12.0, EXIT_DATA_QUALITY)], 1),  # a crash, then a peer's odd code
        ([(11.0, EXIT_DATA_QUALITY), (11.0, -15)], EXIT_DATA_QUALITY),  # then its peer stopped, same second
        ([(11.0, -15), (11.0, EXIT_DATA_QUALITY)], 1),  # a tie goes to the one recorded first
        ([(11.0, -9)], 1),  # killed by a signal
        ([(11.0, 7)], 1),
        ([], 1),
    ],
)
def test_the_first_failure_keeps_its_code_only_when_it_means_bad_input(
    failures: list[tuple[float, int]], expected: int
) -> None:
    assert launcher_exit_code(failures) == expected
