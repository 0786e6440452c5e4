"""Answers as a model writes them: normalised for comparison, and the final answer after reasoning.

Normalisation follows SQuAD's answer normalisation, so that ``The Pacific Ocean.`` and
``pacific ocean`` compare equal: case folded, punctuation, articles (a, an, the) and extra
whitespace dropped. Two additions for short factual answers: number words become digits
(``twenty-four`` and ``24``, ``eight legs`` and ``8 legs``), and numbers keep their decimal point
and lose their thousands separators (``3.14`` stays, ``1,000`` is ``1000``). Comparison is on
words, so ``contains`` matches whole words only (``7`` is not in ``17``).

A chain-of-thought answer is the text after its last answer marker (``Answer:``, ``Final answer:``,
``The answer is``), on the marker's line or, when that is empty, the next non-empty one.
"""

from __future__ import annotations

import re

__all__ = ["ANSWER_MARKER", "contains_words", "final_answer", "normalise_answer", "number_value"]

ANSWER_MARKER = re.compile(
    r"\b(?:final\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?\s*(?:\*\*|__)?\s*(?:is\b\s*:?|[:\uff1a])",
    re.IGNORECASE,
)
"""Where a chain-of-thought answer starts: Answer:, **Final answer:**, The answer is, ..."""

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_ARTICLES = frozenset({"a", "an", "the"})
_DECORATION = "*_`\"'\u201c\u201d\u2018\u2019 \t.,;:!"
"""Markdown emphasis, quotes and sentence punctuation around an extracted answer."""
_UNITS = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SMALL = {word: value for value, word in enumerate(_UNITS)} | {word: 20 + 10 * i for i, word in enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}


def _without_separators(token: str) -> str:
    return token.replace(",", "") if _THOUSANDS.fullmatch(token) else token


def _tokens(text: str, case_sensitive: bool) -> list[str]:
    folded = text if case_sensitive else text.casefold()
    tokens = [_without_separators(token) for token in _TOKEN.findall(folded)]
    return [token for token in tokens if token.casefold() not in _ARTICLES]


def _is_number_word(word: str) -> bool:
    return word in _SMALL or word in _SCALES


def _continues(run: list[str], word: str, following: str | None) -> bool:
    """Whether ``word`` continues the number words in ``run`` (twenty -> four, four -> hundred -> and -> five)."""
    if not run:
        return False
    previous = run[-1] if run[-1] != "and" else run[-2]
    if word == "and":
        return run[-1] in _SCALES and following in _SMALL
    if word in _SCALES:
        return previous not in _SCALES or _SCALES[word] > _SCALES[previous]
    if word not in _SMALL:
        return False
    return previous in _SCALES or (previous in _TENS and 0 < _SMALL[word] < 10)


def number_value(words: list[str]) -> int:
    """The value of a run of number words (``two hundred and five`` -> 205)."""
    total = current = 0
    for word in words:
        if word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
        elif word != "and":
            current += _SMALL[word]
    return total + current


def _numbers_as_digits(tokens: list[str]) -> list[str]:
    words = [token.casefold() for token in tokens]
    out: list[str] = []
    run: list[str] = []
    for index, (token, word) in enumerate(zip(tokens, words, strict=True)):
        following = words[index + 1] if index + 1 < len(words) else None
        if _continues(run, word, following):
            run.append(word)
            continue
        if run:
            out.append(str(number_value(run)))
        run = [word] if _is_number_word(word) else []
        if not run:
            out.append(token)
    if run:
        out.append(str(number_value(run)))
    return out


def normalise_answer(text: str, case_sensitive: bool = False) -> str:
    """``text`` as words for comparison: see the module docstring."""
    return " ".join(_numbers_as_digits(_tokens(text, case_sensitive)))


def contains_words(answer: str, expected: str) -> bool:
    """Whether normalised ``expected`` occurs in normalised ``answer`` as whole words."""
    if not expected:
        return not answer
    return f" {expected} " in f" {answer} "


def final_answer(output: str) -> str | None:
    """The text after the last answer marker; None when there is no marker or nothing after it."""
    markers = list(ANSWER_MARKER.finditer(output))
    if not markers:
        return None
    rest = output[markers[-1].end() :].splitlines() or [""]
    lines = [rest[0], *(line for line in rest[1:] if line.strip())]
    for line in lines[:2]:
        cleaned = line.strip(_DECORATION)
        if cleaned:
            return cleaned
    return None
