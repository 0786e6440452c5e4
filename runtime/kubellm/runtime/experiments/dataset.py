"""The experiment's test cases: the spec's inline rows, or a JSONL/CSV file mounted into the pod.

A file row has an ``input``, an optional ``expected`` reference answer and extra template
variables: in JSONL either a ``vars`` object or any other string fields, in CSV any other
columns. Errors name the file and the line, so a broken ConfigMap is fixed in one go.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubellm.contract.experiments import REFERENCE_SCORERS, DatasetRow, Scorer
from kubellm.runtime.errors import DatasetError

__all__ = ["DatasetError", "check_references", "load_rows"]

_ROW_FIELDS = ("input", "expected", "vars")


def load_rows(path: Path) -> list[DatasetRow]:
    """Read test cases from a ``.jsonl``/``.ndjson`` or ``.csv`` file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise DatasetError(f"{path}: unsupported dataset format {suffix or '(none)'!r}; use .jsonl or .csv")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            raw = list(_csv_rows(handle, path) if suffix == ".csv" else _jsonl_rows(handle, path))
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the dataset: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    rows = [_row(path, line, fields) for line, fields in raw]
    if not rows:
        raise DatasetError(f"{path}: the dataset has no rows")
    return rows


def _jsonl_rows(lines: Iterator[str], path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path} line {number}: invalid JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(value, dict):
            raise DatasetError(f"{path} line {number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def _csv_rows(lines: Iterator[str], path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "input" not in reader.fieldnames:
        raise DatasetError(f"{path} line 1: the CSV header needs an 'input' column")
    try:
        for record in reader:
            if None in record:
                raise DatasetError(f"{path} line {reader.line_num}: more cells than header columns")
            yield reader.line_num, {key: value for key, value in record.items() if value is not None}
    except csv.Error as error:
        raise DatasetError(f"{path} line {reader.line_num}: {error}") from None


def _row(path: Path, line: int, fields: Mapping[str, Any]) -> DatasetRow:
    extra = {key: value for key, value in fields.items() if key not in _ROW_FIELDS}
    variables = {**_as_mapping(path, line, fields.get("vars", {})), **extra}
    data = {"input": fields.get("input"), "vars": variables}
    if fields.get("expected") not in (None, ""):
        data["expected"] = fields["expected"]
    try:
        return DatasetRow.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DatasetError(f"{path} line {line}: {where}: {first['msg']}") from None


def _as_mapping(path: Path, line: int, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{path} line {line}: vars must be an object of strings")
    return value


def check_references(rows: Sequence[DatasetRow], scorers: Sequence[Scorer]) -> None:
    """Reference scorers need ``expected`` on every row (the spec checks inline rows itself)."""
    needing = [scorer.name for scorer in scorers if scorer.type in REFERENCE_SCORERS]
    missing = [number for number, row in enumerate(rows, start=1) if row.expected is None]
    if needing and missing:
        raise DatasetError(
            f"scorers {', '.join(needing)} need expected on every row; row {missing[0]} has none "
            f"({len(missing)} rows in all)"
        )
