"""One experiment run from start to finish: check, plan, send, score, decide, report.

Everything that can be checked before the first request is (templates against every row,
scorer patterns, the model files of a similarity scorer, the dataset's reference answers, the
splits of a prompt search, the endpoint answering, and every judge's server), so a broken spec
fails in seconds and sends nothing. Judge scorers are asked after each block of answers
(:mod:`.judge`), before the answers are scored. With ``optimize`` the run first searches a
prompt on the search split (:mod:`.optimize`, requests logged in ``search-requests.jsonl``),
adds the best candidate to the variants and runs the experiment on the held-out rows only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import numpy as np
import yaml

from kubellm.contract.experiments import (
    DatasetRow,
    ExperimentConfig,
    ExperimentProgress,
    OptimizationReport,
    PromptVariant,
    Scorer,
    SequentialReport,
)
from kubellm.runtime.errors import CommandError

from .client import Api, ClientSettings, EndpointClient, EndpointUnreachableError, RequestError
from .dataset import check_references
from .judge import (
    JUDGEMENTS_FILE,
    Judge,
    JudgementKey,
    JudgementLog,
    JudgementRecord,
    JudgeReport,
    judge_report,
    plan_judgements,
    send_judgements,
)
from .optimize import (
    Candidate,
    SearchOutcome,
    SearchSpace,
    Splits,
    candidate_name,
    candidate_variant,
    optimization_report,
    propose_instructions,
    search,
    split_rows,
)
from .report import ReportContext, write_report, write_result
from .results import ExperimentResult, analyse, answer_texts, decide, lower_is_better, score_requests
from .runner import (
    REQUESTS_FILE,
    PlannedRequest,
    Progress,
    RequestKey,
    RequestLog,
    RequestRecord,
    plan_requests,
    seed_for,
    send_requests,
)
from .scorers import check_scorers
from .spec import base_url
from .statistics import sequential_levels
from .templates import VariantTemplate, compile_variants

__all__ = [
    "OPTIMIZED_VARIANT_FILE",
    "SEARCH_FILE",
    "SEARCH_JUDGEMENTS_FILE",
    "SEARCH_REQUESTS_FILE",
    "ExperimentError",
    "RunSettings",
    "run_experiment",
]

SEARCH_REQUESTS_FILE = "search-requests.jsonl"
SEARCH_JUDGEMENTS_FILE = "search-judgements.jsonl"
SEARCH_FILE = "search.json"
OPTIMIZED_VARIANT_FILE = "optimized-variant.yaml"


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
    judge_api_keys: Mapping[str, str] = field(default_factory=dict)
    """Per judge scorer name: its server's API key, if it has one."""
    on_optimization: Callable[[OptimizationReport], object] | None = None
    """Called after each trial of a prompt search, e.g. to patch the report ConfigMap."""


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


async def _judge_model(client: EndpointClient, scorer: Scorer) -> str:
    """The judge's model: judge.model, else its server's first (the call also proves it is reachable)."""
    assert scorer.judge is not None
    try:
        served = await client.list_models()
    except EndpointUnreachableError:
        raise
    except RequestError:
        served = []
    if scorer.judge.model is not None:
        return scorer.judge.model
    if served:
        return served[0]
    raise ExperimentError(f"judge scorer {scorer.name!r}: no model name: set judge.model (its server lists none)")


async def _open_judges(
    config: ExperimentConfig, settings: RunSettings, stack: contextlib.AsyncExitStack
) -> dict[str, Judge]:
    """A client per judge scorer, closed with ``stack``."""
    judges = {}
    for scorer in config.scorers:
        if scorer.judge is None or scorer.judge.url is None:
            continue  # check_scorers refused a judge without a URL already
        client_settings = ClientSettings(
            base_url=base_url(scorer.judge.url),
            api="chat",
            api_key=settings.judge_api_keys.get(scorer.name),
            timeout_seconds=settings.timeout_seconds,
            max_retries=settings.max_retries,
            max_connections=config.concurrency,
        )
        client = await stack.enter_async_context(EndpointClient(client_settings))
        judges[scorer.name] = Judge(scorer.name, scorer.judge, client, await _judge_model(client, scorer))
    return judges


