"""``dummy://<task>?rows=N&seed=S``: synthetic datasets a small model can learn, built offline.

Tasks: ``instructions`` (``prompt``/``response`` rows), ``text`` (a ``text`` column) and
``chat`` (``messages`` rows). The rows mix three skills with a large space of distinct rows
(few exact duplicates): repeating a random word sequence, stating fixed facts about animals
(the same animal always has the same colour and food) and adding small numbers. Same seed,
same rows.

``dates`` is a task for a real instruct model, with answers that can be checked exactly:
``messages`` rows asking to write a date given in one of many everyday forms ("the 5th of March
2021", "Mar 5, 2021", "2021, March 5") as ISO 8601 (``2021-03-05``), and nothing else. A small
instruct model answers in sentences and often gets the digits wrong; a few minutes of LoRA make
it exact.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from kubellm.runtime.models.sources import DummySource, ModelSourceError

__all__ = ["TASKS", "synthetic_rows"]

_WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "quiet",
    "brave",
    "lamp",
    "orbit",
    "seven",
    "paper",
    "tiger",
    "music",
    "north",
    "window",
    "silver",
    "garden",
    "rocket",
    "honey",
    "winter",
    "bridge",
    "candle",
    "ocean",
    "forest",
    "pepper",
]
_ANIMALS = ["cat", "dog", "fox", "owl", "bear", "wolf", "frog", "duck", "goat", "lion", "mouse", "horse"]
_COLORS = ["black", "brown", "red", "white", "grey", "silver", "green", "yellow", "white", "golden", "grey", "brown"]
_FOODS = ["fish", "bones", "berries", "mice", "honey", "meat", "flies", "bread", "grass", "meat", "cheese", "hay"]
_MAX_ROWS = 1_000_000
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_DATE_QUESTIONS = (
    "Write this date in ISO 8601 format (YYYY-MM-DD): {}",
    "Convert to YYYY-MM-DD: {}",
    "What is {} as an ISO date?",
)


def _pair(rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair from one of the three skills."""
    skill = rng.random()
    if skill < 0.6:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6)))
        return f"Repeat after me: {words}", words
    if skill < 0.75:
        index = rng.randrange(len(_ANIMALS))
        animal, phrasing = _ANIMALS[index], rng.randrange(3)
        if rng.random() < 0.5:
            question = ("What color is the {}?", "Tell me the color of the {}.", "Which color has the {}?")[phrasing]
            return question.format(animal), f"The {animal} is {_COLORS[index]}."
        question = ("What does the {} eat?", "Tell me what the {} eats.", "Which food does the {} like?")[phrasing]
        return question.format(animal), f"The {animal} eats {_FOODS[index]}."
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def _instruction_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"prompt": f"Question: {question}\nAnswer:", "response": f" {answer}"}


def _text_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"text": f"{question} {answer}"}


def _chat_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _spoken_date(rng: random.Random, year: int, month: int, day: int) -> str:
    """The date in one of several everyday English forms."""
    name = _MONTHS[month - 1]
    short = name[:3]
    forms = (
        f"{name} {day}, {year}",
        f"{day} {name} {year}",
        f"{short} {day}, {year}",
        f"{day} {short} {year}",
        f"the {_ordinal(day)} of {name} {year}",
        f"{name} {_ordinal(day)}, {year}",
        f"{year}, {name} {day}",
    )
    return rng.choice(forms)


def _date_row(rng: random.Random) -> dict[str, Any]:
    year, month = rng.randint(1950, 2049), rng.randint(1, 12)
    day = rng.randint(1, _DAYS_IN_MONTH[month - 1])
    question = rng.choice(_DATE_QUESTIONS).format(_spoken_date(rng, year, month, day))
    answer = f"{year:04d}-{month:02d}-{day:02d}"
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


TASKS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "instructions": _instruction_row,
    "text": _text_row,
    "chat": _chat_row,
    "dates": _date_row,
}


def synthetic_rows(source: DummySource) -> list[tuple[int, dict[str, Any]]]:
    """Numbered rows (from 1) of the task the URI names."""
    task = TASKS.get(source.name)
    if task is None:
        raise ModelSourceError(
            f"{source.uri}: unknown synthetic dataset {source.name!r}; choose one of {', '.join(TASKS)}"
        )
    unknown = sorted(set(source.options) - {"rows", "seed"})
    if unknown:
        raise ModelSourceError(f"{source.uri}: unknown option(s) {', '.join(unknown)}; use rows and seed")
    rows = _int_option(source, "rows", 256)
    if not 1 <= rows <= _MAX_ROWS:
        raise ModelSourceError(f"{source.uri}: rows must be between 1 and {_MAX_ROWS}")
    rng = random.Random(_int_option(source, "seed", 0))
    return [(number, task(rng)) for number in range(1, rows + 1)]


def _int_option(source: DummySource, name: str, default: int) -> int:
    raw = source.options.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]+", raw):
        raise ModelSourceError(f"{source.uri}: {name} must be a non-negative integer, got {raw!r}")
    return int(raw)
