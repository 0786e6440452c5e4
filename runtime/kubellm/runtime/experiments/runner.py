"""Running the requests of an experiment: plan, send with bounded concurrency, save, resume.

The plan is a paired design: every variant answers every row and sample, with the same seed for
a given row and sample, and requests are sent row by row so that even a partial run compares
variants on the same rows. Each answered request is appended to ``requests.jsonl`` in the output
folder as soon as it completes; a restarted run reads that file and sends only the requests
that have no successful answer yet (a request whose body changed, because the spec changed, is
sent again). Progress is printed as it goes and written to ``progress.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TextIO, TypeVar, cast

from pydantic import BaseModel, ValidationError

from kubellm.contract.experiments import DatasetRow, ExperimentConfig, ExperimentProgress

from .client import Api, EndpointClient, EndpointUnreachableError, RequestError, request_body
from .templates import VariantTemplate

__all__ = [
    "PROGRESS_FILE",
    "REQUESTS_FILE",
    "PlannedRequest",
    "Progress",
    "RecordLog",
    "RequestKey",
    "RequestLog",
    "RequestRecord",
    "fingerprint",
    "pending_requests",
    "plan_requests",
    "seed_for",
    "send_requests",
]

REQUESTS_FILE = "requests.jsonl"
PROGRESS_FILE = "progress.json"
_MAX_SEED = 2**31 - 1


@dataclass(frozen=True, order=True)
class RequestKey:
    """Which request: a variant, a row and a sample (both counted from 0)."""

    variant: str
    row: int
    sample: int


@dataclass(frozen=True)
class PlannedRequest:
    """A request to send, with a fingerprint of its body to detect a changed spec on resume."""

    key: RequestKey
    body: Mapping[str, Any]
    fingerprint: str


class RequestRecord(BaseModel):
    """One line of ``requests.jsonl``: what a request returned, or why it failed."""

    variant: str
    row: int
    sample: int
    fingerprint: str
    output: str | None = None
    error: str | None = None
    latency_seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def key(self) -> RequestKey:
        """The request this record answers."""
        return RequestKey(self.variant, self.row, self.sample)

    @property
    def failed(self) -> bool:
        """Whether the request failed (after its retries)."""
        return self.error is not None


def fingerprint(body: Mapping[str, Any]) -> str:
    """A short digest of a request body: a changed body (a changed spec) is sent again on resume."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def seed_for(config: ExperimentConfig, row: int, sample: int) -> int:
    """The sampling seed of a row and sample: the same for every variant (common random numbers)."""
    base = config.generation.seed or 0
    return (base + row * config.samples + sample) % _MAX_SEED


def plan_requests(
    config: ExperimentConfig,
    rows: Sequence[DatasetRow],
    templates: Mapping[str, VariantTemplate],
    api: Api,
    default_model: str,
) -> list[PlannedRequest]:
    """Every request of the experiment, row by row; renders every prompt (template errors surface here)."""
    planned = []
    for row_index, row in enumerate(rows):
        prompts = {v.name: templates[v.name].render(row, row_index + 1) for v in config.variants}
        for sample in range(config.samples):
            for variant in config.variants:
                model = variant.model or default_model
                seed = seed_for(config, row_index, sample)
                prompt, budget = prompts[variant.name], variant.max_tokens
                body = request_body(api, model, prompt, config.generation, seed, max_tokens=budget)
                key = RequestKey(variant.name, row_index, sample)
                planned.append(PlannedRequest(key=key, body=body, fingerprint=fingerprint(body)))
    return planned


class _Keyed(Protocol):
    @property
    def key(self) -> Hashable: ...  # pragma: no cover


RecordT = TypeVar("RecordT", bound=BaseModel)


