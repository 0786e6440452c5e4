"""Task evaluation: held-out cases from encoded rows, greedy answers, scores before and after training."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from kubellm.contract.training import TaskEvaluationConfig, TaskScore
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.models.sources import DummySource
from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training.data import Example
from kubellm.runtime.training.encoding import IGNORE_INDEX, EncodedExample, encode_example
from kubellm.runtime.training.evaluation import (
    Answer,
    TaskCase,
    evaluate_task,
    generate_answers,
    load_score,
    score_answers,
    task_cases,
)
from kubellm.runtime.training.synthetic import synthetic_rows

TOKENIZER = build_byte_tokenizer()


def _encoded(prompt: str, completion: str) -> EncodedExample:
    return encode_example(Example("x:1", prompt, completion), TOKENIZER, 512)


def test_cases_split_prompt_and_reference_at_the_first_trained_token() -> None:
    cases = task_cases([_encoded("Q: 2+2?\nA:", " 4"), _encoded("Q: hi\nA:", " hello ")], TOKENIZER, 10)
    assert [TOKENIZER.decode(case.prompt_ids, skip_special_tokens=True) for case in cases] == [
        "Q: 2+2?\nA:",
        "Q: hi\nA:",
    ]
    assert [case.expected for case in cases] == ["4", "hello"]  # trimmed, the end-of-sequence token dropped


def test_cases_skip_rows_without_a_prompt_and_stop_at_max_rows() -> None:
    text_only = encode_example(Example("t:1", "", "plain text"), TOKENIZER, 512)
    assert all(label != IGNORE_INDEX for label in text_only.labels)
    rows = [text_only, _encoded("a", "1"), _encoded("b", "2"), _encoded("c", "3")]
    assert [case.expected for case in task_cases(rows, TOKENIZER, 2)] == ["1", "2"]
    assert task_cases([text_only], TOKENIZER, 5) == []


def test_scores_count_correct_and_cut_off_answers() -> None:
    cases = [TaskCase([1], "2021-03-05"), TaskCase([1], "1999-12-31"), TaskCase([1], "2000-01-01")]
    answers = [Answer("2021-03-05", False), Answer("The date is 1999-12-31.", False), Answer("Well, the", True)]
    assert score_answers(answers, cases, "exact") == TaskScore(score=1 / 3, correct=1, truncated=1)
    assert score_answers(answers, cases, "contains") == TaskScore(score=2 / 3, correct=2, truncated=1)


def test_a_saved_score_is_reused_and_a_broken_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "before.json"
    assert load_score(path) is None
    path.write_text('{"score": 0.25, "correct": 2, "truncated": 1}')
    assert load_score(path) == TaskScore(score=0.25, correct=2, truncated=1)
    path.write_text("{not json")
    assert load_score(path) is None


@pytest.mark.usefixtures("offline_single_thread")
def test_greedy_answers_are_batched_deterministically_and_report_truncation() -> None:
    loaded = load_model("dummy://llama?hidden_size=32&intermediate_size=64&num_hidden_layers=1&seed=3")
    loaded.model.train()  # as during training
    cases = task_cases([_encoded(f"Q{i}: say something\nA:", " ok") for i in range(5)], loaded.tokenizer, 5)
    one_by_one = generate_answers(loaded.model, loaded.tokenizer, cases, max_new_tokens=6, batch_size=1)
    batched = generate_answers(loaded.model, loaded.tokenizer, cases, max_new_tokens=6, batch_size=4)
    assert [a.text for a in batched] == [a.text for a in one_by_one]  # left padding changes nothing
    assert all(a.truncated for a in batched if len(loaded.tokenizer.encode(a.text)) >= 6)
    config = TaskEvaluationConfig(scorer="exact", max_rows=5, max_new_tokens=6, batch_size=2)
    score = evaluate_task(loaded.model, loaded.tokenizer, cases, config)
    assert 0 <= score.score <= 1 and score.correct <= 5
    assert loaded.model.training  # back in training mode, as it was found


def test_the_dates_task_asks_for_iso_dates_that_exist() -> None:
    rows = synthetic_rows(DummySource(uri="dummy://dates?rows=200&seed=4", name="dates", options={"rows": "200"}))
    assert len(rows) == 200
    for _, row in rows:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", answer)
        day = date.fromisoformat(answer)  # raises for 31 April and the like
        assert str(day.year) in question and str(day.day) in question
    assert len({row["messages"][0]["content"] for _, row in rows}) > 190  # varied phrasings, few duplicates
