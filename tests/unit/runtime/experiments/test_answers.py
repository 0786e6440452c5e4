"""Answer normalisation (SQuAD-style, numbers as digits) and the chain-of-thought final answer."""

from __future__ import annotations

import pytest

from kubellm.runtime.experiments.answers import contains_words, final_answer, normalise_answer, number_value


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Pacific Ocean.", "pacific ocean"),
        ('  "Paris"!\n', "paris"),
        ("An insect has six legs.", "insect has 6 legs"),
        ("twenty-four hours", "24 hours"),
        ("two hundred and five", "205"),
        ("a hundred", "100"),
        ("one million two hundred thousand", "1200000"),
        ("1,000 and 3.14", "1000 and 3.14"),
        ("one two three", "1 2 3"),  # separate numbers stay separate
        ("bread and butter", "bread and butter"),
        ("H2O", "h2o"),
        ("Earth's moon", "earth s moon"),
        ("", ""),
    ],
)
def test_normalise_answer(text: str, normalised: str) -> None:
    assert normalise_answer(text) == normalised


def test_case_is_kept_when_asked_but_articles_and_numbers_still_go() -> None:
    assert normalise_answer("The Nile, Seven", case_sensitive=True) == "Nile 7"


def test_number_value() -> None:
    assert number_value(["nineteen"]) == 19
    assert number_value(["two", "thousand", "three", "hundred", "and", "one"]) == 2301


@pytest.mark.parametrize(
    ("answer", "expected", "found"),
    [
        ("there are 7 days", "7", True),
        ("there are 17 days", "7", False),
        ("parisian cafes", "paris", False),
        ("blue whale is largest", "blue whale", True),
        ("", "", True),
        ("something", "", False),
    ],
)
def test_contains_words_matches_whole_words(answer: str, expected: str, found: bool) -> None:
    assert contains_words(answer, expected) is found


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("Let me think.\n7 x 8 = 56\nAnswer: 56", "56"),
        ("Answer: maybe 4?\nFinal answer: 5", "5"),
        ("**Final Answer:** Paris.", "Paris"),
        ("**Answer**: 42", "42"),
        ('So the answer is "mice".', "mice"),
        ("The answer to this question is 1945.", "1945"),
        ("Answer: Answer: Tokyo", "Tokyo"),  # the last marker, not the first
        ("Final answer:\n\n  Mars  \nMore text", "Mars"),  # on the next non-empty line
        ("Answer\uff1a\u6771\u4eac", "\u6771\u4eac"),  # a full-width colon
    ],
)
def test_final_answer_after_the_last_marker(output: str, answer: str) -> None:
    assert final_answer(output) == answer


@pytest.mark.parametrize(
    "output",
    [
        "So there are 24 days in a week.",  # no marker
        "Step 1: find the answer\nStep 2: check it",  # "answer" without ':' or 'is'
        "Answer:",  # nothing after it
        "Answer: **",
    ],
)
def test_no_final_answer(output: str) -> None:
    assert final_answer(output) is None