@dataclass
class _Judging:
    """The judge scorers of a run: asks for the judgements of new answers, keeps every one."""

    judges: Mapping[str, Judge]
    config: ExperimentConfig
    rows: Sequence[DatasetRow]
    templates: Mapping[str, VariantTemplate]
    log: JudgementLog
    stream: TextIO
    done: dict[JudgementKey, JudgementRecord] = field(default_factory=dict)

    async def judge(self, records: Mapping[RequestKey, RequestRecord]) -> dict[JudgementKey, JudgementRecord]:
        """A judgement per judge and answer in ``records``; only those not judged before are asked for."""
        if not self.judges:
            return {}
        answers = answer_texts(self.templates, records)
        seeds = {key: seed_for(self.config, key.row, key.sample) for key in answers}
        planned = [p for judge in self.judges.values() for p in plan_judgements(judge, self.rows, answers, seeds)]
        judged = await send_judgements(planned, self.judges, self.config.concurrency, self.log, self.done)
        failed = sum(record.failed for record in judged.values())
        print(f"experiment: {len(judged)} judgements ({failed} failed)", file=self.stream)
        return judged

    def reports(self, judged: Mapping[JudgementKey, JudgementRecord], rows: int) -> list[JudgeReport]:
        """Each judge scorer's report over the first ``rows`` rows."""
        variants = [variant.name for variant in self.config.variants]
        return [
            judge_report(scorer, variants, [r for k, r in judged.items() if k.scorer == scorer.name and k.row < rows])
            for scorer in self.config.scorers
            if scorer.name in self.judges
        ]


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
    judging: _Judging
    judged: dict[JudgementKey, JudgementRecord] = field(default_factory=dict)

    async def _send(self, requests: Sequence[PlannedRequest]) -> dict[RequestKey, RequestRecord]:
        return await send_requests(requests, self.client, self.config.concurrency, self.log, self.progress)

    async def all(self) -> tuple[dict[RequestKey, RequestRecord], int, SequentialReport | None]:
        """Every request; the whole dataset is used."""
        records = await self._send(self.planned)
        self.judged = await self.judging.judge(records)
        return records, len(self.rows), None

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
            self.judged = await self.judging.judge(records)
            start = end
            report = SequentialReport(
                looks=stopping.looks, look=look, rows=end, level=f"{level:.4g}", stopped_early=look < stopping.looks
            )
            if look < stopping.looks and self._winner_at(records, end, level):
                return records, end, report
        return records, len(self.rows), report

    def _winner_at(self, records: Mapping[RequestKey, RequestRecord], rows: int, level: float) -> bool:
        table = score_requests(self.config, self.rows[:rows], self.templates, records, self.judged)
        return decide(self.config, table, level).winner is not None


@dataclass
class _Search:
    """A prompt search: scores candidates on the search split with the experiment's runner and scorers."""

    config: ExperimentConfig
    splits: Splits
    space: SearchSpace
    client: EndpointClient
    model: str
    settings: RunSettings
    progress: Progress
    judging: _Judging

    def variant(self, candidate: Candidate, name: str | None = None) -> PromptVariant:
        """The candidate as a variant, named after its content unless ``name`` is given."""
        assert self.config.optimize is not None
        label = name or candidate_name(self.config.optimize.variant, candidate, self.space)
        return candidate_variant(self.config.control_variant, self.space, candidate, self.splits.train, label)

    async def evaluate(self, candidate: Candidate) -> float | None:
        """The candidate's mean primary metric on the search split (None when nothing could be scored)."""
        variant = self.variant(candidate)
        config = self.config.model_copy(update={"variants": [variant], "early_stopping": None})
        templates = compile_variants([variant])
        planned = plan_requests(config, self.splits.search, templates, self.settings.api, self.model)
        log = RequestLog(self.settings.output_dir / SEARCH_REQUESTS_FILE)
        records = await send_requests(planned, self.client, config.concurrency, log, self.progress)
        judging = dataclasses.replace(self.judging, config=config, templates=templates)  # shares the judgements
        judged = await judging.judge(records)
        table = score_requests(config, self.splits.search, templates, records, judged)
        values = table.row_values(config.primary_metric, variant.name)
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if finite.size else None

    def report(self, outcome: SearchOutcome, found: PromptVariant | None = None) -> OptimizationReport:
        """The search's report for status, so far or final."""
        assert self.config.optimize is not None
        key = None if found is None else OPTIMIZED_VARIANT_FILE
        return optimization_report(
            self.config.optimize,
            self.config.primary_metric,
            self.splits,
            progress=(self.space, outcome),
            found=found,
            variant_key=key,
        )

    def on_trial(self, outcome: SearchOutcome) -> None:
        """Print the trial's line and tell the listener."""
        trial, best = outcome.trials[-1], outcome.best
        print(
            f"search: trial {trial.number + 1}/{self.config.optimize.trials if self.config.optimize else 0}: "
            f"{_score(trial.score)} (best {_score(best.score)} at trial {best.number}, "
            f"control {_score(outcome.control_score)})",
            file=self.settings.progress_stream,
        )
        if self.settings.on_optimization is not None:
            self.settings.on_optimization(self.report(outcome))


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


