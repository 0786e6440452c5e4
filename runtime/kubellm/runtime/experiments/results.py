"""From answered requests to the experiment's result: scores, per-variant summaries, verdict.

The result is the status payload the operator copies into a PromptExperiment's status
(``progress``, ``results``, ``comparisons``, ``winner``, ``summary``), built from the runtime's
report models in :mod:`kubellm.contract`. Besides the scores, each variant counts its
answers that were cut off by the token limit and those in which its extraction found no answer:
both score low for a reason the scores alone do not show. A judge scorer adds its report
(failed judgements, the position and verbosity figures: :class:`~.judge.JudgeReport`) to
``result.json`` and the report; status does not carry it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import Field, StringConstraints

from kubellm.contract.experiments import (
    DatasetRow,
    ExperimentConfig,
    ExperimentProgress,
    MetricSummary,
    OptimizationReport,
    PowerReport,
    SequentialReport,
    VariantComparison,
    VariantResult,
)
from kubellm.contract.schema import Identifier, ReportModel

from .judge import JudgementKey, JudgementRecord, JudgeReport, judge_values
from .runner import RequestKey, RequestRecord
from .scorers import COMBINED_SCORE, Answers, combined_score, score_answers
from .statistics import POWER, Comparison, Verdict, compare_with_control, mean_interval, rows_needed
from .templates import VariantTemplate

__all__ = [
    "ExperimentResult",
    "ScoreTable",
    "analyse",
    "answer_texts",
    "decide",
    "lower_is_better",
    "score_requests",
]

FloatArray = npt.NDArray[np.float64]


class ExperimentResult(ReportModel):
    """What ``result.json`` holds: the PromptExperiment status fields the runtime fills in."""

    progress: ExperimentProgress = Field(description="Requests answered.")
    results: list[VariantResult] = Field(default_factory=list, description="Per-variant metrics with intervals.")
    comparisons: list[VariantComparison] = Field(
        default_factory=list, description="Each variant against the control on the primary metric."
    )
    winner: Identifier | None = Field(default=None, description="The significantly best variant, if any.")
    summary: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="One-line conclusion."
    )
    power: PowerReport | None = Field(default=None, description="Rows needed for spec.minDetectableEffect.")
    sequential: SequentialReport | None = Field(default=None, description="Where a run with early stopping ended.")
    judges: list[JudgeReport] | None = Field(
        default=None, description="Per judge scorer: failed judgements, position and verbosity figures."
    )
    optimization: OptimizationReport | None = Field(
        default=None, description="With optimize: the prompt search; results and comparisons are on held-out rows."
    )


@dataclass(frozen=True)
class ScoreTable:
    """Every metric's value per variant, row and sample: arrays shaped (variants, rows, samples)."""

    variants: tuple[str, ...]
    metrics: Mapping[str, FloatArray]
    lower_is_better: frozenset[str]
    unextracted: Mapping[str, int] = field(default_factory=dict)
    """Per variant with an extraction rule: answered requests in which it found no answer."""

    def row_values(self, metric: str, variant: str) -> FloatArray:
        """Per-row means over the samples (NaN for a row with no value)."""
        values = self.metrics[metric][self.variants.index(variant)]
        present = np.isfinite(values)
        counts = present.sum(axis=1)
        sums = np.where(present, values, 0.0).sum(axis=1)
        means: FloatArray = np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)
        return means


def answer_texts(
    templates: Mapping[str, VariantTemplate], records: Mapping[RequestKey, RequestRecord]
) -> dict[RequestKey, str]:
    """The text the scorers grade, per answered request: the extracted answer, or the whole output."""
    texts = {key: templates[key.variant].answer(record.output or "") for key, record in records.items()}
    return {key: text or "" for key, text in texts.items() if not records[key].failed}


def lower_is_better(config: ExperimentConfig) -> frozenset[str]:
    """The metrics where less is better: the latency scorers'."""
    return frozenset(scorer.name for scorer in config.scorers if scorer.type == "latency")


def score_requests(
    config: ExperimentConfig,
    rows: Sequence[DatasetRow],
    templates: Mapping[str, VariantTemplate],
    records: Mapping[RequestKey, RequestRecord],
    judgements: Mapping[JudgementKey, JudgementRecord] | None = None,
) -> ScoreTable:
    """Grade every answer with every scorer, plus the weighted ``score``; judge scorers read ``judgements``."""
    names = tuple(variant.name for variant in config.variants)
    keys = [RequestKey(v, r, s) for v in names for r in range(len(rows)) for s in range(config.samples)]
    chosen = [records[key] for key in keys]
    extracted = [templates[key.variant].answer(record.output or "") for key, record in zip(keys, chosen, strict=True)]
    judges = [scorer for scorer in config.scorers if scorer.type == "judge"]
    answers = Answers(
        texts=[text or "" for text in extracted],
        references=[rows[key.row].expected for key in keys],
        latencies=[None if record.failed else record.latency_seconds for record in chosen],
        failed=[record.failed for record in chosen],
        judged={scorer.name: judge_values(scorer, keys, judgements or {}) for scorer in judges},
    )
    shape = (len(names), len(rows), config.samples)
    columns = {scorer.name: score_answers(scorer, answers) for scorer in config.scorers}
    metrics = {name: column.reshape(shape) for name, column in columns.items()}
    metrics[COMBINED_SCORE] = combined_score(columns, config.scorers).reshape(shape)
    found = zip(keys, chosen, extracted, strict=True)
    missing = [key.variant for key, record, text in found if not record.failed and text is None]
    unextracted = {name: missing.count(name) for name in names if templates[name].extract is not None}
    return ScoreTable(variants=names, metrics=metrics, lower_is_better=lower_is_better(config), unextracted=unextracted)


