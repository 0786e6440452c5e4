"""Data quality: what is in the dataset, what the filters drop, and whether enough is left.

The checks run in two passes. :func:`filter_examples` works on characters, before
tokenization: it counts empty rows (blank or whitespace only), rows shorter than ``minChars``,
longer than ``maxChars`` and exact duplicates of an earlier row, drops them (duplicates only
with ``dropDuplicates``), then keeps at most ``dataset.maxRows`` rows. :func:`add_token_stats`
adds the token lengths once the kept rows are tokenized: how many exceed ``maxSeqLength`` (and
are truncated) and how many lost every trained token to truncation (dropped).
:func:`conclude` then decides: at least ``minRows`` rows must remain, and the filters may drop
at most ``maxDroppedPercent`` of the rows read (the ``maxRows`` cap does not count as dropping).

Categories overlap where they should: a duplicate that is also too long counts in both.
Lengths (``meanChars``...) describe the rows kept.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from kubellm.contract.training import DataQualityConfig, DataQualityReport
from kubellm.runtime.training.data import Example

__all__ = ["DataQualityDetails", "QualityResult", "add_token_stats", "conclude", "filter_examples"]

Count = Annotated[int, Field(ge=0)]


class DataQualityDetails(DataQualityReport):
    """The status report plus what only the output folder has room for."""

    min_chars: Count | None = Field(default=None, description="Shortest row in characters, after filtering.")
    mean_tokens: float | None = Field(default=None, description="Mean row length in tokens, after filtering.")
    min_tokens: Count | None = Field(default=None, description="Shortest row in tokens, after filtering.")
    max_tokens: Count | None = Field(default=None, description="Longest row in tokens, after filtering.")
    truncated: Count = Field(default=0, description="Rows longer than maxSeqLength tokens, cut to it.")
    no_trained_tokens: Count = Field(default=0, description="Rows dropped: truncation left no response token.")
    over_max_rows: Count = Field(default=0, description="Rows left out by dataset.maxRows.")
    dropped_percent: float = Field(default=0.0, description="Percent of the rows read that the filters dropped.")

    def summary(self) -> DataQualityReport:
        """The part that goes into the FineTuneJob's status."""
        return DataQualityReport.model_validate(self.model_dump(include=set(DataQualityReport.model_fields)))


@dataclass
class QualityResult:
    """The rows kept and the report so far."""

    kept: list[Example]
    report: DataQualityDetails


@dataclass
class _Verdict:
    empty: bool = False
    too_short: bool = False
    too_long: bool = False
    duplicate: bool = False


def _judge(examples: Sequence[Example], config: DataQualityConfig) -> list[_Verdict]:
    seen: set[tuple[str, str]] = set()
    verdicts = []
    for example in examples:
        length = len(example.text)
        key = (example.prompt, example.completion)
        empty = not example.text.strip()
        verdicts.append(
            _Verdict(
                empty=empty,
                too_short=not empty and length < config.min_chars,
                too_long=config.max_chars is not None and length > config.max_chars,
                duplicate=not empty and key in seen,
            )
        )
        seen.add(key)
    return verdicts


def _dropped(verdict: _Verdict, config: DataQualityConfig) -> bool:
    if not config.enabled:
        return verdict.empty
    return verdict.empty or verdict.too_short or verdict.too_long or (verdict.duplicate and config.drop_duplicates)


def filter_examples(examples: Sequence[Example], config: DataQualityConfig, max_rows: int | None) -> QualityResult:
    """Count, filter and cap the rows; empty rows are always dropped (nothing to train on)."""
    verdicts = _judge(examples, config)
    passing = [example for example, verdict in zip(examples, verdicts, strict=True) if not _dropped(verdict, config)]
    kept = passing if max_rows is None else passing[:max_rows]
    lengths = [len(example.text) for example in kept]
    report = DataQualityDetails(
        passed=True,
        rows=len(examples),
        kept=len(kept),
        duplicates=sum(v.duplicate for v in verdicts),
        empty=sum(v.empty for v in verdicts),
        too_short=sum(v.too_short for v in verdicts),
        too_long=sum(v.too_long for v in verdicts),
        mean_chars=round(statistics.fmean(lengths), 2) if lengths else None,
        min_chars=min(lengths, default=None),
        max_chars=max(lengths, default=None),
        over_max_rows=len(passing) - len(kept),
        dropped_percent=_percent(len(examples) - len(passing), len(examples)),
    )
    return QualityResult(kept=kept, report=report)


def add_token_stats(
    report: DataQualityDetails, token_lengths: Sequence[int], max_length: int, no_trained_tokens: int
) -> DataQualityDetails:
    """The report with token lengths (before truncation) of the rows that remain."""
    kept = report.kept - no_trained_tokens
    return report.model_copy(
        update={
            "kept": kept,
            "mean_tokens": round(statistics.fmean(token_lengths), 2) if token_lengths else None,
            "min_tokens": min(token_lengths, default=None),
            "max_tokens": max(token_lengths, default=None),
            "truncated": sum(length > max_length for length in token_lengths),
            "no_trained_tokens": no_trained_tokens,
            "dropped_percent": _percent(report.rows - kept - report.over_max_rows, report.rows),
        }
    )


def conclude(report: DataQualityDetails, config: DataQualityConfig) -> DataQualityDetails:
    """Pass or fail the data against ``minRows`` and ``maxDroppedPercent``, with the reason."""
    problems = []
    if report.kept < config.min_rows:
        problems.append(f"{report.kept} rows left after filtering, fewer than minRows {config.min_rows}")
    if config.enabled and report.dropped_percent > config.max_dropped_percent:
        problems.append(
            f"the filters dropped {report.dropped_percent:g}% of the rows, more than maxDroppedPercent "
            f"{config.max_dropped_percent} ({_breakdown(report)})"
        )
    message = "; ".join(problems) or None
    return report.model_copy(update={"passed": not problems, "message": message})


def _breakdown(report: DataQualityDetails) -> str:
    parts = {
        "empty": report.empty,
        "too short": report.too_short,
        "too long": report.too_long,
        "duplicates": report.duplicates,
        "no response left after truncation": report.no_trained_tokens,
    }
    return ", ".join(f"{count} {name}" for name, count in parts.items() if count) or "nothing in particular"


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0
