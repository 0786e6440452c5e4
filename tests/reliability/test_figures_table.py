"""The summary table the suite prints is laid out from what the tests record."""

from __future__ import annotations

from tests.reliability.conftest import Figure, _table


def test_table_lists_every_figure_with_its_verdict() -> None:
    figures = [
        Figure("operator", "orphans", "0", "0", True, "t::a"),
        Figure("server", "p99 admitted (s)", "1.2", "", None, "t::b"),
        Figure("server", "5xx", "3", "0", False, "t::c"),
    ]
    lines = _table(figures)
    assert lines[0].split() == ["area", "figure", "measured", "target", "met"]
    assert len(lines) == 2 + len(figures)
    assert lines[2].split()[-1] == "yes"
    assert lines[3].split()[-1] == "-"
    assert lines[4].split()[-1] == "NO"