def _summary(name: str, values: FloatArray, alpha: float) -> MetricSummary | None:
    interval = mean_interval(values, confidence=1.0 - alpha)
    if interval.n == 0:
        return None
    return MetricSummary(name=name, mean=interval.mean, ci_low=interval.low, ci_high=interval.high)


def _token_total(records: Sequence[RequestRecord], name: str) -> int | None:
    counts = [getattr(record, name) for record in records if getattr(record, name) is not None]
    return int(sum(counts)) if counts else None


def _cut_off(records: Sequence[RequestRecord]) -> int | None:
    """Answers that stopped at the token limit; None when the server gave no finish reason at all."""
    reasons = [record.finish_reason for record in records if not record.failed]
    if all(reason is None for reason in reasons):
        return None
    return sum(reason == "length" for reason in reasons)


def _variant_result(table: ScoreTable, variant: str, records: Sequence[RequestRecord], alpha: float) -> VariantResult:
    metric_names = [COMBINED_SCORE, *(name for name in table.metrics if name != COMBINED_SCORE)]
    summaries = [_summary(name, table.row_values(name, variant), alpha) for name in metric_names]
    latencies = [r.latency_seconds for r in records if not r.failed and r.latency_seconds is not None]
    return VariantResult(
        name=variant,
        samples=len(records),
        errors=sum(record.failed for record in records),
        metrics=[summary for summary in summaries if summary is not None],
        latency_p50_seconds=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95_seconds=float(np.percentile(latencies, 95)) if latencies else None,
        prompt_tokens=_token_total(records, "prompt_tokens"),
        completion_tokens=_token_total(records, "completion_tokens"),
        cut_off=_cut_off(records),
        unextracted=table.unextracted.get(variant),
    )


def _comparison(comparison: Comparison) -> VariantComparison:
    test = comparison.test
    return VariantComparison(
        variant=comparison.variant,
        control=comparison.control,
        metric=comparison.metric,
        difference=test.difference if np.isfinite(test.difference) else 0.0,
        ci_low=test.low,
        ci_high=test.high,
        p_value=test.p_value,
        adjusted_p_value=comparison.adjusted_p_value,
        significant=comparison.significant,
        test=test.name,
    )


def decide(config: ExperimentConfig, table: ScoreTable, level: float | None = None) -> Verdict:
    """Compare every variant with the control on the primary metric, at ``level`` (default: alpha)."""
    metric = config.primary_metric
    values = {variant: table.row_values(metric, variant) for variant in table.variants}
    return compare_with_control(
        values,
        control=config.control or table.variants[0],
        metric=metric,
        alpha=float(Decimal(config.alpha)) if level is None else level,
        correction=config.correction,
        lower_is_better=metric in table.lower_is_better,
    )


def power_report(config: ExperimentConfig, table: ScoreTable) -> PowerReport | None:
    """Rows needed to detect ``minDetectableEffect`` on the primary metric, per comparison at its corrected alpha."""
    if config.min_detectable_effect is None:
        return None
    metric, control = config.primary_metric, config.control or table.variants[0]
    others = [name for name in table.variants if name != control]
    alpha = float(Decimal(config.alpha)) / (1 if config.correction == "none" else max(len(others), 1))
    effect = float(Decimal(config.min_detectable_effect))
    reference = table.row_values(metric, control)
    needed, rows = [], []
    for name in others:
        differences = table.row_values(metric, name) - reference
        rows.append(int(np.sum(np.isfinite(differences))))
        needed.append(rows_needed(differences, effect, alpha))
    known = [n for n in needed if n is not None]
    most, fewest = (max(known) if known else None), (min(rows) if rows else 0)
    return PowerReport(
        min_detectable_effect=config.min_detectable_effect,
        power=f"{POWER:g}",
        rows=fewest,
        rows_needed=most,
        underpowered=most is not None and fewest < most,
    )


def analyse(
    config: ExperimentConfig,
    table: ScoreTable,
    records: Mapping[RequestKey, RequestRecord],
    progress: ExperimentProgress,
    sequential: SequentialReport | None = None,
    *,
    judges: Sequence[JudgeReport] = (),
) -> ExperimentResult:
    """The status payload: per-variant summaries, comparisons with the control and the verdict.

    With ``sequential`` (a run with early stopping), the verdict is at the level of the look the
    run ended at, and the summary says where it stopped. ``judges`` are the judge scorers' reports.
    """
    alpha = float(Decimal(config.alpha))
    by_variant: dict[str, list[RequestRecord]] = {name: [] for name in table.variants}
    for record in records.values():
        by_variant[record.variant].append(record)
    verdict = decide(config, table, None if sequential is None else float(sequential.level))
    summary = verdict.summary if sequential is None else f"{_stopped(sequential)}{verdict.summary}"
    return ExperimentResult(
        power=power_report(config, table),
        sequential=sequential,
        judges=list(judges) or None,
        progress=progress,
        results=[_variant_result(table, name, by_variant[name], alpha) for name in table.variants],
        comparisons=[_comparison(item) for item in verdict.comparisons],
        winner=verdict.winner,
        summary=summary[:1024],
    )


def _stopped(sequential: SequentialReport) -> str:
    where = f"look {sequential.look} of {sequential.looks}, {sequential.rows} rows, level {sequential.level}"
    return f"stopped early ({where}): " if sequential.stopped_early else f"({where}) "
