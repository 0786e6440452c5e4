"""The experiment's test cases: the spec's inline rows, or rows read from where a team keeps them.

A named source (a mounted ConfigMap key or PVC file, a path in the image, an ``hf://`` dataset
and its split at a revision) is read by the training data readers
(:func:`kubellm.runtime.training.data.read_rows`: JSONL, JSON, CSV, Parquet; a folder's or a
Hub repository's split files). Each row is then mapped: ``inputField`` is the input,
``expectedField`` the reference answer (an empty cell counts as none), and every other column,
with the entries of a ``vars`` object, becomes a template variable. With ``maxRows`` below the
row count a seeded sample is kept, in file order, the same on every run.

Every problem is one :class:`DatasetError` line naming the file and line (exit code 2): an
unreadable file, a missing column, no rows, a reference scorer without an expected answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubellm.contract.experiments import DEFAULT_SPLIT, REFERENCE_SCORERS, DatasetRow, ExperimentDataset, Scorer
from kubellm.contract.training import DatasetConfig
from kubellm.runtime.errors import ConfigError, DatasetError
from kubellm.runtime.training.data import RawRow, read_rows

__all__ = [
    "DatasetError",
    "LocatedRow",
    "check_references",
    "from_file",
    "load_dataset",
    "map_row",
    "sample_indices",
]

VARS_FIELD = "vars"


@dataclass(frozen=True)
class LocatedRow:
    """A test case and where it was read (``cases.jsonl:3``, or ``row 3`` for inline rows)."""

    location: str
    row: DatasetRow


def from_file(dataset: ExperimentDataset, path: Path) -> ExperimentDataset:
    """``dataset`` reading ``path`` instead of its own source (``--dataset``); mapping and sampling stay."""
    source = {"uri": str(path.resolve()), "format": "auto", "split": None, "revision": None, "token_secret_ref": None}
    return dataset.model_copy(update={"rows": None, "config_map_key_ref": None, **source})


def load_dataset(dataset: ExperimentDataset, scorers: Sequence[Scorer] = ()) -> list[DatasetRow]:
    """The rows the variants answer, sampled down to ``maxRows`` and checked against the scorers."""
    located = _located_rows(dataset)
    if not located:
        raise DatasetError(f"{dataset.uri}: the dataset has no rows")
    fingerprints = [row.row.model_dump_json() for row in located]
    chosen = [located[index] for index in sample_indices(fingerprints, dataset.max_rows, dataset.seed)]
    check_references(chosen, scorers, dataset.expected_field if dataset.rows is None else None)
    return [row.row for row in chosen]


def _located_rows(dataset: ExperimentDataset) -> list[LocatedRow]:
    if dataset.rows is not None:
        return [LocatedRow(f"row {number}", row) for number, row in enumerate(dataset.rows, start=1)]
    if dataset.uri is None:
        raise ConfigError(
            "dataset.configMapKeyRef names a ConfigMap, which only a pod of the operator mounts; "
            "run the manifest with kubellm run, or pass --dataset FILE"
        )
    config = DatasetConfig(
        uri=dataset.uri, revision=dataset.revision, format=dataset.format, split=dataset.split or DEFAULT_SPLIT
    )
    raw = [row for row in read_rows(config) if row.values is not None]  # blank lines are no rows
    return [LocatedRow(row.location, map_row(row, dataset.input_field, dataset.expected_field)) for row in raw]


def sample_indices(fingerprints: Sequence[str], max_rows: int | None, seed: int) -> list[int]:
    """Which rows to keep: all, or ``max_rows`` drawn with ``seed``, in their original order.

    Each row's rank is a hash of the seed and the row's content, so the sample is the same on
    every run and every machine, and a row reordered in the file keeps its chance of being drawn.
    """
    if max_rows is None or len(fingerprints) <= max_rows:
        return list(range(len(fingerprints)))
    ranks = sorted(range(len(fingerprints)), key=lambda i: (_rank(seed, fingerprints[i]), i))
    return sorted(ranks[:max_rows])


def _rank(seed: int, fingerprint: str) -> str:
    return hashlib.sha256(f"{seed}\n{fingerprint}".encode()).hexdigest()


def map_row(raw: RawRow, input_field: str, expected_field: str) -> DatasetRow:
    """One read row as a test case: the input and expected columns, the rest as template variables."""
    values = raw.values or {}
    if input_field not in values:
        columns = ", ".join(values) or "none"
        raise DatasetError(
            f"{raw.location}: no {input_field!r} column (columns: {columns}); "
            "set dataset.inputField to the column holding the input"
        )
    nested = values.get(VARS_FIELD, {}) if VARS_FIELD not in (input_field, expected_field) else {}
    if not isinstance(nested, Mapping):
        raise DatasetError(f"{raw.location}: {VARS_FIELD} must be an object of strings")
    named = {k: v for k, v in values.items() if k not in (input_field, expected_field, VARS_FIELD)}
    variables = {key: _variable(value) for key, value in {**nested, **named}.items() if value is not None}
    data: dict[str, Any] = {"input": _text(raw, input_field, values[input_field]), "vars": variables}
    expected = values.get(expected_field)
    if expected not in (None, ""):
        data["expected"] = _text(raw, expected_field, expected)
    try:
        return DatasetRow.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DatasetError(f"{raw.location}: {where}: {first['msg']}") from None


def _text(raw: RawRow, column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)  # 8 -> "8", true -> "true"
    raise DatasetError(f"{raw.location}: column {column!r} must be text or a number, got {type(value).__name__}")


def _variable(value: Any) -> Any:
    """A template variable: text as is, anything else as JSON text (a list of aliases, a number)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def check_references(
    rows: Sequence[LocatedRow | DatasetRow], scorers: Sequence[Scorer], expected_field: str | None = None
) -> None:
    """Reference scorers need an expected answer on every row; the error says which column to map."""
    needing = [scorer.name for scorer in scorers if scorer.type in REFERENCE_SCORERS]
    located = [row if isinstance(row, LocatedRow) else LocatedRow(f"row {n}", row) for n, row in enumerate(rows, 1)]
    missing = [row.location for row in located if row.row.expected is None]
    if not needing or not missing:
        return
    hint = ""
    if expected_field is not None:
        hint = (
            f"; {expected_field!r} is empty or missing there: set dataset.expectedField to the column "
            "holding the reference answer"
        )
    raise DatasetError(
        f"scorers {', '.join(needing)} need an expected answer on every row; {missing[0]} has none "
        f"({len(missing)} of {len(located)} rows){hint}"
    )