class RecordLog(Generic[RecordT]):
    """An append-only JSON-lines log of records, each with a ``key``, read back to resume a run."""

    record_type: type[RecordT]

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[Any, RecordT]:
        """The latest record per key; a line cut short by a kill is skipped."""
        records: dict[Any, RecordT] = {}
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                record = self._parse(line)
                if record is not None:
                    records[cast(_Keyed, record).key] = record
        return records

    def append(self, record: RecordT) -> None:
        """Append one record and flush it to the file at once."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(record.model_dump_json(exclude_none=True) + "\n")
            handle.flush()

    def _parse(self, line: str) -> RecordT | None:
        if not line.strip():
            return None
        try:
            return self.record_type.model_validate_json(line)
        except ValidationError:
            return None


class RequestLog(RecordLog[RequestRecord]):
    """The append-only ``requests.jsonl`` of a run, read back to resume."""

    record_type = RequestRecord


@dataclass
class Progress:
    """Counts answered requests; now and then prints a line, rewrites ``progress.json`` and tells ``listener``."""

    total: int
    output_dir: Path
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    listener: Callable[[ExperimentProgress], object] | None = None
    interval_seconds: float = 5.0
    completed: int = 0
    failed: int = 0
    _last_report: float = field(default=0.0, init=False)
    _last_percent: int = field(default=-1, init=False)

    @property
    def percent(self) -> int:
        """Percent of the requests answered."""
        return 100 if self.total == 0 else self.completed * 100 // self.total

    def snapshot(self) -> ExperimentProgress:
        """The progress as the status reports it."""
        return ExperimentProgress(completed=self.completed, total=self.total, percent=self.percent)

    def advance(self, record: RequestRecord | None = None, resumed: int = 0) -> None:
        """Count one answered request (or ``resumed`` ones from an earlier run)."""
        self.completed += resumed + (record is not None)
        self.failed += int(record is not None and record.failed)
        now = time.monotonic()
        crossed = self.percent // 10 != self._last_percent // 10
        if crossed or now - self._last_report >= self.interval_seconds or self.completed == self.total:
            self.report(now)

    def report(self, now: float | None = None) -> None:
        """Print the progress line and write ``progress.json``."""
        self._last_report = time.monotonic() if now is None else now
        self._last_percent = self.percent
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"experiment: {self.completed}/{self.total} requests ({self.percent}%){failed}", file=self.stream)
        snapshot = self.snapshot()
        _write_atomically(self.output_dir / PROGRESS_FILE, snapshot.model_dump_json(by_alias=True))
        if self.listener is not None:
            self.listener(snapshot)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def pending_requests(
    planned: Sequence[PlannedRequest], done: Mapping[RequestKey, RequestRecord]
) -> list[PlannedRequest]:
    """The planned requests without a successful answer for the same body."""
    return [p for p in planned if not _answered(done.get(p.key), p.fingerprint)]


def _answered(record: RequestRecord | None, fingerprint: str) -> bool:
    return record is not None and not record.failed and record.fingerprint == fingerprint


async def send_requests(
    planned: Sequence[PlannedRequest],
    client: EndpointClient,
    concurrency: int,
    log: RequestLog,
    progress: Progress,
) -> dict[RequestKey, RequestRecord]:
    """Send what is not answered yet, ``concurrency`` at a time; return a record per planned request.

    Raises :class:`EndpointUnreachableError` (after stopping the other requests) when the server
    cannot be reached; what was answered until then stays in the log.
    """
    done = log.load()
    pending = pending_requests(planned, done)
    progress.advance(resumed=len(planned) - len(pending))
    queue = iter(pending)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(pending))):
                group.create_task(_worker(queue, client, log, progress, done))
    except ExceptionGroup as failures:  # unwrap: callers handle EndpointUnreachableError, OSError, ...
        unreachable = failures.subgroup(EndpointUnreachableError)
        raise (unreachable or failures).exceptions[0] from None
    return {p.key: done[p.key] for p in planned}


async def _worker(
    queue: Iterator[PlannedRequest],
    client: EndpointClient,
    log: RequestLog,
    progress: Progress,
    done: dict[RequestKey, RequestRecord],
) -> None:
    for planned in queue:  # the iterator is shared: each worker takes the next request
        record = await _send_one(planned, client)
        log.append(record)
        done[planned.key] = record
        progress.advance(record)


async def _send_one(planned: PlannedRequest, client: EndpointClient) -> RequestRecord:
    key = planned.key
    record = RequestRecord(variant=key.variant, row=key.row, sample=key.sample, fingerprint=planned.fingerprint)
    try:
        answer = await client.complete(planned.body)
    except EndpointUnreachableError:
        raise
    except RequestError as error:
        return record.model_copy(update={"error": str(error)})
    return record.model_copy(
        update={
            "output": answer.text,
            "latency_seconds": answer.latency_seconds,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "finish_reason": answer.finish_reason,
        }
    )