async def _search_space(
    config: ExperimentConfig, splits: Splits, client: EndpointClient, model: str, settings: RunSettings
) -> SearchSpace:
    """The candidates' space: the listed wordings, those a model proposes (asked once, then kept), the examples."""
    optimize = config.optimize
    assert optimize is not None
    proposed: list[str] = []
    if optimize.proposals is not None:
        proposed = await propose_instructions(
            client,
            optimize.proposals.model or model,
            config.control_variant,
            splits.train or splits.search,
            count=optimize.proposals.count,
            seed=optimize.seed,
            output_dir=settings.output_dir,
            api=settings.api,
        )
    return SearchSpace.of(optimize, proposed, len(splits.train))


async def _optimize(search_run: _Search) -> tuple[PromptVariant, OptimizationReport, tuple[float | None, ...]]:
    """Search, write the found variant and the trials, return the variant and the search's report."""
    optimize = search_run.config.optimize
    assert optimize is not None
    outcome = await search(
        search_run.space,
        search_run.evaluate,
        trials=optimize.trials,
        seed=optimize.seed,
        maximize=search_run.config.primary_metric not in lower_is_better(search_run.config),
        on_trial=search_run.on_trial,
    )
    found = search_run.variant(outcome.best.candidate, optimize.variant)
    output = search_run.settings.output_dir
    document = found.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    (output / OPTIMIZED_VARIANT_FILE).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    trials = [
        {"trial": t.number, "score": t.score, "instruction": t.candidate.instruction, "examples": t.candidate.examples}
        for t in outcome.trials
    ]
    instructions = list(search_run.space.instructions)
    (output / SEARCH_FILE).write_text(json.dumps({"instructions": instructions, "trials": trials}, indent=2) + "\n")
    report = search_run.report(outcome, found)
    if search_run.settings.on_optimization is not None:
        search_run.settings.on_optimization(report)
    return found, report, tuple(t.score for t in outcome.trials)


def _planned_total(config: ExperimentConfig, rows: int, splits: Splits | None) -> int:
    """Requests the whole run plans: the search's trials, then every variant on the rows it is tested on."""
    if splits is None or config.optimize is None:
        return len(config.variants) * rows * config.samples
    search_requests = config.optimize.trials * len(splits.search) * config.samples
    return search_requests + (len(config.variants) + 1) * len(splits.held_out) * config.samples


async def run_experiment(
    config: ExperimentConfig, rows: Sequence[DatasetRow], settings: RunSettings
) -> ExperimentResult:
    """Run ``config`` over ``rows`` against ``settings.endpoint``; write and return the result.

    With ``config.optimize`` the rows are split, a prompt is searched on the search split, and the
    variants (the one found added) are compared on the held-out rows.
    """
    templates = compile_variants(config.variants)
    check_scorers(config.scorers)
    check_references(rows, config.scorers)
    splits = None if config.optimize is None else split_rows(rows, config.optimize)
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
    optimization: OptimizationReport | None = None
    search_scores: tuple[float | None, ...] = ()
    async with EndpointClient(client_settings) as client, contextlib.AsyncExitStack() as stack:
        model = await _model_name(client, settings.model, config)
        judges = await _open_judges(config, settings, stack)
        progress = Progress(
            total=_planned_total(config, len(rows), splits),
            output_dir=settings.output_dir,
            stream=settings.progress_stream,
            listener=settings.on_progress,
        )
        stream = settings.progress_stream
        if splits is not None:
            search_log = JudgementLog(settings.output_dir / SEARCH_JUDGEMENTS_FILE)
            search_judging = _Judging(judges, config, splits.search, templates, search_log, stream, search_log.load())
            space = await _search_space(config, splits, client, model, settings)
            search_run = _Search(config, splits, space, client, model, settings, progress, search_judging)
            found, optimization, search_scores = await _optimize(search_run)
            config = config.model_copy(update={"variants": [*config.variants, found]})
            templates = compile_variants(config.variants)
            rows = splits.held_out
        planned = plan_requests(config, rows, templates, settings.api, model)
        log = RequestLog(settings.output_dir / REQUESTS_FILE)
        judgement_log = JudgementLog(settings.output_dir / JUDGEMENTS_FILE)
        judging = _Judging(judges, config, rows, templates, judgement_log, stream, judgement_log.load())
        sent = _Sender(config, rows, templates, planned, client, log, progress, judging)
        records, used, sequential = await sent.all() if config.early_stopping is None else await sent.in_looks()
    failures = [record for record in records.values() if record.failed]
    if len(failures) == len(records):
        raise ExperimentError(f"every request failed; the first: {failures[0].error}")
    table = score_requests(config, rows[:used], templates, records, sent.judged)
    reports = judging.reports(sent.judged, used)
    result = analyse(config, table, records, progress.snapshot(), sequential, judges=reports)
    result = result.model_copy(update={"optimization": optimization})
    write_result(result, settings.output_dir)
    context = ReportContext(
        name=settings.name, endpoint=settings.endpoint, api=settings.api, rows=len(rows), search_scores=search_scores
    )
    write_report(config, result, context, settings.output_dir)
    return result
