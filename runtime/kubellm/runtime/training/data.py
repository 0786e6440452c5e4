"""Reading a dataset into training examples: JSONL, JSON, CSV (and Parquet with pyarrow).

Sources are the same URIs as models: a file or folder (``file://``, ``pvc://``, a path), an
``hf://`` dataset repository (its ``<split>*`` files), or ``dummy://<task>`` synthetic rows
(:mod:`kubellm.runtime.training.synthetic`). A folder contributes the files whose names start
with the split (``train.jsonl``, ``train-00001.csv``).

Each row becomes an :class:`Example` (prompt + completion; the loss is masked on the prompt):

- ``dataset.textField`` set: plain text, the whole row is trained on;
- a ``messages`` column (and no prompt column): a chat, rendered with the tokenizer's chat
  template; the last message (the assistant's) is the completion, the rest is the prompt;
- otherwise ``promptField`` and ``responseField`` columns.

Every problem names its place, ``file:line`` (``file:item`` for a JSON array), never a
traceback: a malformed JSONL line, a missing column, a chat whose last turn is not the
assistant's.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from kubellm.contract.training import DatasetConfig
from kubellm.runtime.models.hub import translated_hub_errors
from kubellm.runtime.models.sources import DummySource, HubSource, ModelSourceError, PathSource, hub_token, parse_source
from kubellm.runtime.training.errors import DatasetError
from kubellm.runtime.training.synthetic import synthetic_rows

__all__ = [
    "FORMATS",
    "MESSAGES_FIELD",
    "Example",
    "RawRow",
    "chat_row",
    "load_examples",
    "read_rows",
    "render_chat",
    "to_examples",
]

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MESSAGES_FIELD = "messages"


@dataclass(frozen=True)
class RawRow:
    """One row as read, with where it came from; ``values`` is None for a blank line."""

    location: str
    values: dict[str, Any] | None


@dataclass(frozen=True)
class Example:
    """A training example: the loss covers ``completion`` only (all of it for plain text)."""

    location: str
    prompt: str
    completion: str

    @property
    def text(self) -> str:
        """Everything the model reads."""
        return self.prompt + self.completion


def load_examples(config: DatasetConfig, tokenizer: Any) -> list[Example]:
    """Read the dataset ``config`` describes and turn every row into an :class:`Example`."""
    return to_examples(read_rows(config), config, tokenizer)


def read_rows(config: DatasetConfig) -> list[RawRow]:
    """Every row of the dataset, blank lines included (they count as empty rows)."""
    try:
        source = parse_source(config.uri, config.revision)
        if isinstance(source, DummySource):
            return [RawRow(f"{source.name}:{number}", row) for number, row in synthetic_rows(source)]
    except ModelSourceError as error:
        raise DatasetError(str(error)) from None
    files = _hub_files(source, config) if isinstance(source, HubSource) else _path_files(source, config.split)
    return [row for path in files for row in _read_file(path, _format_of(path, config))]


def _path_files(source: PathSource, split: str) -> list[Path]:
    if not source.path.exists():
        raise DatasetError(f"{source.uri}: {source.path} does not exist")
    if source.path.is_file():
        return [source.path]
    files = sorted(p for p in source.path.iterdir() if p.is_file() and p.name.startswith(split) and p.suffix in FORMATS)
    if not files:
        raise DatasetError(f"{source.uri}: no {split}* file with a suffix of {', '.join(FORMATS)} in {source.path}")
    return files


def _hub_files(source: HubSource, config: DatasetConfig) -> list[Path]:
    with translated_hub_errors(source.uri):
        folder = snapshot_download(
            source.repo_id,
            repo_type="dataset",
            revision=source.revision,
            token=hub_token(dataset=True),
            allow_patterns=[f"*{suffix}" for suffix in FORMATS],
        )
    files = sorted(p for p in Path(folder).rglob(f"*{config.split}*") if p.is_file() and p.suffix in FORMATS)
    if not files:
        raise DatasetError(
            f"{source.uri}: no {config.split} split file (jsonl, json, csv or parquet) in the repository"
        )
    return files


def _format_of(path: Path, config: DatasetConfig) -> str:
    if config.format != "auto":
        return config.format
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DatasetError(f"{path}: cannot tell the format from the suffix; set dataset.format") from None


def _read_file(path: Path, file_format: str) -> list[RawRow]:
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    try:
        return list(readers[file_format](path))
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read: {error.strerror or error}") from None


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            location = f"{path.name}:{number}"
            if not line.strip():
                yield RawRow(location, None)
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{location}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(value, dict):
                raise DatasetError(f"{location}: expected a JSON object, got {type(value).__name__}")
            yield RawRow(location, value)


def _read_json(path: Path) -> Iterator[RawRow]:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        yield from _read_jsonl(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path.name}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DatasetError(f"{path.name}: item {number}: expected a JSON object, got {type(item).__name__}")
        yield RawRow(f"{path.name}: item {number}", item)


def _read_csv(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                location = f"{path.name}:{reader.line_num}"
                if None in row:
                    raise DatasetError(f"{location}: more fields than the header's {len(reader.fieldnames or [])}")
                yield RawRow(location, None if not any(row.values()) else {k: v or "" for k, v in row.items()})
        except csv.Error as error:
            raise DatasetError(f"{path.name}:{reader.line_num}: malformed CSV ({error})") from None


def _read_parquet(path: Path) -> Iterator[RawRow]:
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs the pyarrow package, which is not installed") from None
    for number, row in enumerate(parquet.read_table(path).to_pylist(), start=1):
        yield RawRow(f"{path.name}: row {number}", row)


# --- rows to examples ----------------------------------------------------------------------------


def to_examples(rows: list[RawRow], config: DatasetConfig, tokenizer: Any) -> list[Example]:
    """Turn rows into examples; blank rows become empty examples (the quality check counts them)."""
    return [_to_example(row, config, tokenizer) for row in rows]


def chat_row(values: dict[str, Any], config: DatasetConfig) -> bool:
    """Whether a row is a chat (a ``messages`` column and no prompt column)."""
    return MESSAGES_FIELD in values and config.prompt_field not in values


def _to_example(row: RawRow, config: DatasetConfig, tokenizer: Any) -> Example:
    if row.values is None:
        return Example(row.location, "", "")
    if config.text_field is not None:
        return Example(row.location, "", _text(row, config.text_field))
    if chat_row(row.values, config):
        return _chat_example(row, tokenizer)
    return Example(row.location, _text(row, config.prompt_field), _text(row, config.response_field))


def _text(row: RawRow, column: str) -> str:
    values = row.values or {}
    if column not in values:
        hint = "; set dataset.textField to train on raw text" if "text" in values else ""
        raise DatasetError(f"{row.location}: missing column {column!r} (columns: {', '.join(values)}){hint}")
    value = values[column]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{row.location}: column {column!r} must be text, got {type(value).__name__}")
    return value


def _chat_example(row: RawRow, tokenizer: Any) -> Example:
    messages = _messages(row)
    if not messages:
        return Example(row.location, "", "")
    if messages[-1]["role"] != "assistant":
        raise DatasetError(f"{row.location}: the last message must be the assistant's (the trained answer)")
    prompt = render_chat(tokenizer, messages[:-1], generation_prompt=True)
    full = render_chat(tokenizer, messages, generation_prompt=False)
    if full.startswith(prompt):
        return Example(row.location, prompt, full[len(prompt) :])
    return Example(row.location, prompt, messages[-1]["content"])


def _messages(row: RawRow) -> list[dict[str, str]]:
    value = (row.values or {})[MESSAGES_FIELD]
    if not isinstance(value, list):
        raise DatasetError(f"{row.location}: {MESSAGES_FIELD!r} must be a list of {{role, content}} objects")
    messages = []
    for index, message in enumerate(value, start=1):
        ok = isinstance(message, dict) and isinstance(message.get("role"), str)
        if not ok or not isinstance(message.get("content"), str):
            raise DatasetError(f"{row.location}: message {index} needs string 'role' and 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    """The messages as the model reads them: its chat template, else a plain ``role: content`` transcript."""
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return str(rendered)
    # No template: a plain transcript the model can still learn from.
    text = "".join(f"{message['role']}: {message['content']}\n" for message in messages)
    return text + ("assistant: " if generation_prompt else "")
