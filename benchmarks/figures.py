"""What a benchmark family hands back: raw tables, checks against goals.md, a plot spec.

Every number in here is measured by the run that builds it; the report and the plots only
format what a :class:`FamilyResult` holds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Check",
    "FamilyResult",
    "Plot",
    "RunOptions",
    "Table",
    "Target",
    "format_number",
    "median",
    "percentile",
    "ratio",
]

Cell = str | float | int | None


@dataclass(frozen=True)
class RunOptions:
    """What every family is told: smoke mode or not, and the torch threads a process may use."""

    quick: bool
    threads: int


@dataclass(frozen=True)
class Target:
    """A bound from goals.md: ``value >= bound`` (``at_least``) or ``value <= bound``."""

    bound: float
    at_least: bool = True

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the bound."""
        return value >= self.bound if self.at_least else value <= self.bound

    def margin(self, value: float) -> float:
        """How far ``value`` is past the bound (positive) or short of it (negative), in the bound's unit."""
        return value - self.bound if self.at_least else self.bound - value

    def text(self, unit: str) -> str:
        """``>= 1.5x`` / ``<= 2 ms``."""
        return f"{'>=' if self.at_least else '<='} {format_number(self.bound)}{_spaced(unit)}"


@dataclass(frozen=True)
class Check:
    """One figure next to its target: ours vs a peer (a ratio), or ours alone (an absolute figure)."""

    figure: str
    value: float | None
    unit: str
    target: Target | None = None
    ours: float | None = None
    peer_name: str = ""
    peer: float | None = None
    raw_unit: str = ""
    why_missing: str = ""
    ours_name: str = "kubellm"

    @property
    def met(self) -> bool | None:
        """True/False against the target; None without a target or a value."""
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        return self.target.met(self.value)

    @property
    def margin(self) -> float | None:
        """Past the target (positive) or short of it (negative), in the figure's unit; None without both."""
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        return self.target.margin(self.value)

    def sentence(self) -> str:
        """Where kubellm stands on this figure, in one sentence."""
        if self.value is None or math.isnan(self.value):
            return f"{self.figure}: not measured ({self.why_missing or 'no value'})."
        against = ""
        if self.peer_name and self.peer is not None and self.ours is not None:
            peer = f"{format_number(self.peer)}{_spaced(self.raw_unit)}"
            against = f" ({self.ours_name} {format_number(self.ours)} vs {self.peer_name} {peer})"
        if self.target is None:
            return f"{self.figure}: {format_number(self.value)}{_spaced(self.unit)}{against}; no target."
        verdict = "meets the target" if self.met else "falls short of the target"
        return (
            f"{self.figure}: {format_number(self.value)}{_spaced(self.unit)}{against}; "
            f"kubellm {verdict} ({self.target.text(self.unit)})."
        )


@dataclass
class Table:
    """A Markdown table: a title, column names, rows of cells."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass
class Plot:
    """A grouped bar chart (one bar series per label, one group per category), or one line per label.

    ``lines`` are horizontal reference lines (a limit, a target), drawn with their labels.
    """

    title: str
    ylabel: str
    categories: list[str]
    series: dict[str, list[float | None]]
    log_scale: bool = False
    kind: Literal["bar", "line"] = "bar"
    lines: dict[str, float] = field(default_factory=dict)


@dataclass
class FamilyResult:
    """Everything one family measured."""

    name: str
    title: str
    workload: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN becomes None)."""
        return dict(_clean(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FamilyResult:
        """The result :meth:`to_json` wrote (an earlier run's family, kept when a run measures only some)."""
        checks = [Check(**{**c, "target": Target(**c["target"]) if c["target"] else None}) for c in data["checks"]]
        tables = [Table(**table) for table in data["tables"]]
        plots = [Plot(**plot) for plot in data["plots"]]
        return cls(**{**data, "tables": tables, "checks": checks, "plots": plots})


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def ratio(ours: float | None, peer: float | None) -> float | None:
    """ours / peer, None when either is missing or the peer is zero."""
    if ours is None or peer is None or peer == 0 or math.isnan(ours) or math.isnan(peer):
        return None
    return ours / peer


def format_number(value: float) -> str:
    """A figure with as many digits as it deserves."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


def _spaced(unit: str) -> str:
    return unit if unit in ("x", "%", "") or unit.startswith("x ") else f" {unit}"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value
