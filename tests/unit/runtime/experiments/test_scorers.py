"""Scorers on crafted cases, the weighted score, and the offline MiniLM similarity."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from kubellm.contract.experiments import Scorer
from kubellm.runtime.experiments import scorers
from kubellm.runtime.experiments.scorers import (
    Answers,
    ScorerError,
    bleu,
    check_scorers,
    combined_score,
    contains,
    exact_match,
    json_valid,
    normalise,
    regex_match,
    rouge_l,
    score_answers,
)


def _scorer(**fields: Any) -> Scorer:
    return Scorer.model_validate({"name": "s", **fields})


def test_normalise_folds_case_whitespace_and_edge_punctuation() -> None:
    assert normalise('  "Paris."\n') == "paris"
    assert normalise("New   York City!") == "new york city"
    assert normalise("Paris.", case_sensitive=True) == "Paris"


@pytest.mark.parametrize(
    ("answer", "expected", "case_sensitive", "score"),
    [
        ("Paris", "paris", False, 1.0),
        (" Paris. ", "Paris", True, 1.0),
        ("paris", "Paris", True, 0.0),
        ("Paris, France", "Paris", False, 0.0),
        ("5", "5.0", False, 0.0),
    ],
)
def test_exact_match(answer: str, expected: str, case_sensitive: bool, score: float) -> None:
    assert exact_match(answer, expected, case_sensitive) == score


def test_contains() -> None:
    assert contains("The capital is Paris, of course.", "paris") == 1.0
    assert contains("The capital is Lyon.", "Paris") == 0.0
    assert contains("PARIS", "paris", case_sensitive=True) == 0.0


@pytest.mark.parametrize(
    ("answer", "expected", "exact", "contained"),
    [
        ("The Pacific Ocean.", "Pacific Ocean", 1.0, 1.0),  # articles and punctuation do not count
        ("Eight.", "8", 1.0, 1.0),  # number words are digits
        ("An insect has six legs.", "6", 0.0, 1.0),  # a sentence contains the answer
        ("It has 16 legs.", "6", 0.0, 0.0),  # whole words only: 6 is not in 16
        ("Parisian", "Paris", 0.0, 0.0),
        ("1,000", "1000", 1.0, 1.0),
    ],
)
def test_exact_and_contains_on_answers_as_models_write_them(
    answer: str, expected: str, exact: float, contained: float
) -> None:
    assert (exact_match(answer, expected), contains(answer, expected)) == (exact, contained)


def test_regex_match() -> None:
    assert regex_match("order #123", re.compile(r"#\d+")) == 1.0
    assert regex_match("no number", re.compile(r"\d")) == 0.0


def test_json_validity_accepts_fenced_json_and_checks_a_schema() -> None:
    assert json_valid('{"a": 1}') == 1.0
    assert json_valid('```json\n{"a": [1, 2]}\n```') == 1.0
    assert json_valid("{'a': 1}") == 0.0
    assert json_valid("") == 0.0
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert json_valid('{"a": 1}', schema) == 1.0
    assert json_valid('{"a": "one"}', schema) == 0.0


def test_rouge_l_on_known_cases() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    # LCS "the cat on the mat" = 5 of 6 tokens each way
    assert rouge_l("the cat is on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    assert rouge_l("completely different", "the cat sat") == 0.0


def test_bleu_is_scaled_to_zero_one() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    partial = bleu("the cat is on the mat", "the cat sat on the mat")
    assert 0.2 < partial < 0.6
    assert bleu("", "the cat") == 0.0


def _answers(texts: list[str], references: list[str | None], failed: list[bool] | None = None) -> Answers:
    failed = failed or [False] * len(texts)
    latencies = [None if bad else 0.5 for bad in failed]
    return Answers(texts=texts, references=references, latencies=latencies, failed=failed)


def test_failed_requests_score_zero_and_have_no_latency() -> None:
    answers = _answers(["Paris", "Paris"], ["Paris", "Paris"], failed=[False, True])
    np.testing.assert_array_equal(score_answers(_scorer(type="exact"), answers), [1.0, 0.0])
    latency = score_answers(_scorer(type="latency"), answers)
    assert latency[0] == 0.5 and np.isnan(latency[1])


def test_weighted_score_uses_weights_and_latency_as_speed() -> None:
    exact, contains_, latency = (
        _scorer(name="exact", type="exact", weight="2"),
        _scorer(name="contains", type="contains", weight="1"),
        _scorer(name="latency", type="latency", weight="1"),
    )
    columns = {
        "exact": np.array([1.0, 0.0]),
        "contains": np.array([1.0, 1.0]),
        "latency": np.array([1.0, np.nan]),
    }
    np.testing.assert_allclose(combined_score(columns, [exact, contains_, latency]), [(2 + 1 + 0.5) / 4, 1 / 4])


def test_all_zero_weights_mean_equal_weights() -> None:
    scorer_list = [_scorer(name="a", type="exact", weight="0"), _scorer(name="b", type="contains", weight="0")]
    columns = {"a": np.array([1.0]), "b": np.array([0.0])}
    np.testing.assert_allclose(combined_score(columns, scorer_list), [0.5])


def test_bad_regex_fails_before_any_request() -> None:
    with pytest.raises(ScorerError, match=r"^scorer 's': pattern is not a valid regular expression"):
        check_scorers([_scorer(type="regex", pattern="(unclosed")])


def test_case_insensitive_regex_by_default() -> None:
    answers = _answers(["PARIS"], [None])
    assert score_answers(_scorer(type="regex", pattern="paris"), answers)[0] == 1.0
    assert score_answers(_scorer(type="regex", pattern="paris", case_sensitive=True), answers)[0] == 0.0


def test_the_command_imports_no_torch_until_similarity_is_used() -> None:
    script = (
        "import sys\n"
        "from kubellm.contract.experiments import Scorer\n"
        "from kubellm.runtime.experiments import command, scorers\n"
        "scorers.check_scorers([Scorer(name='s', type='similarity')])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert completed.stdout.strip() == "[]"
    assert scorers.embedding_model_path().name == "model"


@pytest.mark.integration
def test_similarity_with_the_packaged_minilm_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    answers = _answers(
        ["The capital of France is Paris.", "Bananas are yellow.", "whatever"],
        ["Paris is the capital of France.", "Paris is the capital of France.", "x"],
        failed=[False, False, True],
    )
    values = score_answers(_scorer(type="similarity"), answers)
    print(f"\n[similarity] paraphrase {values[0]:.3f}, unrelated {values[1]:.3f}")
    assert values[0] > 0.9
    assert 0.0 <= values[1] < 0.3
    assert values[2] == 0.0
