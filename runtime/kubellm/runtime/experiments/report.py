"""The experiment's artifacts: ``result.json`` (the status payload) and a human report.

``report.md`` holds the verdict, a per-variant table (means with intervals, success rate, answers
cut off by the token limit, answers without an extractable answer, latency, tokens), notes on
those counts, the comparisons with the control and how the numbers were computed;
``scores.png`` charts the primary metric with its interval per variant, and ``scores-<metric>.png``
each other metric, when matplotlib is installed (it is optional: without it the report says so
and everything else is written). A run with judge scorers adds a section per judge: failed
judgements, the mean grade with the reference shown first and last (position bias), and each
variant's mean answer length beside its grade with the length-grade correlation (verbosity bias).
A run with a prompt search adds its section (splits, trials, the control's and the best
candidate's scores on the search split, the variant found) and ``search.png``: each trial's
score with the best so far and the control's line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubellm.contract.experiments import ExperimentConfig, MetricSummary, VariantComparison, VariantResult

from .judge import STRONG_CORRELATION, JudgeReport
from .results import ExperimentResult, lower_is_better

__all__ = [
    "CHART_FILE",
    "REPORT_FILE",
    "RESULT_FILE",
    "SEARCH_CHART_FILE",
    "ReportContext",
    "answer_notes",
    "chart_files",
    "comparison_table",
    "judge_notes",
    "judge_section",
    "search_section",
    "variant_table",
    "write_chart",
    "write_report",
    "write_result",
    "write_search_chart",
]

RESULT_FILE = "result.json"
REPORT_FILE = "report.md"
CHART_FILE = "scores.png"
SEARCH_CHART_FILE = "search.png"


@dataclass(frozen=True)
class ReportContext:
    """What the report says about the run besides the result."""

    name: str
    endpoint: str
    api: str
    rows: int
    search_scores: tuple[float | None, ...] = ()
    """With a prompt search: each trial's score on the search split, in order."""


