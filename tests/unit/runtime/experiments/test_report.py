"""Scores to the status payload, and the report files."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubellm.contract.experiments import ExperimentConfig, ExperimentProgress
from kubellm.runtime.experiments.report import (
    ReportContext,
    answer_notes,
    power_note,
    variant_table,
    write_chart,
    write_report,
    write_result,
)
from kubellm.runtime.experiments.results import ExperimentResult, analyse, score_requests
from kubellm.runtime.experiments.runner import RequestKey, RequestRecord
from kubellm.runtime.experiments.templates import compile_variants

ROWS = 30


def _config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "variants": [
                {"name": "plain", "template": "{{ input }}"},
                {"name": "reasoned", "style": "chainOfThought", "template": "Think. {{ input }}"},
            ],
            "dataset": {"rows": [{"input": f"q{i}", "expected": str(i)} for i in range(ROWS)]},
            "scorers": [
                {"name": "exact", "type": "exact", "weight": "1"},
                {"name": "latency", "type": "latency", "weight": "0"},
            ],
            "samples": 2,
        }
    )


def _records(config: ExperimentConfig) -> dict[RequestKey, RequestRecord]:
    records = {}
    for row in range(ROWS):
        for sample in range(2):
            plain = RequestRecord(variant="plain", row=row, sample=sample, fingerprint="f", latency_seconds=0.2)
            plain = plain.model_copy(update={"output": str(row) if row % 3 == 0 else "?"})
            if row == 1 and sample == 0:
                plain = plain.model_copy(update={"output": None, "error": "HTTP 503: busy", "latency_seconds": None})
            reasoned = RequestRecord(
                variant="reasoned",
                row=row,
                sample=sample,
                fingerprint="f",
                output=f"hmm\nAnswer: {row}",
                latency_seconds=0.4,
                prompt_tokens=5,
                completion_tokens=3,
            )
            records[plain.key], records[reasoned.key] = plain, reasoned
    return records


def _result(config: ExperimentConfig) -> ExperimentResult:
    records = _records(config)
    table = score_requests(config, config.dataset.rows or [], compile_variants(config.variants), records)
    return analyse(config, table, records, ExperimentProgress(completed=120, total=120, percent=100))


def test_scores_are_shaped_variants_rows_samples_and_row_means_skip_missing() -> None:
    config = _config()
    table = score_requests(config, config.dataset.rows or [], compile_variants(config.variants), _records(config))
    assert table.metrics["exact"].shape == (2, ROWS, 2)
    assert table.row_values("exact", "reasoned").tolist() == [1.0] * ROWS  # answer extracted from the reasoning
    latency = table.row_values("latency", "plain")
    assert latency[1] == pytest.approx(0.2)  # one sample failed: the other one counts
    assert np.all(table.metrics["score"] == table.metrics["exact"])  # latency weighs 0


def test_the_status_payload() -> None:
    result = _result(_config())
    assert result.winner == "reasoned" and result.summary is not None
    plain, reasoned = result.results
    assert (plain.samples, plain.errors, plain.prompt_tokens) == (60, 1, None)
    assert (reasoned.errors, reasoned.prompt_tokens, reasoned.completion_tokens) == (0, 300, 180)
    assert [m.name for m in plain.metrics] == ["score", "exact", "latency"]
    assert reasoned.latency_p50_seconds == pytest.approx(0.4)
    [comparison] = result.comparisons
    assert comparison.variant == "reasoned" and comparison.control == "plain" and comparison.test == "mcnemar-mid-p"
    assert comparison.significant and comparison.ci_low is not None and comparison.ci_low > 0


def test_power_is_reported_only_when_the_spec_asks_and_against_the_corrected_alpha() -> None:
    assert _result(_config()).power is None
    small = _config().model_copy(update={"min_detectable_effect": "0.05"})
    power = _result(small).power
    assert power is not None and power.rows == ROWS and power.rows_needed is not None
    assert power.underpowered and power.rows_needed > ROWS
    large = _result(_config().model_copy(update={"min_detectable_effect": "0.9"})).power
    assert large is not None and large.rows_needed is not None and not large.underpowered
    assert large.rows_needed <= ROWS
    notes = power_note(small, _result(small))
    assert (
        notes is not None
        and notes.startswith(f"power: {ROWS} rows, {power.rows_needed} needed")
        and "underpowered" in notes
    )


def test_files(tmp_path: Path) -> None:
    config = _config()
    result = _result(config)
    payload = json.loads(write_result(result, tmp_path).read_text())
    assert set(payload) == {"progress", "results", "comparisons", "winner", "summary"}
    assert payload["comparisons"][0]["adjustedPValue"] < 0.05
    report = write_report(config, result, ReportContext("demo", "http://llm/v1", "chat", ROWS), tmp_path)
    text = report.read_text()
    assert "| reasoned (winner) | chainOfThought | 1 [" in text
    assert "| plain | zeroShot |" in text and "| 98% |" in text  # 59 of 60 answers
    assert "![score per variant](scores.png)" in text
    assert (tmp_path / "scores.png").stat().st_size > 1000
    for metric in ("exact", "latency"):  # a chart per metric, each in the report
        assert f"![{metric} per variant](scores-{metric}.png)" in text
        assert (tmp_path / f"scores-{metric}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_chart_is_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert write_chart(_config(), _result(_config()), tmp_path / "scores.png") is False


def _counted_config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "variants": [
                {"name": "plain", "template": "{{ input }}"},
                {"name": "reasoned", "style": "chainOfThought", "template": "Think. {{ input }}", "maxTokens": 8},
            ],
            "dataset": {"rows": [{"input": f"q{i}", "expected": str(i)} for i in range(4)]},
            "scorers": [{"name": "contains", "type": "contains"}],
        }
    )


def _counted_records() -> dict[RequestKey, RequestRecord]:
    """plain: no finish reason from the server; reasoned: two answers cut off, one of them with no answer line."""
    outputs = [("Answer: 0", "stop"), ("Answer: 1 because", "length"), ("I think the", "length"), ("nothing", "stop")]
    records = {}
    for row, (output, reason) in enumerate(outputs):
        plain = RequestRecord(variant="plain", row=row, sample=0, fingerprint="f", output=str(row))
        reasoned = RequestRecord(
            variant="reasoned", row=row, sample=0, fingerprint="f", output=output, finish_reason=reason
        )
        records[plain.key], records[reasoned.key] = plain, reasoned
    failed = RequestRecord(variant="reasoned", row=3, sample=0, fingerprint="f", error="HTTP 500: boom")
    records[failed.key] = failed  # a failed request is neither cut off nor unextracted
    return records


def test_answers_cut_off_or_without_an_answer_are_counted_not_silent(tmp_path: Path) -> None:
    config = _counted_config()
    records = _counted_records()
    table = score_requests(config, config.dataset.rows or [], compile_variants(config.variants), records)
    assert table.unextracted == {"reasoned": 1}
    assert table.row_values("contains", "reasoned").tolist() == [1.0, 1.0, 0.0, 0.0]
    result = analyse(config, table, records, ExperimentProgress(completed=8, total=8, percent=100))
    plain, reasoned = result.results
    assert (plain.cut_off, plain.unextracted) == (None, None)  # unknown, and nothing to extract
    assert (reasoned.cut_off, reasoned.unextracted) == (2, 1)
    payload = json.loads(write_result(result, tmp_path).read_text())
    assert payload["results"][1]["cutOff"] == 2 and payload["results"][1]["unextracted"] == 1
    assert "| plain | zeroShot | 1 [" in variant_table(config, result)
    row = next(line for line in variant_table(config, result).splitlines() if line.startswith("| reasoned"))
    assert row.split(" | ")[4:8] == ["4", "75%", "2", "1"]  # answers, success, cut off, no answer
    notes = answer_notes(config, result)
    assert notes[0].startswith("reasoned: 2 of 3 answers were cut off at the token limit (8 tokens)")
    assert "raise its maxTokens" in notes[0]
    assert notes[1] == (
        "reasoned: no answer in 1 of 3 answers (no final 'Answer:' line found); they score as empty answers"
    )
    text = write_report(config, result, ReportContext("demo", "http://llm/v1", "chat", 4), tmp_path).read_text()
    assert "| cut off | no answer |" in text and f"- {notes[0]}" in text
