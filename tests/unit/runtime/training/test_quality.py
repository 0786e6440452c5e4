"""Data quality numbers on a crafted dataset: duplicates, empty rows, too short, too long, truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubellm.contract.training import DataQualityConfig, DatasetConfig
from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training.data import Example, load_examples
from kubellm.runtime.training.encoding import encode_all
from kubellm.runtime.training.quality import add_token_stats, conclude, filter_examples

TOKENIZER = build_byte_tokenizer()

# 12 rows read: 2 blank lines + 1 whitespace-only text (empty), 1 too short ("hi" < 4 chars),
# 1 too long (> 60 chars), 3 duplicates (two copies of "a tidy little row" and one of "another
# row here"), 5 distinct usable rows ("a tidy little row", "another row here", "third one",
# "fourth", "the fifth row").
CRAFTED = [
    '{"text": "a tidy little row"}',
    "",
    '{"text": "another row here"}',
    '{"text": "a tidy little row"}',
    '{"text": "hi"}',
    '{"text": "   "}',
    '{"text": "' + "x" * 80 + '"}',
    '{"text": "third one"}',
    "",
    '{"text": "another row here"}',
    '{"text": "a tidy little row"}',
    '{"text": "fourth"}',
    '{"text": "the fifth row"}',
]


@pytest.fixture
def examples(tmp_path: Path) -> list[Example]:
    path = tmp_path / "crafted.jsonl"
    path.write_text("\n".join(CRAFTED) + "\n")
    return load_examples(DatasetConfig(uri=f"file://{path}", text_field="text"), TOKENIZER)


def test_counts_and_filters_on_the_crafted_dataset(examples: list[Example]) -> None:
    config = DataQualityConfig(min_chars=4, max_chars=60, drop_duplicates=True)
    result = filter_examples(examples, config, max_rows=None)
    report = result.report
    assert (report.rows, report.empty, report.too_short, report.too_long, report.duplicates) == (13, 3, 1, 1, 3)
    assert [e.text for e in result.kept] == [
        "a tidy little row",
        "another row here",
        "third one",
        "fourth",
        "the fifth row",
    ]
    assert report.kept == 5
    assert (report.min_chars, report.max_chars) == (6, 17)
    assert report.mean_chars == pytest.approx((17 + 16 + 9 + 6 + 13) / 5)
    assert report.dropped_percent == pytest.approx(100 * 8 / 13, abs=0.01)


def test_duplicates_are_counted_but_kept_without_drop_duplicates(examples: list[Example]) -> None:
    result = filter_examples(examples, DataQualityConfig(min_chars=4, max_chars=60, drop_duplicates=False), None)
    assert result.report.duplicates == 3
    assert result.report.kept == 8


def test_max_rows_caps_without_counting_as_dropped(examples: list[Example]) -> None:
    result = filter_examples(examples, DataQualityConfig(min_chars=4, max_chars=60), max_rows=2)
    assert [e.text for e in result.kept] == ["a tidy little row", "another row here"]
    assert result.report.over_max_rows == 3
    assert result.report.dropped_percent == pytest.approx(100 * 8 / 13, abs=0.01)


def test_disabled_checks_only_drop_empty_rows(examples: list[Example]) -> None:
    result = filter_examples(examples, DataQualityConfig(enabled=False, max_chars=60), None)
    assert result.report.kept == 10
    assert result.report.too_long == 1  # still reported


def test_token_stats_and_truncation(examples: list[Example]) -> None:
    config = DataQualityConfig(min_chars=1, max_chars=None, drop_duplicates=True)
    result = filter_examples(examples, config, None)
    encoded = encode_all(result.kept, TOKENIZER, max_length=8)
    report = add_token_stats(result.report, encoded.lengths, 8, encoded.no_trained_tokens)
    lengths = [len(TOKENIZER(e.text)["input_ids"]) + 1 for e in result.kept]  # + EOS
    assert (report.min_tokens, report.max_tokens) == (min(lengths), max(lengths))
    assert report.truncated == sum(length > 8 for length in lengths) > 0
    assert report.mean_tokens == pytest.approx(sum(lengths) / len(lengths), abs=0.01)


def test_conclusion_passes_or_says_why(examples: list[Example]) -> None:
    result = filter_examples(examples, DataQualityConfig(min_chars=4, max_chars=60), None)
    assert conclude(result.report, DataQualityConfig(min_chars=4, max_chars=60, max_dropped_percent=70)).passed
    failed = conclude(result.report, DataQualityConfig(min_chars=4, max_chars=60, max_dropped_percent=50, min_rows=6))
    assert not failed.passed
    assert failed.message == (
        "5 rows left after filtering, fewer than minRows 6; the filters dropped 61.54% of the rows, more than "
        "maxDroppedPercent 50 (3 empty, 1 too short, 1 too long, 3 duplicates)"
    )
    assert failed.summary().model_dump().keys() == {
        "passed",
        "rows",
        "kept",
        "duplicates",
        "empty",
        "too_short",
        "too_long",
        "mean_chars",
        "max_chars",
        "message",
        "augmentation",
    }


def test_prompt_completion_rows_count_both_parts() -> None:
    examples = [Example("a:1", "Question", " answer"), Example("a:2", "Question", " answer"), Example("a:3", "Q", "")]
    report = filter_examples(examples, DataQualityConfig(min_chars=2), None).report
    assert (report.duplicates, report.too_short, report.max_chars) == (1, 1, len("Question answer"))
