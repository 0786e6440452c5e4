"""``kubectl get`` for local runs: the CRDs' printer columns evaluated on an object (pure).

Only the JSONPath forms the printer columns use are understood: ``.a.b.c`` and
``.status.conditions[?(@.type=="Ready")].status``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubellm.operator.api.common import KindInfo, PrinterColumn

__all__ = ["age", "format_table", "header", "json_path", "row"]

_FILTER = re.compile(r'^(?P<list>\w+)\[\?\(@\.(?P<key>\w+)=="(?P<value>[^"]*)"\)\]$')
_PART = re.compile(r'\w+\[\?\(@\.\w+=="[^"]*"\)\]|\w+')


def json_path(document: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` (a printer column's JSONPath), or None when absent."""
    value: Any = document
    for part in _PART.findall(path):
        match = _FILTER.match(part)
        if match:
            items = value.get(match["list"]) if isinstance(value, Mapping) else None
            value = next(
                (i for i in items or [] if isinstance(i, Mapping) and str(i.get(match["key"])) == match["value"]),
                None,
            )
        else:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


def age(seconds: float) -> str:
    """A duration the way kubectl prints ages: ``45s``, ``3m7s``, ``2h5m``, ``3d4h``."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def _cell(column: PrinterColumn, value: Any, now: datetime) -> str:
    if value is None or value == "":
        return "<none>" if column.type not in ("integer", "number") else ""
    if column.type == "date":
        return age((now - datetime.fromisoformat(str(value).replace("Z", "+00:00"))).total_seconds())
    if column.type == "number" and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(info: KindInfo, wide: bool) -> list[PrinterColumn]:
    return [c for c in info.printer_columns if wide or c.priority == 0]


def header(info: KindInfo, *, wide: bool = False) -> list[str]:
    """The column titles, NAME first."""
    return ["NAME", *(c.name.upper() for c in _columns(info, wide))]


def row(info: KindInfo, document: Mapping[str, Any], now: datetime, *, wide: bool = False) -> list[str]:
    """One object's cells, NAME first."""
    name = str(json_path(document, ".metadata.name"))
    return [name, *(_cell(c, json_path(document, c.json_path), now) for c in _columns(info, wide))]


def format_table(rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> list[str]:
    """Rows as aligned text, three spaces between columns (as kubectl does)."""
    sizes = list(widths or [max(len(r[i]) for r in rows) for i in range(len(rows[0]))])
    return ["   ".join(cell.ljust(size) for cell, size in zip(r, sizes, strict=True)).rstrip() for r in rows]
