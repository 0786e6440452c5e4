"""The reliability suite: fault-injection tests that each record the figure they measured.

Every test in ``tests/reliability/`` is marked ``reliability`` (and ``integration``: they all
run real processes). A test records what it measured with the ``figure`` fixture::

    figure("operator", "orphaned children after 20 kills", orphans, target="0", ok=orphans == 0)

and the session ends with one table of every figure recorded (``make reliability`` runs just
this suite; ``make test`` runs it with the rest). ``KUBELLM_RELIABILITY_REPORT=path.json``
also writes the table as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

__all__ = ["Figure", "RecordFigure"]


@dataclass(frozen=True)
class Figure:
    """One measured figure: where, what, the value as measured, the target and whether it was met."""

    area: str
    name: str
    value: str
    target: str
    ok: bool | None
    test: str


RecordFigure = Callable[..., None]
_FIGURES = pytest.StashKey[list[Figure]]()
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``reliability`` and ``integration``."""
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> RecordFigure:
    """Record a figure for the summary table: ``figure(area, name, value, target="", ok=None)``."""
    figures = request.config.stash.setdefault(_FIGURES, [])

    def record(area: str, name: str, value: object, target: str = "", ok: bool | None = None) -> None:
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        figures.append(Figure(area, name, shown, target, ok, request.node.nodeid))
        print(f"[figure] {area}: {name} = {shown}" + (f" (target {target})" if target else ""))

    return record


def _table(figures: list[Figure]) -> list[str]:
    rows = [("area", "figure", "measured", "target", "met")]
    rows += [(f.area, f.name, f.value, f.target, {True: "yes", False: "NO", None: "-"}[f.ok]) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print (and optionally save) the table of every figure the suite recorded."""
    figures = terminalreporter.config.stash.get(_FIGURES, [])
    if not figures:
        return
    terminalreporter.section("reliability figures")
    for line in _table(figures):
        terminalreporter.write_line(line)
    target = os.environ.get("KUBELLM_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
