"""One experiment run from start to finish: check, plan, send, score, decide, report.

Everything that can be checked before the first request is (templates against every row,
scorer patterns, the model files of a similarity scorer, the dataset's reference answers, the
endpoint answering), so a broken spec fails in seconds and sends nothing.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from kubellm.contract.experiments import DatasetRow, ExperimentConfig, ExperimentProgress, SequentialReport
from kubellm.runtime.errors import CommandError

from .client import Api, ClientSettings, EndpointClient, EndpointUnreachableError, RequestError
from .dataset import check_references
from .report import ReportContext, write_report, write_result
from .results import ExperimentResult, analyse, decide, score_requests
from .runner import (
    REQUESTS_FILE,
    PlannedRequest,
    Progress,
    RequestKey,
    RequestLog,
    RequestRecord,
    plan_requests,
    send_requests,
)
from .scorers import check_scorers
from .statistics import sequential_levels
from .templates import VariantTemplate, compile_variants

__all__ = ["ExperimentError", "RunSettings", "run_experiment"]


class ExperimentError(CommandError):
    """The run cannot complete (no model name, every request failed, ...)."""


@dataclass(frozen=True)
class RunSettings:
    """How and where one experiment runs."""

    name: str
    endpoint: str
    api: Api
    model: str | None
    output_dir: Path
    api_key: str | None = None
    timeout_seconds: float = 120.0
    max_retries: int = 4
    progress_stream: TextIO = field(default_factory=lambda: sys.stderr)
    on_progress: Callable[[ExperimentProgress], object] | None = None
    """Called with each progress report, e.g. to patch the PromptExperiment's report ConfigMap."""


async def _model_name(client: EndpointClient, configured: str | None, config: ExperimentConfig) -> str:
    """The default model: configured, else the server's first; the call also proves it is reachable."""
    try:
        served = await client.list_models()
    except EndpointUnreachableError:
        raise  # nothing else would work either
    except RequestError:
        served = []  # a server without /models still answers completions
    if configured is not None:
        return configured
    if served:
        return served[0]
    if all(variant.model for variant in config.variants):
        return ""
    raise ExperimentError("no model name: set spec.target.model (the server lists no model at /models)")


@dataclass
class _Sender:
    """Sends the planned requests: all at once, or block by block with a test after each (early stopping)."""

    config: ExperimentConfig
    rows: Sequence[DatasetRow]
    templates: Mapping[str, VariantTemplate]
    planned: Sequence[PlannedRequest]
    client: EndpointClient
    log: RequestLog
    progress: Progress

    async def _send(self, requests: Sequence[PlannedRequest]) -> dict[RequestKey, RequestRecord]:
        return await send_requests(requests, self.client, self.config.concurrency, self.log, self.progress)

    async def all(self) -> tuple[dict[RequestKey, RequestRecord], int, SequentialReport | None]:
        """Every request; the whole dataset is used."""
        return await self._send(self.planned), len(self.rows), None

    async def in_looks(self) -> tuple[dict[RequestKey, RequestRecord], int, SequentialReport | None]:
        """Block by block; after each block but the last, stop if a winner is significant at that look's level."""
        stopping = self.config.early_stopping
        assert stopping is not None
        levels = sequential_levels(stopping.looks, float(Decimal(self.config.alpha)))
        records: dict[RequestKey, RequestRecord] = {}
        start = 0
        for look, level in enumerate(levels, start=1):
            end = math.ceil(len(self.rows) * look / stopping.looks)
            records |= await self._send([p for p in self.planned if start <= p.key.row < end])
            start = end
            report = SequentialReport(
                looks=stopping.looks, look=look, rows=end, level=f"{level:.4g}", stopped_early=look < stopping.looks
            )
            if look < stopping.looks and self._winner_at(records, end, level):
                return records, end, report
        return records, len(self.rows), report

    def _winner_at(self, records: Mapping[RequestKey, RequestRecord], rows: int, level: float) -> bool:
        table = score_requests(self.config, self.rows[:rows], self.templates, records)
        return decide(self.config, table, level).winner is not None


async def run_experiment(
    config: ExperimentConfig, rows: Sequence[DatasetRow], settings: RunSettings
) -> ExperimentResult:
    """Run ``config`` over ``rows`` against ``settings.endpoint``; write and return the result."""
    templates = compile_variants(config.variants)
    check_scorers(config.scorers)
    check_references(rows, config.scorers)
    plan_requests(config, rows, templates, settings.api, "")  # renders every prompt before any request
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    client_settings = ClientSettings(
        base_url=settings.endpoint,
        api=settings.api,
        api_key=settings.api_key,
        timeout_seconds=settings.timeout_seconds,
        max_retries=settings.max_retries,
        max_connections=config.concurrency,
    )
    async with EndpointClient(client_settings) as client:
        model = await _model_name(client, settings.model, config)
        planned = plan_requests(config, rows, templates, settings.api, model)
        progress = Progress(
            total=len(planned),
            output_dir=settings.output_dir,
            stream=settings.progress_stream,
            listener=settings.on_progress,
        )
        log = RequestLog(settings.output_dir / REQUESTS_FILE)
        sent = _Sender(config, rows, templates, planned, client, log, progress)
        records, used, sequential = await sent.all() if config.early_stopping is None else await sent.in_looks()
    failures = [record for record in records.values() if record.failed]
    if len(failures) == len(records):
        raise ExperimentError(f"every request failed; the first: {failures[0].error}")
    table = score_requests(config, rows[:used], templates, records)
    result = analyse(config, table, records, progress.snapshot(), sequential)
    write_result(result, settings.output_dir)
    context = ReportContext(name=settings.name, endpoint=settings.endpoint, api=settings.api, rows=len(rows))
    write_report(config, result, context, settings.output_dir)
    return result