def write_result(result: ExperimentResult, output_dir: Path) -> Path:
    """Write ``result.json``: the status payload, camelCase."""
    path = output_dir / RESULT_FILE
    path.write_text(result.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n", encoding="utf-8")
    return path


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _with_interval(summary: MetricSummary | None) -> str:
    if summary is None:
        return "-"
    if summary.ci_low is None or summary.ci_high is None:
        return _number(summary.mean)
    return f"{_number(summary.mean)} [{_number(summary.ci_low)}, {_number(summary.ci_high)}]"


def _metric(result: VariantResult, name: str) -> MetricSummary | None:
    return next((metric for metric in result.metrics if metric.name == name), None)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _success(result: VariantResult) -> str:
    if result.samples == 0:
        return "-"
    return f"{100 * (result.samples - result.errors) / result.samples:.0f}%"


def variant_table(config: ExperimentConfig, result: ExperimentResult) -> str:
    """A Markdown table: one line per variant, primary metric first, intervals in brackets."""
    primary = config.primary_metric
    others = [s.name for s in config.scorers if s.name != primary]
    if primary != "score":
        others.insert(0, "score")
    head = [
        *("variant", "style", f"{primary} (CI)", *others),
        *("answers", "success", "cut off", "no answer", "p50 s", "tokens out"),
    ]
    styles = {variant.name: variant.style for variant in config.variants}
    lines = [_row(head), _row(["---"] * len(head))]
    for item in result.results:
        mark = " (winner)" if item.name == result.winner else ""
        cells = [f"{item.name}{mark}", styles.get(item.name, "-"), _with_interval(_metric(item, primary))]
        cells += [_number(m.mean) if (m := _metric(item, name)) else "-" for name in others]
        cells += [str(item.samples), _success(item), _count(item.cut_off), _count(item.unextracted)]
        cells.append(_number(item.latency_p50_seconds))
        cells.append("-" if item.completion_tokens is None else str(item.completion_tokens))
        lines.append(_row(cells))
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def answer_notes(config: ExperimentConfig, result: ExperimentResult) -> list[str]:
    """One line per variant with answers cut off or without an extractable answer: why they scored low."""
    variants = {variant.name: variant for variant in config.variants}
    notes = []
    for item in result.results:
        variant = variants.get(item.name)
        if variant is None:
            continue
        answered = item.samples - item.errors
        if item.cut_off:
            limit, own = variant.max_tokens or config.generation.max_tokens, variant.max_tokens is not None
            notes.append(
                f"{item.name}: {item.cut_off} of {answered} answers were cut off at the token limit ({limit} "
                f"tokens) and may lack their final answer; raise {'its ' if own else 'generation.'}maxTokens "
                "or ask for a shorter answer"
            )
        if item.unextracted:
            looked_for = "its extract pattern found nothing" if variant.extract else "no final 'Answer:' line found"
            notes.append(
                f"{item.name}: no answer in {item.unextracted} of {answered} answers ({looked_for}); "
                "they score as empty answers"
            )
    return notes


def _comparison_cells(comparison: VariantComparison) -> list[str]:
    interval = (
        "-"
        if comparison.ci_low is None or comparison.ci_high is None
        else f"[{comparison.ci_low:+.3g}, {comparison.ci_high:+.3g}]"
    )
    return [
        f"{comparison.variant} vs {comparison.control}",
        f"{comparison.difference:+.3g}",
        interval,
        _number(comparison.p_value),
        _number(comparison.adjusted_p_value),
        "yes" if comparison.significant else "no",
    ]


def comparison_table(result: ExperimentResult) -> str:
    """A Markdown table of the comparisons with the control."""
    head = ["comparison", "difference", "CI", "p", "adjusted p", "significant"]
    lines = [_row(head), _row(["---"] * len(head))]
    lines += [_row(_comparison_cells(comparison)) for comparison in result.comparisons]
    return "\n".join(lines)


POSITION_ALPHA = 0.05
"""The report points out a gap between the reference-first and reference-last grades significant at this level."""


def judge_notes(result: ExperimentResult) -> list[str]:
    """One line per judge problem worth a look: failed judgements, a position gap, a strong length correlation."""
    notes = []
    for judge in result.judges or []:
        if judge.failed:
            notes.append(
                f"{judge.scorer}: {judge.failed} failed judgements (no grade after one retry, or the judge's server "
                "failed) are left out of its means"
            )
        first, last, p_value = judge.mean_grade_reference_first, judge.mean_grade_reference_last, judge.position_p_value
        if p_value is not None and p_value < POSITION_ALPHA:
            notes.append(
                f"{judge.scorer}: answers shown before the reference got {_number(last)} on average, after it "
                f"{_number(first)} (p={_number(p_value)}): the judge favours a position"
            )
        rho = judge.length_grade_correlation
        if rho is not None and abs(rho) >= STRONG_CORRELATION:
            direction = "longer" if rho > 0 else "shorter"
            notes.append(
                f"{judge.scorer}: answer length and grade correlate strongly (Spearman {rho:.2f}): the judge may "
                f"favour {direction} answers; compare the variants' lengths before trusting the ranking"
            )
    return notes


def _judge_table(judge: JudgeReport, result: ExperimentResult) -> list[str]:
    head = ["variant", f"{judge.scorer} (0-1)", f"mean grade (1-{judge.scale})", "mean answer length (chars)", "graded"]
    lines = [_row(head), _row(["---"] * len(head))]
    scores = {item.name: _metric(item, judge.scorer) for item in result.results}
    for variant in judge.variants:
        summary = scores.get(variant.variant)
        score = _number(summary.mean) if summary is not None else "-"
        cells = [variant.variant, score, _number(variant.mean_grade), _number(variant.mean_answer_chars)]
        lines.append(_row([*cells, str(variant.judged)]))
    return lines


def judge_section(result: ExperimentResult) -> list[str]:
    """The report's lines on the judge scorers (none without one)."""
    if not result.judges:
        return []
    lines = ["## Judges", ""]
    for judge in result.judges:
        first, last = judge.mean_grade_reference_first, judge.mean_grade_reference_last
        rho = judge.length_grade_correlation
        lines += [
            f"### {judge.scorer}",
            "",
            f"- {judge.judged} answers graded 1-{judge.scale}; {judge.failed} failed judgements (left out)",
            f"- position: mean grade {_number(first)} with the reference before the answer, {_number(last)} with it "
            f"after (p={_number(judge.position_p_value)}; the order is drawn per row, the same for every variant)",
            f"- verbosity: Spearman correlation of answer length and grade {'-' if rho is None else f'{rho:.2f}'}",
            "",
            *_judge_table(judge, result),
            "",
        ]
    return lines


def chart_files(config: ExperimentConfig, result: ExperimentResult) -> dict[str, str]:
    """Metric -> chart file: ``scores.png`` for the primary metric, ``scores-<metric>.png`` for each other one."""
    metrics = [config.primary_metric, *(m.name for m in (result.results[0].metrics if result.results else []))]
    return {m: CHART_FILE if m == config.primary_metric else f"scores-{m}.png" for m in dict.fromkeys(metrics)}


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend; None without matplotlib (an optional dependency)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return None
    return pyplot


def write_chart(config: ExperimentConfig, result: ExperimentResult, path: Path, metric: str | None = None) -> bool:
    """Chart ``metric`` (the primary one by default) per variant with its interval; False without matplotlib."""
    pyplot = _pyplot()
    if pyplot is None:
        return False
    metric, control = metric or config.primary_metric, config.control or config.variants[0].name
    names, means, below, above = [], [], [], []
    for item in result.results:
        summary = _metric(item, metric)
        if summary is None:
            continue
        names.append(f"{item.name}\n(control)" if item.name == control else item.name)
        means.append(summary.mean)
        below.append(summary.mean - (summary.ci_low if summary.ci_low is not None else summary.mean))
        above.append((summary.ci_high if summary.ci_high is not None else summary.mean) - summary.mean)
    figure, axes = pyplot.subplots(figsize=(1.6 * max(len(names), 2) + 2, 4))
    colours = ["tab:green" if name.split("\n")[0] == result.winner else "tab:blue" for name in names]
    axes.bar(names, means, yerr=[below, above], capsize=6, color=colours)
    axes.set_ylabel(f"{metric} (mean, {100 * (1 - float(config.alpha)):g}% CI)")
    axes.set_title((result.summary or metric) if metric == config.primary_metric else metric, fontsize=8, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True


def write_search_chart(metric: str, scores: Sequence[float | None], path: Path, *, maximize: bool = True) -> bool:
    """Each trial's score on the search split, the best so far and the control's (trial 0); False without matplotlib."""
    pyplot = _pyplot()
    if pyplot is None:
        return False
    trials = [(n, v) for n, v in enumerate(scores) if v is not None and math.isfinite(v)]
    pick = max if maximize else min
    best = [pick(v for n, v in trials if n <= number) for number, _ in trials]
    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.scatter([n for n, _ in trials], [v for _, v in trials], label="trial", color="tab:blue")
    axes.step([n for n, _ in trials], best, where="post", label="best so far", color="tab:green")
    if scores and scores[0] is not None:
        axes.axhline(scores[0], linestyle="--", color="tab:gray", label="control (trial 0)")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{metric} on the search split")
    axes.set_title("prompt search", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True


def search_section(result: ExperimentResult, context: ReportContext, charted: bool) -> list[str]:
    """The prompt search's section of the report; empty without one."""
    found = result.optimization
    if found is None:
        return []
    splits = found.splits
    instruction = f'instruction "{found.instruction}"' if found.instruction else "no instruction"
    lines = [
        "## Prompt search",
        "",
        f"- splits: {splits.train} train (worked examples), {splits.search} search, {splits.held_out} held out; "
        "no row is in two, identical rows share one",
        f"- {found.completed} of {found.trials} trials scored on the search split ({found.metric}): control "
        f"{_number(found.control_score)}, best {_number(found.best_score)} at trial {found.best_trial} (optimistic: "
        "chosen on these rows)",
        f"- found: {found.variant}, {instruction}, {found.examples} worked examples"
        + (f"; the whole variant is in {found.variant_key}" if found.variant_key else ""),
        f"- the variants and comparisons above ran on the {splits.held_out} held-out rows only: that is the "
        "confirmation",
        "",
    ]
    return [*lines, *([f"![prompt search]({SEARCH_CHART_FILE})", ""] if charted else [])]


def power_note(config: ExperimentConfig, result: ExperimentResult) -> str | None:
    """One line on the rows the run had against the rows ``minDetectableEffect`` needs, if the spec asks."""
    power = result.power
    if power is None:
        return None
    effect = f"a difference of {power.min_detectable_effect} on {config.primary_metric}"
    if power.rows_needed is None:
        return f"power: {power.rows} rows; the rows gave no spread to estimate the rows needed for {effect}"
    verdict = "underpowered: a missing winner proves little" if power.underpowered else "enough rows"
    return (
        f"power: {power.rows} rows, {power.rows_needed} needed to detect {effect} with {float(power.power):.0%} "
        f"power ({verdict})"
    )


def _search_requests(config: ExperimentConfig, result: ExperimentResult, context: ReportContext) -> str:
    if result.optimization is None:
        return ""
    tested = len(config.variants) * context.rows * config.samples
    return f" on the held-out rows, after {result.progress.total - tested} requests of the prompt search"


def _bullets(notes: Sequence[str]) -> list[str]:
    return [*(f"- {note}" for note in notes), ""] if notes else []


def _method(config: ExperimentConfig) -> str:
    correction = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "no"}[config.correction]
    return (
        "Each dataset row is one unit: a variant's value on a row is the mean over its samples. "
        f"Means carry {100 * (1 - float(config.alpha)):g}% intervals (Wilson for 0/1 rates, BCa bootstrap "
        "otherwise). Each variant is compared with the control on the rows: McNemar's mid-p test when every "
        "row value is pass/fail, else a paired t-test on the row differences, "
        f"with {correction} correction across the comparisons; a winner is declared only when it is "
        f"significantly best at alpha {config.alpha}. A failed request scores 0 on every quality scorer, "
        "and so does an answer from which the variant's extraction found no answer ('no answer'); "
        "'cut off' counts answers that stopped at the token limit (finish_reason length). "
        "A judge scorer's value is its grade scaled to [0, 1]; a failed judgement has none and is left out. "
        "The sample size was fixed by the spec before the run."
    )


def write_report(config: ExperimentConfig, result: ExperimentResult, context: ReportContext, output_dir: Path) -> Path:
    """Write ``report.md`` (and ``scores.png`` when matplotlib is available)."""
    charts = chart_files(config, result)
    charted = [metric for metric, name in charts.items() if write_chart(config, result, output_dir / name, metric)]
    searched = bool(context.search_scores) and write_search_chart(
        config.primary_metric,
        context.search_scores,
        output_dir / SEARCH_CHART_FILE,
        maximize=config.primary_metric not in lower_is_better(config),
    )
    control = config.control or config.variants[0].name
    lines = [
        f"# Prompt experiment {context.name}",
        "",
        f"**{'Winner: ' + result.winner if result.winner else 'No winner'}** — {result.summary}",
        "",
        f"- endpoint: {context.endpoint} ({context.api} API)",
        f"- {len(config.variants)} variants x {context.rows} rows x {config.samples} samples "
        f"= {len(config.variants) * context.rows * config.samples} requests"
        f"{_search_requests(config, result, context)}; control: {control}",
        f"- primary metric: {config.primary_metric}; alpha {config.alpha}; correction: {config.correction}",
        "",
        "## Variants",
        "",
        variant_table(config, result),
        "",
        *_bullets([*answer_notes(config, result), *judge_notes(result), *filter(None, [power_note(config, result)])]),
        "## Comparisons with the control",
        "",
        comparison_table(result),
        "",
        *judge_section(result),
        *search_section(result, context, searched),
        *([f"![{metric} per variant]({charts[metric]})" for metric in charted] or ["(charts skipped: no matplotlib)"]),
        "",
        "## Method",
        "",
        _method(config),
        "",
    ]
    path = output_dir / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
